// Package memory is the in-process ephemeral.Store: one map behind one
// mutex and Go channels for publish/subscribe. It is what a single replica
// runs on with no setup (R6.1) and what tests use as a real double. It
// shares nothing between processes and keeps nothing across a restart;
// several replicas run on ephemeral/redis instead.
//
// It mirrors Redis where callers could notice: counters are kept as decimal
// text (Get of a counter returns "3"), a key holds either a value or a
// window and using it as the other is an error, and TTLs are kept to the
// millisecond, rounded up.
package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/internal/clock"
)

var _ ephemeral.Store = (*Store)(nil)

// subBuffer is how many messages a subscriber may fall behind before it
// misses some. Publish never blocks on a slow subscriber, since it holds
// the lock every other caller needs; a Redis subscriber likewise loses
// messages once go-redis's buffer has been full for a while.
const subBuffer = 128

// minSweep is the fewest writes between two sweeps for expired entries.
// Sweeping after as many writes as there were entries left by the last
// sweep keeps the cost of a write constant on average, and the map at most
// about twice the size of what is live.
const minSweep = 256

// Config configures a Store.
type Config struct {
	// Clock decides when an entry is past its TTL and may be collected.
	// It never decides a window: AddDistinct takes its time as an
	// argument. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Store is an in-process ephemeral.Store. The zero value is not usable;
// call New.
type Store struct {
	clk clock.Clock

	mu      sync.Mutex
	entries map[string]entry
	writes  int // since the last sweep
	sweepAt int // writes that trigger the next sweep
	subs    map[string]map[*sub]struct{}
	closed  bool
}

// entry is what a key holds: a value (counters included) or a window.
type entry struct {
	value   []byte
	window  map[string]int64 // member → latest time, Unix microseconds
	expires time.Time
}

type sub struct {
	ch chan []byte
}

// New returns an empty Store. Nothing in the Config can be invalid, so it
// cannot fail.
func New(cfg Config) *Store {
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	return &Store{
		clk:     clk,
		entries: make(map[string]entry),
		sweepAt: minSweep,
		subs:    make(map[string]map[*sub]struct{}),
	}
}

var errWrongType = errors.New("key holds another kind of entry")

// ceilMillis rounds ttl up to whole milliseconds, as the Redis
// implementation must, so both expire at the same moment.
func ceilMillis(ttl time.Duration) time.Duration {
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond)
}

func checkTTL(op string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("ephemeral/memory: %s: ttl %v is not positive", op, ttl)
	}
	return nil
}

// clone copies b so that neither the caller nor the Store can change what
// the other holds; it never returns nil, as Redis returns "" for an empty
// value.
func clone(b []byte) []byte { return append([]byte{}, b...) }

// lookup returns the live entry at key, dropping it if it has expired.
// s.mu must be held.
func (s *Store) lookup(key string, now time.Time) (entry, bool) {
	e, ok := s.entries[key]
	if !ok {
		return entry{}, false
	}
	if !now.Before(e.expires) {
		delete(s.entries, key)
		return entry{}, false
	}
	return e, true
}

// store sets key and, now and then, collects what has expired elsewhere,
// so keys that are never read again do not pile up. s.mu must be held.
func (s *Store) store(key string, e entry, now time.Time) {
	s.entries[key] = e
	s.writes++
	if s.writes < s.sweepAt {
		return
	}
	maps.DeleteFunc(s.entries, func(_ string, e entry) bool { return !now.Before(e.expires) })
	s.writes = 0
	s.sweepAt = max(minSweep, len(s.entries))
}

// Put implements ephemeral.Store.
func (s *Store) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkTTL("put", ttl); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	s.store(key, entry{value: clone(value), expires: now.Add(ceilMillis(ttl))}, now)
	return nil
}

// PutIfAbsent implements ephemeral.Store.
func (s *Store) PutIfAbsent(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := checkTTL("put if absent", ttl); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	if _, ok := s.lookup(key, now); ok {
		return false, nil
	}
	s.store(key, entry{value: clone(value), expires: now.Add(ceilMillis(ttl))}, now)
	return true, nil
}

// Get implements ephemeral.Store.
func (s *Store) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lookup(key, s.clk.Now())
	if !ok {
		return nil, ephemeral.ErrNotFound
	}
	if e.window != nil {
		return nil, fmt.Errorf("ephemeral/memory: get: %w", errWrongType)
	}
	return clone(e.value), nil
}

