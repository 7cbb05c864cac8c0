package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/internal/servertest"
	"github.com/opgate/opgate/store"
)

// partitioned refuses every write while cut, as a cache behind a
// partition, and says when it first refused one.
type partitioned struct {
	ephemeral.Store
	cut     atomic.Bool
	refused chan struct{}
}

func (p *partitioned) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if p.cut.Load() {
		select {
		case p.refused <- struct{}{}:
		default:
		}
		return errors.New("cache unreachable")
	}
	return p.Store.Put(ctx, key, value, ttl)
}

// TestSchedulerRetriesAWindowItCouldNotReconcile: a session ended while
// the cache could not be written has no tombstone, and every replica
// still accepts it from the cache. The sweep that finds it cannot write
// the tombstone either; the next sweep, once the cache is back, must ask
// for the same window again rather than move on past that session.
func TestSchedulerRetriesAWindowItCouldNotReconcile(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	ctx := t.Context()
	cache := &partitioned{Store: s.App.Eph, refused: make(chan struct{}, 1)}
	r := servertest.Join(t, servertest.Shared{Store: s.App.Store, Eph: cache}, s.Clock)
	tok := s.Token(s.Boot.OperatorID, "honcho", "admin-console")
	s.Must(200, "GET", "/v1/me", tok, nil)
	// Ended in the store alone, as by a replica whose cache write failed.
	if err := s.App.Store.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.EndSessions(ctx, authn.SessionScope{OperatorID: s.Boot.OperatorID}, s.Clock.Now(), "retired")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.Must(200, "GET", "/v1/me", tok, nil)

	cache.cut.Store(true)
	ticks := make(chan time.Time)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { r.App.Schedule(sctx, ticks); close(done) }()
	// Far enough on that a window starting at this sweep would begin
	// after the session ended.
	s.Clock.Advance(10 * time.Second)
	ticks <- time.Time{}
	<-cache.refused
	cache.cut.Store(false)
	s.Clock.Advance(time.Second)
	ticks <- time.Time{} // received once the first sweep is over
	ticks <- time.Time{} // received once the second is
	stop()
	<-done
	s.Must(401, "GET", "/v1/me", tok, nil)
}
