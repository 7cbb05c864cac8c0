package memory_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/ephemeraltest"
	"github.com/opgate/opgate/ephemeral/memory"
	"github.com/opgate/opgate/internal/clock/clocktest"
)

func newStore(t testing.TB) (*memory.Store, *clocktest.Clock) {
	clk := clocktest.New()
	s := memory.New(memory.Config{Clock: clk})
	t.Cleanup(func() { _ = s.Close() })
	return s, clk
}

func TestConformance(t *testing.T) {
	ephemeraltest.Run(t, ephemeraltest.Harness{
		Backend: func(t *testing.T) (func() ephemeral.Store, *clocktest.Clock) {
			s, clk := newStore(t)
			// One process has one map: every view is the same Store.
			return func() ephemeral.Store { return s }, clk
		},
	})
}

// TestTTL covers what the shared suite cannot: expiry, driven by the fake
// clock. The TTL is 10m throughout; steps are clock moves in order.
func TestTTL(t *testing.T) {
	const ttl = 10 * time.Minute
	type step struct {
		name    string
		advance time.Duration
		do      func(t *testing.T, s *memory.Store) string // a readable outcome
	}
	get := func(key string) func(*testing.T, *memory.Store) string {
		return func(t *testing.T, s *memory.Store) string {
			v, err := s.Get(t.Context(), key)
			if errors.Is(err, ephemeral.ErrNotFound) {
				return "not found"
			}
			if err != nil {
				t.Fatal(err)
			}
			return string(v)
		}
	}
	putValue := func(key, v string, ttl time.Duration) func(*testing.T, *memory.Store) string {
		return func(t *testing.T, s *memory.Store) string {
			if err := s.Put(t.Context(), key, []byte(v), ttl); err != nil {
				t.Fatal(err)
			}
			return "ok"
		}
	}
	incr := func(key string) func(*testing.T, *memory.Store) string {
		return func(t *testing.T, s *memory.Store) string {
			n, err := s.Incr(t.Context(), key, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(n)
		}
	}

	tests := []struct {
		name  string
		steps []step
		want  []string
	}{
		{
			name: "put expires at its ttl",
			steps: []step{
				{"put", 0, putValue("k", "v", ttl)},
				{"just before", ttl - time.Microsecond, get("k")},
				{"at ttl", time.Microsecond, get("k")},
			},
			want: []string{"ok", "v", "not found"},
		},
		{
			name: "overwrite renews the ttl",
			steps: []step{
				{"put", 0, putValue("k", "v1", ttl)},
				{"overwrite at 5m", 5 * time.Minute, putValue("k", "v2", ttl)},
				{"at 10m", 5 * time.Minute, get("k")},
				{"at 15m", 5 * time.Minute, get("k")},
			},
			want: []string{"ok", "ok", "v2", "not found"},
		},
		{
			name: "ttl rounds up to the millisecond",
			steps: []step{
				{"put for 1ns", 0, putValue("k", "v", time.Nanosecond)},
				{"after 999µs", 999 * time.Microsecond, get("k")},
				{"after 1ms", time.Microsecond, get("k")},
			},
			want: []string{"ok", "v", "not found"},
		},
		{
			name: "put if absent succeeds once the old value expired",
			steps: []step{
				{"put", 0, putValue("k", "old", ttl)},
				{"at ttl", ttl, func(t *testing.T, s *memory.Store) string {
					ok, err := s.PutIfAbsent(t.Context(), "k", []byte("new"), ttl)
					if err != nil {
						t.Fatal(err)
					}
					return fmt.Sprint(ok)
				}},
				{"read", 0, get("k")},
			},
			want: []string{"ok", "true", "new"},
		},
		{
			name: "an expired challenge cannot be taken",
			steps: []step{
				{"put", 0, putValue("k", "challenge", ttl)},
				{"take at ttl", ttl, func(t *testing.T, s *memory.Store) string {
					_, err := s.Take(t.Context(), "k")
					return fmt.Sprint(errors.Is(err, ephemeral.ErrNotFound))
				}},
			},
			want: []string{"ok", "true"},
		},
		{
			name: "a counter is a fixed window from its first increment",
			steps: []step{
				{"first", 0, incr("n")},
				{"at 6m", 6 * time.Minute, incr("n")},
				{"at 9m", 3 * time.Minute, incr("n")},
				{"at 10m: the window started at 0", time.Minute, incr("n")},
			},
			want: []string{"1", "2", "3", "1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newStore(t)
			var got []string
			for _, st := range tc.steps {
				clk.Advance(st.advance)
				got = append(got, st.do(t, s))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSlowSubscriber checks that Publish never waits for a subscriber that
// does not read: a revocation must not stall behind a stuck consumer.
func TestSlowSubscriber(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	slow, _, err := s.Subscribe(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		for i := range 10_000 {
			if err := s.Publish(ctx, "c", []byte(fmt.Sprint(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	// The slow subscriber has the oldest messages, in order.
	if got := string(<-slow); got != "0" {
		t.Errorf("first message = %q, want %q", got, "0")
	}
}

// TestRealClock checks that a zero Config works, on the wall clock.
func TestRealClock(t *testing.T) {
	s := memory.New(memory.Config{})
	ctx := t.Context()
	if err := s.Put(ctx, "k", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("v", string(got)); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
}

func BenchmarkTake(b *testing.B) {
	s, _ := newStore(b)
	ctx := b.Context()
	// Keys are written in batches outside the timer, so only the Takes
	// are measured, on a map of a realistic size.
	const batch = 1000
	keys := make([]string, batch)
	for i := range keys {
		keys[i] = fmt.Sprint("challenge:", i)
	}
	value := []byte("0123456789abcdef0123456789abcdef")
	b.ResetTimer()
	for i := range b.N {
		if i%batch == 0 {
			b.StopTimer()
			for _, k := range keys {
				if err := s.Put(ctx, k, value, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		if _, err := s.Take(ctx, keys[i%batch]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddDistinct(b *testing.B) {
	s, clk := newStore(b)
	ctx := b.Context()
	members := make([]string, 16)
	for i := range members {
		members[i] = fmt.Sprint("OP-", i)
	}
	at := clk.Now()
	b.ResetTimer()
	for i := range b.N {
		at = at.Add(time.Millisecond)
		if _, err := s.AddDistinct(ctx, "spray:T1", members[i%len(members)], at, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
