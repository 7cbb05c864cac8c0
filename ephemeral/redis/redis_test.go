package redis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/ephemeraltest"
	"github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/testenv"
)

// open returns a Store on a client of its own, as a replica would have,
// closed when t ends.
func open(t testing.TB, opt *goredis.Options, prefix string) *redis.Store {
	t.Helper()
	o := *opt
	c := goredis.NewClient(&o)
	s, err := redis.New(redis.Config{Client: c, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_ = c.Close()
	})
	return s
}

func TestConformance(t *testing.T) {
	ephemeraltest.Run(t, ephemeraltest.Harness{
		Backend: func(t *testing.T) (func() ephemeral.Store, *clocktest.Clock) {
			client, prefix := testenv.Redis(t)
			return func() ephemeral.Store { return open(t, client.Options(), prefix) }, clocktest.New()
		},
		Unreachable: func(t *testing.T) ephemeral.Store {
			// Nothing listens on port 1. Few retries, so the test is quick.
			return open(t, &goredis.Options{
				Addr:        "127.0.0.1:1",
				MaxRetries:  -1,
				DialTimeout: time.Second, DialerRetries: 1,
			}, "x:")
		},
	})
}

func TestNew(t *testing.T) {
	if _, err := redis.New(redis.Config{}); err == nil {
		t.Error("New without a Client succeeded")
	}
}

// TestTTL checks that every key gets a Redis TTL, so nothing outlives its
// use even if nobody deletes it. Expiry itself is Redis's job, on Redis's
// clock; the memory implementation tests expiry with a fake one.
func TestTTL(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s := open(t, client.Options(), prefix)
	ctx := t.Context()
	at := clocktest.New().Now()
	tests := []struct {
		name string
		do   func() error
		key  string
		want time.Duration // the TTL just set; what Redis reports is a little less
	}{
		{"put", func() error { return s.Put(ctx, "p", []byte("v"), time.Hour) }, "p", time.Hour},
		{"put rounds up to the millisecond", func() error { return s.Put(ctx, "r", []byte("v"), time.Hour+time.Nanosecond) }, "r", time.Hour + time.Millisecond},
		{"put if absent", func() error { _, err := s.PutIfAbsent(ctx, "pia", []byte("v"), time.Hour); return err }, "pia", time.Hour},
		{"incr creates with its ttl", func() error { _, err := s.Incr(ctx, "n", time.Hour); return err }, "n", time.Hour},
		{"incr keeps the ttl set at creation", func() error { _, err := s.Incr(ctx, "n", 3*time.Hour); return err }, "n", time.Hour},
		{"add distinct lives for its window", func() error { _, err := s.AddDistinct(ctx, "w", "m", at, 2*time.Hour); return err }, "w", 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); err != nil {
				t.Fatal(err)
			}
			got, err := client.PTTL(ctx, prefix+tc.key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got <= tc.want-time.Minute || got > tc.want {
				t.Errorf("PTTL = %v, want just under %v", got, tc.want)
			}
		})
	}
}

// TestPrefix checks where keys and channels land in Redis, which operators
// rely on to share a server or to find opgate's keys.
func TestPrefix(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s := open(t, client.Options(), prefix)
	ctx := t.Context()

	if err := s.Put(ctx, "k", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := client.Get(ctx, prefix+"k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("v", got); diff != "" {
		t.Errorf("raw GET of prefix+key (-want +got):\n%s", diff)
	}

	ps := client.Subscribe(ctx, prefix+"c")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, "c", []byte("m")); err != nil {
		t.Fatal(err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([2]string{prefix + "c", "m"}, [2]string{msg.Channel, msg.Payload}); diff != "" {
		t.Errorf("raw subscriber to prefix+channel (-want +got):\n%s", diff)
	}
}

// TestServerRefusal checks that a reply refusing the command is not taken
// for an outage: callers treat ErrUnavailable as "unknown" and would, for
// instance, not count a failed login.
func TestServerRefusal(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s := open(t, client.Options(), prefix)
	ctx := t.Context()
	if err := client.LPush(ctx, prefix+"list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "list")
	if err == nil || errors.Is(err, ephemeral.ErrUnavailable) || errors.Is(err, ephemeral.ErrNotFound) {
		t.Errorf("Get of a list: got %v, want a WRONGTYPE error", err)
	}
}

// BenchmarkGetBaseline is one bare go-redis GET, one round trip: the
// figures for Take and AddDistinct read best as multiples of it.
func BenchmarkGetBaseline(b *testing.B) {
	client, prefix := testenv.Redis(b)
	ctx := b.Context()
	if err := client.Set(ctx, prefix+"k", "0123456789abcdef0123456789abcdef", time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := client.Get(ctx, prefix+"k").Err(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTake(b *testing.B) {
	client, prefix := testenv.Redis(b)
	s := open(b, client.Options(), prefix)
	ctx := b.Context()
	// Keys are written in pipelined batches outside the timer, so only
	// the Takes are measured.
	const batch = 1000
	key := func(i int) string { return fmt.Sprint("challenge:", i) }
	b.ResetTimer()
	for i := range b.N {
		if i%batch == 0 {
			b.StopTimer()
			if _, err := client.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for j := i; j < min(i+batch, b.N); j++ {
					p.Set(ctx, prefix+key(j), "0123456789abcdef0123456789abcdef", time.Hour)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := s.Take(ctx, key(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddDistinct(b *testing.B) {
	client, prefix := testenv.Redis(b)
	s := open(b, client.Options(), prefix)
	ctx := b.Context()
	members := make([]string, 16)
	for i := range members {
		members[i] = fmt.Sprint("OP-", i)
	}
	at := clocktest.New().Now()
	b.ResetTimer()
	for i := range b.N {
		at = at.Add(time.Millisecond)
		if _, err := s.AddDistinct(ctx, "spray:T1", members[i%len(members)], at, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTwoKeys compares reading two keys with two GETs and with one
// GetMany (what every authenticated request reads: the session entry and
// its last-seen mark).
func BenchmarkTwoKeys(b *testing.B) {
	client, prefix := testenv.Redis(b)
	s := open(b, client.Options(), prefix)
	ctx := b.Context()
	if err := s.Put(ctx, "sess", []byte("0123456789abcdef0123456789abcdef"), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.Run("two-gets", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Get(ctx, "sess"); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Get(ctx, "seen"); !errors.Is(err, ephemeral.ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
	b.Run("get-many", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.GetMany(ctx, "sess", "seen"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
