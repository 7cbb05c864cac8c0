// Package redis is the ephemeral.Store that several replicas share (R6.1),
// on Redis 6.2 or later through go-redis. It is the only package that
// imports go-redis for ephemeral state (house style 14).
//
// Every operation that must be atomic across replicas is one Redis
// command or one Lua script: Take is GETDEL, Incr and AddDistinct are
// scripts. Keys and channels are namespaced by Config.Prefix, so that
// several deployments, or tests, can share one server.
//
// It does not own the connection: the client in Config is made and closed
// by the caller, and may be shared.
package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate/ephemeral"
)

var _ ephemeral.Store = (*Store)(nil)

// incrScript increments a counter and gives it a TTL if it has none. The
// check is on PTTL rather than on the result being 1 so that no key can
// ever be left without a TTL.
const incrScript = `
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
	redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
`

// addDistinctScript keeps a sliding window as a sorted set of members
// scored by their latest time in Unix microseconds (exact in a Lua/Redis
// double up to year 2255). GT keeps a member's latest time when a replica
// with a slower clock records it later. The TTL is the window: once it
// passes without a new member, every member has dropped out anyway.
//
// KEYS[1] window; ARGV[1] at, ARGV[2] member, ARGV[3] cutoff (at-window),
// ARGV[4] TTL in milliseconds.
const addDistinctScript = `
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return n
`

// Config configures a Store.
type Config struct {
	// Client is the connection to Redis: a *goredis.Client, a
	// *goredis.ClusterClient or a failover client. Required. The Store
	// does not close it.
	Client goredis.UniversalClient

	// Prefix is prepended to every key and channel, e.g. "opgate:". If
	// empty, keys and channels are used as given.
	Prefix string
}

// Store is an ephemeral.Store on Redis.
type Store struct {
	client      goredis.UniversalClient
	prefix      string
	incr        *goredis.Script
	addDistinct *goredis.Script

	mu     sync.Mutex
	subs   map[*goredis.PubSub]func() // to stop on Close
	closed bool
}

// New returns a Store on cfg.Client. It does not contact Redis; call Ping
// to check the connection.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("ephemeral/redis: config: Client is required")
	}
	return &Store{
		client:      cfg.Client,
		prefix:      cfg.Prefix,
		incr:        goredis.NewScript(incrScript),
		addDistinct: goredis.NewScript(addDistinctScript),
		subs:        make(map[*goredis.PubSub]func()),
	}, nil
}

// fail translates a go-redis error. Keys are left out of the message on
// purpose: a challenge's key may be derived from a secret, and errors end
// up in logs.
func fail(op string, err error) error {
	switch {
	case errors.Is(err, goredis.Nil):
		return ephemeral.ErrNotFound
	case unavailable(err):
		return fmt.Errorf("ephemeral/redis: %s: %w: %w", op, ephemeral.ErrUnavailable, err)
	default:
		return fmt.Errorf("ephemeral/redis: %s: %w", op, err)
	}
}

// unavailable reports whether err means that Redis could not serve the
// request, as opposed to refusing it.
func unavailable(err error) bool {
	// The caller gave up; that says nothing about Redis.
	if errors.Is(err, context.Canceled) {
		return false
	}
	if _, ok := errors.AsType[goredis.Error](err); ok {
		// A server answered. Most replies are a refusal (WRONGTYPE, NOAUTH),
		// but these say it cannot serve right now: loading its dataset, a
		// replica during failover, a cluster without quorum, out of memory
		// or clients, or stuck in a script.
		return goredis.IsLoadingError(err) || goredis.IsReadOnlyError(err) ||
			goredis.IsClusterDownError(err) || goredis.IsTryAgainError(err) ||
			goredis.IsMasterDownError(err) || goredis.IsMaxClientsError(err) ||
			goredis.IsOOMError(err) || goredis.HasErrorPrefix(err, "BUSY")
	}
	// No server answered: dial and I/O errors, timeouts, an exhausted pool,
	// a closed client.
	return true
}

func checkTTL(op string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("ephemeral/redis: %s: ttl %v is not positive", op, ttl)
	}
	return nil
}

// millis is ttl in whole milliseconds, rounded up: Redis keeps no finer
// TTL, and rounding down could make it zero.
func millis(ttl time.Duration) int64 {
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// Put implements ephemeral.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkTTL("put", ttl); err != nil {
		return err
	}
	ttl = time.Duration(millis(ttl)) * time.Millisecond
	if err := s.client.Set(ctx, s.prefix+key, value, ttl).Err(); err != nil {
		return fail("put", err)
	}
	return nil
}

// PutIfAbsent implements ephemeral.Store with SET NX PX.
func (s *Store) PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := checkTTL("put if absent", ttl); err != nil {
		return false, err
	}
	ttl = time.Duration(millis(ttl)) * time.Millisecond
	ok, err := s.client.SetNX(ctx, s.prefix+key, value, ttl).Result()
	if err != nil {
		return false, fail("put if absent", err)
	}
	return ok, nil
}