// GetMany implements ephemeral.Store.
func (s *Store) GetMany(_ context.Context, keys ...string) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	out := make([][]byte, len(keys))
	for i, k := range keys {
		e, ok := s.lookup(k, now)
		if !ok {
			continue
		}
		if e.window != nil {
			return nil, fmt.Errorf("ephemeral/memory: get many: %w", errWrongType)
		}
		out[i] = clone(e.value)
	}
	return out, nil
}

// Take implements ephemeral.Store. The lock makes the read and the delete
// one step, so of concurrent Takes exactly one finds the value.
func (s *Store) Take(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lookup(key, s.clk.Now())
	if !ok {
		return nil, ephemeral.ErrNotFound
	}
	if e.window != nil {
		return nil, fmt.Errorf("ephemeral/memory: take: %w", errWrongType)
	}
	delete(s.entries, key)
	return e.value, nil
}

// Delete implements ephemeral.Store.
func (s *Store) Delete(_ context.Context, keys ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.entries, k)
	}
	return nil
}

// Incr implements ephemeral.Store.
func (s *Store) Incr(_ context.Context, key string, ttl time.Duration) (int64, error) {
	if err := checkTTL("incr", ttl); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	e, ok := s.lookup(key, now)
	if !ok {
		e = entry{expires: now.Add(ceilMillis(ttl))}
	}
	if e.window != nil {
		return 0, fmt.Errorf("ephemeral/memory: incr: %w", errWrongType)
	}
	var n int64
	if ok {
		var err error
		if n, err = strconv.ParseInt(string(e.value), 10, 64); err != nil {
			return 0, errors.New("ephemeral/memory: incr: value is not an integer")
		}
	}
	n++
	e.value = strconv.AppendInt(nil, n, 10)
	s.store(key, e, now)
	return n, nil
}

// AddDistinct implements ephemeral.Store.
func (s *Store) AddDistinct(_ context.Context, key, member string, at time.Time, window time.Duration) (int, error) {
	if err := checkTTL("add distinct", window); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	e, ok := s.lookup(key, now)
	if ok && e.window == nil {
		return 0, fmt.Errorf("ephemeral/memory: add distinct: %w", errWrongType)
	}
	if !ok {
		e.window = make(map[string]int64)
	}
	// The same arithmetic as the Redis script: microsecond scores, a
	// member keeps its latest time (ZADD GT), and a time at or before the
	// cutoff is out (ZREMRANGEBYSCORE -inf cutoff).
	t, cutoff := at.UnixMicro(), at.Add(-window).UnixMicro()
	if prev, seen := e.window[member]; !seen || t > prev {
		e.window[member] = t
	}
	maps.DeleteFunc(e.window, func(_ string, t int64) bool { return t <= cutoff })
	// Collected once the window has passed without a new member, as
	// PEXPIRE does in Redis.
	e.expires = now.Add(ceilMillis(window))
	s.store(key, e, now)
	return len(e.window), nil
}

// Publish implements ephemeral.Store.
func (s *Store) Publish(_ context.Context, channel string, msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sb := range s.subs[channel] {
		select {
		case sb.ch <- clone(msg):
		default: // full: this subscriber misses the message (see subBuffer)
		}
	}
	return nil
}

// Subscribe implements ephemeral.Store. The subscriber is registered
// before Subscribe returns, so it is ready at once.
func (s *Store) Subscribe(_ context.Context, channel string) (<-chan []byte, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errors.New("ephemeral/memory: subscribe: store is closed")
	}
	sb := &sub{ch: make(chan []byte, subBuffer)}
	if s.subs[channel] == nil {
		s.subs[channel] = make(map[*sub]struct{})
	}
	s.subs[channel][sb] = struct{}{}
	stop := sync.OnceFunc(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		// Close may have ended it already; closing twice would panic.
		if _, ok := s.subs[channel][sb]; !ok {
			return
		}
		delete(s.subs[channel], sb)
		if len(s.subs[channel]) == 0 {
			delete(s.subs, channel)
		}
		close(sb.ch)
	})
	return sb.ch, stop, nil
}

// Ping implements ephemeral.Store; there is no backend to lose.
func (s *Store) Ping(context.Context) error { return nil }

// Close implements ephemeral.Store. The data stays readable, as it does in
// Redis after one replica's Store is closed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, subs := range s.subs {
		for sb := range subs {
			close(sb.ch)
		}
	}
	clear(s.subs)
	return nil
}
