// Package ephemeraltest is the one conformance suite every ephemeral.Store
// passes, run by ephemeral/memory against itself and by ephemeral/redis
// against a real Redis (house style 5).
//
// It checks everything the contract promises except expiry by TTL: Redis
// expires keys on its own clock, which a test cannot move, so each
// implementation tests its TTLs in its own package.
package ephemeraltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/internal/clock/clocktest"
)

// Harness is how the suite reaches an implementation.
type Harness struct {
	// Backend starts an empty backend private to t: for Redis a fresh key
	// prefix on the test server, for memory a new Store. Each call of open
	// returns another view of that same backend, as another replica would
	// have one (for Redis a new client under the same prefix; memory may
	// return the same Store). clk is the fake clock the views were given.
	// The harness closes what it opens when t ends.
	Backend func(t *testing.T) (open func() ephemeral.Store, clk *clocktest.Clock)

	// Unreachable returns a Store whose backend cannot be reached. Nil
	// means the implementation has no backend to lose (memory), and the
	// suite checks instead that it never reports ErrUnavailable.
	Unreachable func(t *testing.T) ephemeral.Store
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		run  func(*testing.T, Harness)
	}{
		{"KeyValue", testKeyValue},
		{"Misuse", testMisuse},
		{"PutIfAbsent", testPutIfAbsent},
		{"Take", testTake},
		{"Incr", testIncr},
		{"AddDistinct", testAddDistinct},
		{"PubSub", testPubSub},
		{"SharedBackend", testSharedBackend},
		{"Isolation", testIsolation},
		{"Unavailable", testUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, h) })
	}
}

const ttl = time.Hour

// one returns one view of a fresh backend.
func one(t *testing.T, h Harness) (ephemeral.Store, *clocktest.Clock) {
	t.Helper()
	open, clk := h.Backend(t)
	return open(), clk
}

// two returns two views of one fresh backend.
func two(t *testing.T, h Harness) (a, b ephemeral.Store, clk *clocktest.Clock) {
	t.Helper()
	open, clk := h.Backend(t)
	return open(), open(), clk
}

// result is what a read returned, compared as a whole so a failure shows
// both the value and the error.
type result struct {
	Value    string
	NotFound bool
}

func read(t *testing.T, get func(context.Context, string) ([]byte, error), key string) result {
	t.Helper()
	v, err := get(t.Context(), key)
	switch {
	case errors.Is(err, ephemeral.ErrNotFound):
		return result{NotFound: true}
	case err != nil:
		t.Fatalf("read %q: %v", key, err)
	}
	return result{Value: string(v)}
}