// Get implements ephemeral.Store.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.client.Get(ctx, s.prefix+key).Bytes()
	if err != nil {
		return nil, fail("get", err)
	}
	return b, nil
}

// GetMany implements ephemeral.Store with one pipeline of GETs (not MGET,
// which Redis Cluster refuses across slots).
func (s *Store) GetMany(ctx context.Context, keys ...string) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	cmds := make([]*goredis.StringCmd, len(keys))
	_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, s.prefix+k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fail("get many", err)
	}
	out := make([][]byte, len(keys))
	for i, c := range cmds {
		b, err := c.Bytes()
		switch {
		case err == nil:
			out[i] = b
		case errors.Is(err, goredis.Nil):
		default:
			return nil, fail("get many", err)
		}
	}
	return out, nil
}

// Take implements ephemeral.Store with GETDEL, one command, so Redis
// serializes concurrent Takes and exactly one sees the value.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	b, err := s.client.GetDel(ctx, s.prefix+key).Bytes()
	if err != nil {
		return nil, fail("take", err)
	}
	return b, nil
}

// Delete implements ephemeral.Store. Several keys go as one pipeline of
// single-key DELs rather than one DEL, which Redis Cluster refuses when
// the keys lie in different slots.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	switch len(keys) {
	case 0:
		return nil
	case 1:
		if err := s.client.Del(ctx, s.prefix+keys[0]).Err(); err != nil {
			return fail("delete", err)
		}
		return nil
	}
	_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.prefix+k)
		}
		return nil
	})
	if err != nil {
		return fail("delete", err)
	}
	return nil
}

// Incr implements ephemeral.Store.
func (s *Store) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	if err := checkTTL("incr", ttl); err != nil {
		return 0, err
	}
	n, err := s.incr.Run(ctx, s.client, []string{s.prefix + key}, millis(ttl)).Int64()
	if err != nil {
		return 0, fail("incr", err)
	}
	return n, nil
}

// AddDistinct implements ephemeral.Store.
func (s *Store) AddDistinct(ctx context.Context, key, member string, at time.Time, window time.Duration) (int, error) {
	if err := checkTTL("add distinct", window); err != nil {
		return 0, err
	}
	n, err := s.addDistinct.Run(ctx, s.client, []string{s.prefix + key},
		strconv.FormatInt(at.UnixMicro(), 10),
		member,
		strconv.FormatInt(at.Add(-window).UnixMicro(), 10),
		millis(window),
	).Int()
	if err != nil {
		return 0, fail("add distinct", err)
	}
	return n, nil
}

// Publish implements ephemeral.Store.
func (s *Store) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := s.client.Publish(ctx, s.prefix+channel, msg).Err(); err != nil {
		return fail("publish", err)
	}
	return nil
}

var errClosed = errors.New("ephemeral/redis: subscribe: store is closed")

// Subscribe implements ephemeral.Store. The subscription has its own
// connection, which go-redis checks with pings and re-subscribes after a
// reconnect; messages published while it is down are lost.
func (s *Store) Subscribe(ctx context.Context, channel string) (<-chan []byte, func(), error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, errClosed
	}

	ps := s.client.Subscribe(ctx, s.prefix+channel)
	// SUBSCRIBE has only been sent; until its confirmation arrives, a
	// message published by another replica may not reach us.
	reply, err := ps.Receive(ctx)
	if err != nil {
		_ = ps.Close()
		return nil, nil, fail("subscribe", err)
	}
	if _, ok := reply.(*goredis.Subscription); !ok {
		_ = ps.Close()
		return nil, nil, fmt.Errorf("ephemeral/redis: subscribe: unexpected reply %T", reply)
	}

	in := ps.Channel()
	out := make(chan []byte)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer close(out)
		// Drain in until go-redis closes it, even after stop, so its
		// receiving goroutine is never left blocked on a full buffer.
		for m := range in {
			select {
			case out <- []byte(m.Payload):
			case <-done:
			}
		}
	}()
	stop := sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.subs, ps)
		s.mu.Unlock()
		close(done)
		_ = ps.Close()
		<-finished // so msgs is closed when stop returns
	})

	s.mu.Lock()
	if s.closed { // Close ran while we subscribed
		s.mu.Unlock()
		stop()
		return nil, nil, errClosed
	}
	s.subs[ps] = stop
	s.mu.Unlock()
	return out, stop, nil
}

// Ping implements ephemeral.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close implements ephemeral.Store. It leaves Config.Client open.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	stops := make([]func(), 0, len(s.subs))
	for _, stop := range s.subs {
		stops = append(stops, stop)
	}
	s.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	return nil
}
