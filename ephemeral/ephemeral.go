// Package ephemeral owns the contract for state that may be lost: single-use
// challenges (WebAuthn ceremonies, enrollment codes), rate-limit windows,
// the session cache and the fan-out of revocations between replicas (R6.1).
//
// It does not own anything a person's rights, locks or history depend on;
// those live in the SQL store and commit with their audit event. Losing
// everything held here must never unlock anyone nor revive a revoked
// session: a lost challenge means the ceremony is restarted, a lost counter
// means a window starts afresh while the durable lockout still holds, a
// lost revocation message means a cache answers until its entry's own
// logical expiry, which its owner keeps short.
//
// Store is the full contract the conformance suite (ephemeraltest) checks
// against both implementations, ephemeral/redis and ephemeral/memory.
// Consumers declare their own smaller interfaces (an authn.ChallengeStore
// needs only Put and Take) and are wired to an implementation in cmd/opgate.
package ephemeral

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound reports that a key is absent: never written, deleted,
	// taken, or collected after its TTL.
	ErrNotFound = errors.New("ephemeral: not found")

	// ErrUnavailable reports that the backend could not be reached or did
	// not answer in time. Implementations wrap it together with the cause,
	// so both errors.Is(err, ErrUnavailable) and the driver's error hold.
	// Callers must treat it as "unknown", never as "absent": a challenge
	// that cannot be taken is not accepted, and an unreachable store never
	// counts as a failed attempt (house style 9).
	ErrUnavailable = errors.New("ephemeral: unavailable")
)

// Store is everything an ephemeral backend provides. Every method is safe
// for concurrent use, from one process or from many replicas sharing one
// backend.
//
// TTLs only collect garbage (house style 6): a key may outlive its TTL
// briefly or vanish earlier (eviction, restart), so callers keep their own
// logical expiry inside the value and check it against the injected clock.
// TTLs are kept to the millisecond, rounded up. A ttl or window that is not
// positive is a programming error and is refused.
type Store interface {
	// Put sets key to value, replacing any previous value and TTL.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// PutIfAbsent sets key to value only if key is absent, and reports
	// whether it did (Redis SET NX). Exactly one of several concurrent
	// callers for one key gets true.
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)

	// Get returns the value of key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)

	// GetMany returns the values of keys in one round trip, nil for each
	// key that is absent.
	GetMany(ctx context.Context, keys ...string) ([][]byte, error)

	// Take returns the value of key and deletes it in one atomic step, or
	// returns ErrNotFound. Of any number of concurrent Takes of one key, on
	// any replicas, exactly one gets the value: this is what makes a
	// challenge single-use.
	Take(ctx context.Context, key string) ([]byte, error)

	// Delete removes keys; absent keys are not an error.
	Delete(ctx context.Context, keys ...string) error

	// Incr adds one to the counter at key and returns the new value,
	// creating it at 1 with the given ttl. Later increments keep the ttl
	// set at creation, so the key is a fixed window that started with its
	// first increment.
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)

	// AddDistinct records member at time at in the sliding window kept at
	// key and returns how many distinct members are in the window: those
	// whose latest recorded time is after at-window. A member recorded
	// again counts once, at its latest time; a member whose latest time is
	// at-window or earlier has dropped out. Time comes only from at (kept
	// to the microsecond), never from the backend's clock, so callers pass
	// their injected clock's time and tests move it. A member recorded by
	// another replica at a time after at (clock skew) still counts: for a
	// spraying counter (failed logins of distinct operators at one
	// terminal) counting high is the safe side.
	AddDistinct(ctx context.Context, key, member string, at time.Time, window time.Duration) (int, error)

	// Publish sends msg to every current subscriber of channel on every
	// replica. Delivery is at most once: a subscriber that is not
	// connected, or falls far behind, misses messages.
	Publish(ctx context.Context, channel string, msg []byte) error

	// Subscribe starts receiving the messages published on channel. When
	// it returns without error the subscription is in place, so a message
	// published afterwards, from any replica, is delivered. ctx bounds
	// only the subscribing; the subscription lasts until stop is called or
	// the Store is closed, after which msgs is closed. stop may be called
	// more than once.
	Subscribe(ctx context.Context, channel string) (msgs <-chan []byte, stop func(), err error)

	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error

	// Close ends every subscription made through this Store; Subscribe
	// fails afterwards. It does not close connections the Store was given,
	// which may be shared.
	Close() error
}