func put(t *testing.T, s ephemeral.Store, key, value string) {
	t.Helper()
	if err := s.Put(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// race runs f(i) for i in [0, n) in as many goroutines, released together
// so that they contend.
func race(n int, f func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

func testKeyValue(t *testing.T, h Harness) {
	t.Run("absent", func(t *testing.T) {
		s, _ := one(t, h)
		if diff := cmp.Diff(result{NotFound: true}, read(t, s.Get, "nothing")); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
	})

	t.Run("put get overwrite delete", func(t *testing.T) {
		s, _ := one(t, h)
		ctx := t.Context()
		steps := []struct {
			name string
			do   func() error
			want map[string]result
		}{
			{
				name: "put",
				do:   func() error { return s.Put(ctx, "k1", []byte("v1"), ttl) },
				want: map[string]result{"k1": {Value: "v1"}, "k2": {NotFound: true}},
			},
			{
				name: "put another",
				do:   func() error { return s.Put(ctx, "k2", []byte("v2"), ttl) },
				want: map[string]result{"k1": {Value: "v1"}, "k2": {Value: "v2"}},
			},
			{
				name: "overwrite",
				do:   func() error { return s.Put(ctx, "k1", []byte("v1'"), ttl) },
				want: map[string]result{"k1": {Value: "v1'"}, "k2": {Value: "v2"}},
			},
			{
				name: "delete one and an absent key",
				do:   func() error { return s.Delete(ctx, "k1", "absent") },
				want: map[string]result{"k1": {NotFound: true}, "k2": {Value: "v2"}},
			},
			{
				name: "delete nothing",
				do:   func() error { return s.Delete(ctx) },
				want: map[string]result{"k1": {NotFound: true}, "k2": {Value: "v2"}},
			},
			{
				name: "put empty value",
				do:   func() error { return s.Put(ctx, "k1", nil, ttl) },
				want: map[string]result{"k1": {Value: ""}, "k2": {Value: "v2"}},
			},
			{
				name: "delete several",
				do:   func() error { return s.Delete(ctx, "k1", "k2") },
				want: map[string]result{"k1": {NotFound: true}, "k2": {NotFound: true}},
			},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got := map[string]result{}
			for k := range st.want {
				got[k] = read(t, s.Get, k)
			}
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("after %s (-want +got):\n%s", st.name, diff)
			}
		}
	})

	t.Run("keys are opaque", func(t *testing.T) {
		s, _ := one(t, h)
		keys := []string{"", "a", "a:", ":a", "a:b", "*", "a*", "?", "[x]", "{tag}", "with space", "改行\n", "\x00"}
		want := map[string]result{}
		for i, k := range keys {
			v := fmt.Sprint(i)
			put(t, s, k, v)
			want[k] = result{Value: v}
		}
		got := map[string]result{}
		for _, k := range keys {
			got[k] = read(t, s.Get, k)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("values (-want +got):\n%s", diff)
		}
	})

	t.Run("values are copied", func(t *testing.T) {
		s, _ := one(t, h)
		ctx := t.Context()
		buf := []byte("original")
		if err := s.Put(ctx, "k", buf, ttl); err != nil {
			t.Fatal(err)
		}
		copy(buf, "XXXXXXXX")
		got, err := s.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		copy(got, "YYYYYYYY")
		if diff := cmp.Diff(result{Value: "original"}, read(t, s.Get, "k")); diff != "" {
			t.Errorf("Get after changing the caller's slices (-want +got):\n%s", diff)
		}
	})

	t.Run("ping", func(t *testing.T) {
		s, _ := one(t, h)
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})

	t.Run("get many", func(t *testing.T) {
		s, _ := one(t, h)
		ctx := t.Context()
		put(t, s, "a", "1")
		put(t, s, "c", "3")
		got, err := s.GetMany(ctx, "a", "b", "c", "a")
		if err != nil {
			t.Fatalf("GetMany: %v", err)
		}
		if diff := cmp.Diff([][]byte{[]byte("1"), nil, []byte("3"), []byte("1")}, got); diff != "" {
			t.Errorf("GetMany (-want +got):\n%s", diff)
		}
		if got, err := s.GetMany(ctx); err != nil || len(got) != 0 {
			t.Errorf("GetMany of nothing = %v, %v", got, err)
		}
	})
}

// testMisuse checks that programming errors are refused, and refused as
// such: never as ErrUnavailable (which callers treat as an outage) nor as
// ErrNotFound.
func testMisuse(t *testing.T, h Harness) {
	s, clk := one(t, h)
	ctx := t.Context()
	put(t, s, "value", "v")
	if _, err := s.AddDistinct(ctx, "window", "m", clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		do   func() error
		key  string // must still be absent afterwards, if set
	}{
		{"put with zero ttl", func() error { return s.Put(ctx, "p0", []byte("v"), 0) }, "p0"},
		{"put with negative ttl", func() error { return s.Put(ctx, "p1", []byte("v"), -time.Second) }, "p1"},
		{"put if absent with zero ttl", func() error { _, err := s.PutIfAbsent(ctx, "p2", []byte("v"), 0); return err }, "p2"},
		{"incr with zero ttl", func() error { _, err := s.Incr(ctx, "p3", 0); return err }, "p3"},
		{"add distinct with zero window", func() error { _, err := s.AddDistinct(ctx, "p4", "m", clk.Now(), 0); return err }, "p4"},
		{"incr of a non-integer value", func() error { _, err := s.Incr(ctx, "value", ttl); return err }, ""},
		{"add distinct to a value", func() error { _, err := s.AddDistinct(ctx, "value", "m", clk.Now(), time.Minute); return err }, ""},
		{"get of a window", func() error { _, err := s.Get(ctx, "window"); return err }, ""},
		{"take of a window", func() error { _, err := s.Take(ctx, "window"); return err }, ""},
		{"incr of a window", func() error { _, err := s.Incr(ctx, "window", ttl); return err }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || errors.Is(err, ephemeral.ErrUnavailable) || errors.Is(err, ephemeral.ErrNotFound) {
				t.Errorf("got error %v, want a misuse error", err)
			}
			if tc.key != "" {
				if diff := cmp.Diff(result{NotFound: true}, read(t, s.Get, tc.key)); diff != "" {
					t.Errorf("key written anyway (-want +got):\n%s", diff)
				}
			}
		})
	}
	if diff := cmp.Diff(result{Value: "v"}, read(t, s.Get, "value")); diff != "" {
		t.Errorf("value after misuse (-want +got):\n%s", diff)
	}
}

func testPutIfAbsent(t *testing.T, h Harness) {
	t.Run("sequence", func(t *testing.T) {
		s, _ := one(t, h)
		ctx := t.Context()
		type got struct {
			Set   bool
			After result
		}
		steps := []struct {
			name  string
			value string
			pre   func() error
			want  got
		}{
			{name: "absent", value: "first", want: got{Set: true, After: result{Value: "first"}}},
			{name: "present", value: "second", want: got{Set: false, After: result{Value: "first"}}},
			{name: "after delete", value: "third", pre: func() error { return s.Delete(ctx, "k") },
				want: got{Set: true, After: result{Value: "third"}}},
			{name: "after take", value: "fourth", pre: func() error { _, err := s.Take(ctx, "k"); return err },
				want: got{Set: true, After: result{Value: "fourth"}}},
		}
		for _, st := range steps {
			if st.pre != nil {
				if err := st.pre(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
			}
			set, err := s.PutIfAbsent(ctx, "k", []byte(st.value), ttl)
			if err != nil {
				t.Fatalf("%s: PutIfAbsent: %v", st.name, err)
			}
			if diff := cmp.Diff(st.want, got{Set: set, After: read(t, s.Get, "k")}); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
	})

	t.Run("one winner among concurrent callers", func(t *testing.T) {
		a, b, _ := two(t, h)
		views := []ephemeral.Store{a, b}
		const n = 50
		won := make([]bool, n)
		errs := make([]error, n)
		race(n, func(i int) {
			won[i], errs[i] = views[i%2].PutIfAbsent(t.Context(), "k", []byte(fmt.Sprint(i)), ttl)
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		var winners []string
		for i, w := range won {
			if w {
				winners = append(winners, fmt.Sprint(i))
			}
		}
		if len(winners) != 1 {
			t.Fatalf("winners = %v, want exactly one", winners)
		}
		if diff := cmp.Diff(result{Value: winners[0]}, read(t, a.Get, "k")); diff != "" {
			t.Errorf("stored value is not the winner's (-want +got):\n%s", diff)
		}
	})
}

func testTake(t *testing.T, h Harness) {
	t.Run("single use", func(t *testing.T) {
		s, _ := one(t, h)
		put(t, s, "challenge", "c1")
		got := []result{read(t, s.Take, "challenge"), read(t, s.Take, "challenge"), read(t, s.Get, "challenge")}
		want := []result{{Value: "c1"}, {NotFound: true}, {NotFound: true}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Take, Take, Get (-want +got):\n%s", diff)
		}
	})

	t.Run("absent", func(t *testing.T) {
		s, _ := one(t, h)
		if diff := cmp.Diff(result{NotFound: true}, read(t, s.Take, "nothing")); diff != "" {
			t.Errorf("Take (-want +got):\n%s", diff)
		}
	})

	// A WebAuthn challenge replayed at once from several tabs or replicas
	// must be accepted once (house style 14).
	t.Run("exactly one of 50 concurrent takes wins", func(t *testing.T) {
		a, b, _ := two(t, h)
		views := []ephemeral.Store{a, b}
		const rounds, n = 10, 50
		for r := range rounds {
			key := fmt.Sprint("challenge-", r)
			put(t, a, key, "secret")
			var mu sync.Mutex
			var got []string
			var errs []error
			race(n, func(i int) {
				v, err := views[i%2].Take(t.Context(), key)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					got = append(got, string(v))
				case !errors.Is(err, ephemeral.ErrNotFound):
					errs = append(errs, err)
				}
			})
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
			if diff := cmp.Diff([]string{"secret"}, got); diff != "" {
				t.Fatalf("round %d: values taken (-want +got):\n%s", r, diff)
			}
		}
	})
}

func testIncr(t *testing.T, h Harness) {
	t.Run("sequence", func(t *testing.T) {
		s, _ := one(t, h)
		ctx := t.Context()
		steps := []struct {
			name string
			key  string
			pre  func() error
			want int64
		}{
			{name: "creates at 1", key: "a", want: 1},
			{name: "increments", key: "a", want: 2},
			{name: "increments again", key: "a", want: 3},
			{name: "other key is separate", key: "b", want: 1},
			{name: "restarts after delete", key: "a", pre: func() error { return s.Delete(ctx, "a") }, want: 1},
		}
		for _, st := range steps {
			if st.pre != nil {
				if err := st.pre(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
			}
			got, err := s.Incr(ctx, st.key, ttl)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
		// Counters read back as decimal text, as Redis keeps them.
		if diff := cmp.Diff(result{Value: "1"}, read(t, s.Get, "a")); diff != "" {
			t.Errorf("Get of a counter (-want +got):\n%s", diff)
		}
	})

	t.Run("exact under concurrency", func(t *testing.T) {
		a, b, _ := two(t, h)
		views := []ephemeral.Store{a, b}
		const n, each = 50, 20
		got := make([][]int64, n)
		errs := make([]error, n)
		race(n, func(i int) {
			for range each {
				v, err := views[i%2].Incr(t.Context(), "k", ttl)
				if err != nil {
					errs[i] = err
					return
				}
				got[i] = append(got[i], v)
			}
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		// Every value from 1 to n*each handed out exactly once.
		all := slices.Sorted(slices.Values(slices.Concat(got...)))
		want := make([]int64, n*each)
		for i := range want {
			want[i] = int64(i + 1)
		}
		if diff := cmp.Diff(want, all); diff != "" {
			t.Errorf("values returned (-want +got):\n%s", diff)
		}
	})
}

func testAddDistinct(t *testing.T, h Harness) {
	const window = 10 * time.Minute

	// Failed logins of distinct operators at one terminal: steps are
	// minutes after t0, the window is (at-10m, at].
	t.Run("sliding window", func(t *testing.T) {
		s, clk := one(t, h)
		t0 := clk.Now()
		steps := []struct {
			name   string
			member string
			at     time.Duration
			want   int
		}{
			{"first member", "op-a", 0, 1},
			{"same member again counts once", "op-a", 1 * time.Minute, 1},
			{"second member", "op-b", 2 * time.Minute, 2},
			{"third member", "op-c", 3 * time.Minute, 3},
			{"repeat moves op-a to 4m", "op-a", 4 * time.Minute, 3},
			{"all still inside at 11m30s", "op-d", 11*time.Minute + 30*time.Second, 4},
			{"op-b (2m) drops out at 12m30s", "op-e", 12*time.Minute + 30*time.Second, 4},
			{"op-a at exactly at-window drops out", "op-f", 14 * time.Minute, 3},
			{"everything older drops out", "op-g", 40 * time.Minute, 1},
		}
		for _, st := range steps {
			clk.Set(t0.Add(st.at))
			got, err := s.AddDistinct(t.Context(), "spray:T1", st.member, clk.Now(), window)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
	})

	t.Run("a member keeps its latest time", func(t *testing.T) {
		// A replica whose clock is behind records op-a again at 3m after
		// another recorded it at 5m; op-a must still count until 15m.
		s, clk := one(t, h)
		t0 := clk.Now()
		steps := []struct {
			name   string
			member string
			at     time.Duration
			want   int
		}{
			{"op-a at 5m", "op-a", 5 * time.Minute, 1},
			{"op-b at 4m, behind op-a", "op-b", 4 * time.Minute, 2},
			{"op-a again at 3m", "op-a", 3 * time.Minute, 2},
			{"at 14m30s op-b (4m) is out, op-a (5m) is in", "op-c", 14*time.Minute + 30*time.Second, 2},
		}
		for _, st := range steps {
			got, err := s.AddDistinct(t.Context(), "spray:T1", st.member, t0.Add(st.at), window)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
	})

	t.Run("keys are separate", func(t *testing.T) {
		s, clk := one(t, h)
		ctx := t.Context()
		var got []int
		for _, k := range []struct{ key, member string }{{"T1", "a"}, {"T1", "b"}, {"T2", "a"}, {"T1", "c"}, {"T2", "b"}} {
			n, err := s.AddDistinct(ctx, k.key, k.member, clk.Now(), window)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		if diff := cmp.Diff([]int{1, 2, 1, 3, 2}, got); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})

	t.Run("atomic under concurrency", func(t *testing.T) {
		// Each of n distinct members added at once: if adding and counting
		// are one step, the counts returned are exactly 1..n.
		a, b, clk := two(t, h)
		views := []ephemeral.Store{a, b}
		at := clk.Now()
		const n = 50
		got := make([]int, n)
		errs := make([]error, n)
		race(n, func(i int) {
			got[i], errs[i] = views[i%2].AddDistinct(t.Context(), "k", fmt.Sprint("op-", i), at, window)
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i + 1
		}
		if diff := cmp.Diff(want, slices.Sorted(slices.Values(got))); diff != "" {
			t.Errorf("counts returned (-want +got):\n%s", diff)
		}
	})
}

// receive waits for the next message on msgs.
func receive(t *testing.T, msgs <-chan []byte) string {
	t.Helper()
	select {
	case m, ok := <-msgs:
		if !ok {
			t.Fatal("subscription closed, want a message")
		}
		return string(m)
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return ""
}

// closed waits for msgs to be closed, discarding what is left in it.
func closed(t *testing.T, msgs <-chan []byte) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-msgs:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("subscription not closed within 5s")
		}
	}
}

func subscribe(t *testing.T, s ephemeral.Store, channel string) (<-chan []byte, func()) {
	t.Helper()
	msgs, stop, err := s.Subscribe(t.Context(), channel)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	t.Cleanup(stop)
	return msgs, stop
}

func publish(t *testing.T, s ephemeral.Store, channel, msg string) {
	t.Helper()
	if err := s.Publish(t.Context(), channel, []byte(msg)); err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
}

func testPubSub(t *testing.T, h Harness) {
	t.Run("ready on return, in order", func(t *testing.T) {
		s, _ := one(t, h)
		msgs, _ := subscribe(t, s, "revoked")
		want := []string{"s1", "s2", "s3"}
		for _, m := range want {
			publish(t, s, "revoked", m)
		}
		var got []string
		for range want {
			got = append(got, receive(t, msgs))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("messages (-want +got):\n%s", diff)
		}
	})

	t.Run("outlives the context it was made with", func(t *testing.T) {
		s, _ := one(t, h)
		ctx, cancel := context.WithCancel(t.Context())
		msgs, stop, err := s.Subscribe(ctx, "revoked")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		cancel()
		publish(t, s, "revoked", "s1")
		if diff := cmp.Diff("s1", receive(t, msgs)); diff != "" {
			t.Errorf("message after cancel (-want +got):\n%s", diff)
		}
	})

	t.Run("every subscriber on every view", func(t *testing.T) {
		a, b, _ := two(t, h)
		subs := map[string]<-chan []byte{}
		subs["a1"], _ = subscribe(t, a, "revoked")
		subs["a2"], _ = subscribe(t, a, "revoked")
		subs["b1"], _ = subscribe(t, b, "revoked")
		publish(t, b, "revoked", "s1")
		want := map[string]string{"a1": "s1", "a2": "s1", "b1": "s1"}
		got := map[string]string{}
		for name, msgs := range subs {
			got[name] = receive(t, msgs)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("received (-want +got):\n%s", diff)
		}
	})

	t.Run("channels are separate", func(t *testing.T) {
		s, _ := one(t, h)
		msgs, _ := subscribe(t, s, "x")
		publish(t, s, "y", "for y")
		publish(t, s, "x", "for x")
		if diff := cmp.Diff("for x", receive(t, msgs)); diff != "" {
			t.Errorf("first message on x (-want +got):\n%s", diff)
		}
	})

	t.Run("publish without subscribers", func(t *testing.T) {
		s, _ := one(t, h)
		publish(t, s, "nobody", "m")
	})

	t.Run("stop ends the subscription", func(t *testing.T) {
		s, _ := one(t, h)
		msgs, stop := subscribe(t, s, "c")
		other, _ := subscribe(t, s, "c")
		stop()
		closed(t, msgs)
		stop() // again: no effect
		publish(t, s, "c", "after stop")
		if diff := cmp.Diff("after stop", receive(t, other)); diff != "" {
			t.Errorf("other subscriber (-want +got):\n%s", diff)
		}
	})

	t.Run("close ends every subscription", func(t *testing.T) {
		s, _ := one(t, h)
		m1, stop := subscribe(t, s, "c1")
		m2, _ := subscribe(t, s, "c2")
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		closed(t, m1)
		closed(t, m2)
		stop() // after Close: no effect
		if _, _, err := s.Subscribe(t.Context(), "c3"); err == nil {
			t.Error("Subscribe after Close succeeded")
		}
	})
}

// testSharedBackend checks that two views of one backend, as two replicas
// have, see each other's writes.
func testSharedBackend(t *testing.T, h Harness) {
	a, b, clk := two(t, h)
	ctx := t.Context()
	type seen struct {
		Get      result
		Taken    result
		AfterGet result
		Set      bool
		Count    int64
		Distinct int
	}
	put(t, a, "k", "from a")
	var got seen
	got.Get = read(t, b.Get, "k")
	got.Taken = read(t, b.Take, "k")
	got.AfterGet = read(t, a.Get, "k")
	if _, err := a.PutIfAbsent(ctx, "once", []byte("a"), ttl); err != nil {
		t.Fatal(err)
	}
	set, err := b.PutIfAbsent(ctx, "once", []byte("b"), ttl)
	if err != nil {
		t.Fatal(err)
	}
	got.Set = set
	if _, err := a.Incr(ctx, "n", ttl); err != nil {
		t.Fatal(err)
	}
	if got.Count, err = b.Incr(ctx, "n", ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddDistinct(ctx, "w", "op-a", clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got.Distinct, err = b.AddDistinct(ctx, "w", "op-b", clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	want := seen{
		Get:      result{Value: "from a"},
		Taken:    result{Value: "from a"},
		AfterGet: result{NotFound: true},
		Set:      false,
		Count:    2,
		Distinct: 2,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("b after a's writes (-want +got):\n%s", diff)
	}

	msgs, _ := subscribe(t, a, "revoked")
	publish(t, b, "revoked", "from b")
	if diff := cmp.Diff("from b", receive(t, msgs)); diff != "" {
		t.Errorf("a received (-want +got):\n%s", diff)
	}
}

// testIsolation checks that two backends (for Redis, two prefixes on one
// server) share nothing.
func testIsolation(t *testing.T, h Harness) {
	s1, clk := one(t, h)
	s2, _ := one(t, h)
	ctx := t.Context()

	put(t, s1, "k", "one")
	if _, err := s1.Incr(ctx, "n", ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.AddDistinct(ctx, "w", "op-a", clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	msgs1, _ := subscribe(t, s1, "c")
	msgs2, _ := subscribe(t, s2, "c")

	type seen struct {
		Get      result
		Count    int64
		Distinct int
		Msg      string
	}
	var got seen
	var err error
	got.Get = read(t, s2.Get, "k")
	if got.Count, err = s2.Incr(ctx, "n", ttl); err != nil {
		t.Fatal(err)
	}
	if got.Distinct, err = s2.AddDistinct(ctx, "w", "op-b", clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	publish(t, s1, "c", "for one")
	publish(t, s2, "c", "for two")
	got.Msg = receive(t, msgs2)
	want := seen{Get: result{NotFound: true}, Count: 1, Distinct: 1, Msg: "for two"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("second backend (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(result{Value: "one"}, read(t, s1.Get, "k")); diff != "" {
		t.Errorf("first backend after the second deleted k (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("for one", receive(t, msgs1)); diff != "" {
		t.Errorf("first backend's subscriber (-want +got):\n%s", diff)
	}
}

// testUnavailable checks that an outage is reported as ErrUnavailable by
// every method, so callers can tell it from "absent" and from a refusal.
func testUnavailable(t *testing.T, h Harness) {
	ops := []struct {
		name string
		do   func(context.Context, ephemeral.Store) error
	}{
		{"Put", func(ctx context.Context, s ephemeral.Store) error { return s.Put(ctx, "k", []byte("v"), ttl) }},
		{"PutIfAbsent", func(ctx context.Context, s ephemeral.Store) error {
			_, err := s.PutIfAbsent(ctx, "k2", []byte("v"), ttl)
			return err
		}},
		{"Get", func(ctx context.Context, s ephemeral.Store) error { _, err := s.Get(ctx, "k"); return err }},
		{"Take", func(ctx context.Context, s ephemeral.Store) error { _, err := s.Take(ctx, "k"); return err }},
		{"Delete", func(ctx context.Context, s ephemeral.Store) error { return s.Delete(ctx, "k", "k2") }},
		{"Incr", func(ctx context.Context, s ephemeral.Store) error { _, err := s.Incr(ctx, "n", ttl); return err }},
		{"AddDistinct", func(ctx context.Context, s ephemeral.Store) error {
			_, err := s.AddDistinct(ctx, "w", "m", time.Unix(0, 0), time.Minute)
			return err
		}},
		{"Publish", func(ctx context.Context, s ephemeral.Store) error { return s.Publish(ctx, "c", []byte("m")) }},
		{"Subscribe", func(ctx context.Context, s ephemeral.Store) error {
			_, stop, err := s.Subscribe(ctx, "c")
			if err == nil {
				stop()
			}
			return err
		}},
		{"Ping", func(ctx context.Context, s ephemeral.Store) error { return s.Ping(ctx) }},
	}

	if h.Unreachable == nil {
		s, _ := one(t, h)
		for _, op := range ops {
			t.Run(op.name+" never fails", func(t *testing.T) {
				if err := op.do(t.Context(), s); errors.Is(err, ephemeral.ErrUnavailable) {
					t.Errorf("got %v, want no ErrUnavailable from a store without a backend", err)
				}
			})
		}
		return
	}

	s := h.Unreachable(t)
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := op.do(ctx, s)
			if !errors.Is(err, ephemeral.ErrUnavailable) || errors.Is(err, ephemeral.ErrNotFound) {
				t.Errorf("got %v, want ErrUnavailable", err)
			}
		})
	}
}
