package authn_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/sqlite"
)

// racingCache runs race just before the first Put after it is armed: a
// replica ending the session between Refresh's read of the store and its
// write to the cache.
type racingCache struct {
	ephemeral.Store
	armed bool
	race  func()
}

func (c *racingCache) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if c.armed {
		c.armed = false
		c.race()
	}
	return c.Store.Put(ctx, key, value, ttl)
}

// TestRefreshKeepsATombstone: refreshing a session's cache entry (after a
// password change) must not bring back a session that another replica
// ended meanwhile.
func TestRefreshKeepsATombstone(t *testing.T) {
	ctx := context.Background()
	st, tokens, clk := sqliteAndTokens(t)
	cache := &racingCache{Store: memory.New(memory.Config{Clock: clk})}
	sessions := sessionsOn(t, st, cache, tokens, clk)
	iss, err := sessions.Start(ctx, authn.Start{OperatorID: "OP-12345678", SiteID: "honcho", TerminalID: "t1", AMR: []string{"hwk", "user"}})
	if err != nil {
		t.Fatal(err)
	}
	cache.race = func() {
		var ended []opgate.SessionID
		if err := st.InTx(ctx, func(tx store.Tx) (err error) {
			ended, err = tx.EndSessions(ctx, authn.SessionScope{OperatorID: "OP-12345678"}, clk.Now(), "retired")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		sessions.SessionsEnded(ctx, ended)
	}
	cache.armed = true
	if err := sessions.Refresh(ctx, iss.Session.ID); err != nil {
		t.Fatal(err)
	}
	if cache.armed {
		t.Fatal("Refresh wrote nothing to the cache: the race never ran")
	}
	if _, err := sessions.Authenticate(ctx, iss.AccessToken); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Fatalf("a session ended during its refresh authenticates: %v", err)
	}
}

// sessionsOn builds the session service on st and cache, with the policy
// read from st, and seeds the site honcho and operator OP-12345678 there.
func sessionsOn(tb testing.TB, st store.Store, cache ephemeral.Store, tokens *authn.Tokens, clk *clocktest.Clock) *authn.Sessions {
	tb.Helper()
	sessions := sessionsOnly(tb, st, cache, tokens, clk)
	ctx := context.Background()
	now := clk.Now()
	if err := st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: now}); err != nil {
			return err
		}
		return tx.CreateOperator(ctx, lifecycle.Operator{ID: "OP-12345678", StaffNumber: "1", Name: "職員", SiteID: "honcho",
			EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now})
	}); err != nil {
		tb.Fatal(err)
	}
	return sessions
}

// unreachableCache refuses every write, as a cache behind a partition.
type unreachableCache struct{ ephemeral.Store }

func (unreachableCache) Put(context.Context, string, []byte, time.Duration) error {
	return errors.New("cache unreachable")
}

// TestReconcileSaysWhenTombstonesAreMissing: sessions ended while the
// cache was unreachable have no tombstone; Reconcile must say it could
// not write them, so that its caller asks for the same window again
// rather than move past sessions every replica would still accept.
func TestReconcileSaysWhenTombstonesAreMissing(t *testing.T) {
	ctx := context.Background()
	st, tokens, clk := sqliteAndTokens(t)
	mem := memory.New(memory.Config{Clock: clk})
	sessions := sessionsOn(t, st, mem, tokens, clk)
	iss, err := sessions.Start(ctx, authn.Start{OperatorID: "OP-12345678", SiteID: "honcho", TerminalID: "t1", AMR: []string{"hwk", "user"}})
	if err != nil {
		t.Fatal(err)
	}
	since := clk.Now()
	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.EndSessions(ctx, authn.SessionScope{OperatorID: "OP-12345678"}, clk.Now(), "retired")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cut := sessionsOnly(t, st, unreachableCache{mem}, tokens, clk)
	if err := cut.Reconcile(ctx, since); err == nil {
		t.Fatal("Reconcile reported success with no tombstone written")
	}
	if _, err := sessions.Authenticate(ctx, iss.AccessToken); err != nil {
		t.Fatalf("the session should still pass on the stale cache before a good reconcile: %v", err)
	}
	if err := sessions.Reconcile(ctx, since); err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.Authenticate(ctx, iss.AccessToken); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Fatalf("after the repeated reconcile: %v", err)
	}
}

// sessionsOnly builds the session service on st and cache, seeding nothing.
func sessionsOnly(tb testing.TB, st store.Store, cache ephemeral.Store, tokens *authn.Tokens, clk *clocktest.Clock) *authn.Sessions {
	tb.Helper()
	return sessionsWith(tb, store.Runner[authn.SessionTx]{S: st}, st, cache, tokens, clk)
}

// sessionsWith builds the session service on db (its policy read from st).
func sessionsWith(tb testing.TB, db authn.SessionDB, st store.Store, cache ephemeral.Store, tokens *authn.Tokens, clk *clocktest.Clock) *authn.Sessions {
	tb.Helper()
	pol := policy.NewSource(func(ctx context.Context) (policy.Policy, error) {
		return policy.Load(ctx, store.Runner[policy.Tx]{S: st})
	}, clk, time.Hour)
	sessions, err := authn.NewSessions(authn.SessionConfig{DB: db, Cache: cache, Tokens: tokens, Policy: pol,
		IsNotFound: func(err error) bool { return errors.Is(err, ephemeral.ErrNotFound) }, Clock: clk})
	if err != nil {
		tb.Fatal(err)
	}
	return sessions
}

// sqliteAndTokens opens an empty SQLite store, closed when t ends, and
// a token service with one key, on a test clock.
func sqliteAndTokens(t *testing.T) (store.Store, *authn.Tokens, *clocktest.Clock) {
	t.Helper()
	clk := clocktest.New()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "opgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := authn.GenerateSigningKey(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{Issuer: "opgate", Keys: []authn.SigningKey{key}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return st, tokens, clk
}

// flakyReads fails the read after the next one, once armed.
type flakyReads struct {
	authn.SessionDB
	armed, reads int
}

func (f *flakyReads) View(ctx context.Context, fn func(authn.SessionTx) error) error {
	if f.armed > 0 {
		if f.reads++; f.reads == f.armed {
			f.armed = 0
			return errors.New("store unreachable")
		}
	}
	return f.SessionDB.View(ctx, fn)
}

// TestRefreshWithAFailedSecondRead: when the read after the cache write
// fails, the session stays live (its password change has committed), and
// the tombstone of a session ended meanwhile is left to reconcile.
func TestRefreshWithAFailedSecondRead(t *testing.T) {
	ctx := context.Background()
	st, tokens, clk := sqliteAndTokens(t)
	mem := memory.New(memory.Config{Clock: clk})
	sessionsOn(t, st, mem, tokens, clk) // seeds the operator
	db := &flakyReads{SessionDB: store.Runner[authn.SessionTx]{S: st}}
	sessions := sessionsWith(t, db, st, mem, tokens, clk)
	iss, err := sessions.Start(ctx, authn.Start{OperatorID: "OP-12345678", SiteID: "honcho", TerminalID: "t1", AMR: []string{"hwk", "user"}})
	if err != nil {
		t.Fatal(err)
	}
	db.armed, db.reads = 2, 0
	if err := sessions.Refresh(ctx, iss.Session.ID); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if db.armed != 0 {
		t.Fatal("the second read was never made")
	}
	if _, err := sessions.Authenticate(ctx, iss.AccessToken); err != nil {
		t.Fatalf("a live session was ended by a failed read: %v", err)
	}
}
