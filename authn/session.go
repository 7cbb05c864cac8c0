package authn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/policy"
)

// Errors callers branch on.
var (
	// ErrUnauthenticated is every reason a bearer token is refused: bad,
	// expired, or its session ended. The reason is not told.
	ErrUnauthenticated = errors.New("authn: unauthenticated")
	// ErrUnavailable means liveness could not be checked; the request is
	// refused (fail closed), and nothing is counted against anyone.
	ErrUnavailable = errors.New("authn: session state unavailable")
)

// SessionTx is what the session layer reads and writes in a transaction.
type SessionTx interface {
	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, id opgate.SessionID) (Session, error)
	UpdateSession(ctx context.Context, s Session) error
	EndSessions(ctx context.Context, scope SessionScope, at time.Time, reason string) ([]opgate.SessionID, error)
	EndedSessionsSince(ctx context.Context, t time.Time) ([]opgate.SessionID, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// SessionDB runs the session layer's transactions.
type SessionDB interface {
	InTx(ctx context.Context, fn func(SessionTx) error) error
	View(ctx context.Context, fn func(SessionTx) error) error
}

// Cache is the ephemeral state every replica shares: the session entries
// and tombstones that make an ended session refused everywhere at once.
type Cache interface {
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	PutIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	Get(ctx context.Context, key string) ([]byte, error)
	GetMany(ctx context.Context, keys ...string) ([][]byte, error)
}

// PolicySource gives the policy in force.
type PolicySource interface {
	Policy(ctx context.Context) (policy.Policy, error)
}

// SessionConfig configures Sessions.
type SessionConfig struct {
	// DB, Cache, Tokens and Policy are required.
	DB     SessionDB
	Cache  Cache
	Tokens *Tokens
	Policy PolicySource
	// IsNotFound recognises the cache's "absent" error. Required.
	IsNotFound func(error) bool
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Sessions starts, checks and ends sessions.
type Sessions struct {
	db       SessionDB
	cache    Cache
	tokens   *Tokens
	pol      PolicySource
	notFound func(error) bool
	clk      clock.Clock
}

// NewSessions validates cfg.
func NewSessions(cfg SessionConfig) (*Sessions, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("DB is required"))
	}
	if cfg.Cache == nil {
		errs = append(errs, errors.New("Cache is required"))
	}
	if cfg.Tokens == nil {
		errs = append(errs, errors.New("Tokens is required"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("Policy is required"))
	}
	if cfg.IsNotFound == nil {
		errs = append(errs, errors.New("IsNotFound is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authn: session config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Sessions{db: cfg.DB, cache: cfg.Cache, tokens: cfg.Tokens, pol: cfg.Policy, notFound: cfg.IsNotFound, clk: cfg.Clock}, nil
}

// Tokens is the token service, for JWKS and introspection.
func (s *Sessions) Tokens() *Tokens { return s.tokens }

// Start describes a login that succeeded.
type Start struct {
	OperatorID             opgate.OperatorID
	SiteID                 opgate.SiteID
	TerminalID             opgate.TerminalID
	CardID                 opgate.CardID
	AMR                    []string
	PasswordChangeRequired bool
}

// Issued is what a login answers.
type Issued struct {
	Session      Session
	AccessToken  string
	ExpiresIn    time.Duration
	RefreshToken string
}

// StartIn creates a session inside the login's transaction. The caller
// commits, then calls Activate, which tells the shared cache of the
// session and signs its first access token: signing needs no lock, so it
// is kept out of the transaction.
func (s *Sessions) StartIn(ctx context.Context, tx SessionTx, st Start) (Issued, error) {
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return Issued{}, err
	}
	now := s.clk.Now()
	refresh := randomToken(32)
	ss := Session{ID: opgate.SessionID("S-" + randomToken(18)), OperatorID: st.OperatorID, SiteID: st.SiteID, TerminalID: st.TerminalID,
		CardID: st.CardID, AMR: st.AMR, CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(p.Session.AbsoluteTimeout),
		PasswordChangeRequired: st.PasswordChangeRequired, RefreshHash: hashToken(refresh)}
	if err := tx.CreateSession(ctx, ss); err != nil {
		return Issued{}, err
	}
	return Issued{Session: ss, RefreshToken: string(ss.ID) + "." + refresh}, nil
}

// Activate finishes a session StartIn created, after its commit: the
// shared cache learns of it, and its first access token is signed.
func (s *Sessions) Activate(ctx context.Context, iss Issued) (Issued, error) {
	if err := s.Publish(ctx, iss.Session); err != nil {
		return Issued{}, err
	}
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return Issued{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	iss.AccessToken, iss.ExpiresIn, err = s.sign(iss.Session, p, s.clk.Now())
	return iss, err
}

// Start creates a session in its own transaction.
func (s *Sessions) Start(ctx context.Context, st Start) (Issued, error) {
	var out Issued
	err := s.db.InTx(ctx, func(tx SessionTx) (err error) { out, err = s.StartIn(ctx, tx, st); return })
	if err != nil {
		return out, err
	}
	return s.Activate(ctx, out)
}

func (s *Sessions) sign(ss Session, p policy.Policy, now time.Time) (string, time.Duration, error) {
	ttl := p.Session.AccessTokenTTL
	if rest := ss.ExpiresAt.Sub(now); rest < ttl {
		ttl = rest // an access token never outlives its session
	}
	tok, err := s.tokens.Sign(TokenClaims{OperatorID: ss.OperatorID, SessionID: ss.ID, SiteID: ss.SiteID, TerminalID: ss.TerminalID,
		AMR: ss.AMR, IssuedAt: now, ExpiresAt: now.Add(ttl), ID: randomToken(12)})
	return tok, ttl, err
}

// cached is a session as the cache keeps it. A tombstone (Ended) outlives
// the session's absolute end so that no replica can put it back.
type cached struct {
	Op      opgate.OperatorID `json:"o"`
	Site    opgate.SiteID     `json:"s"`
	Term    opgate.TerminalID `json:"t"`
	AMR     []string          `json:"a,omitempty"`
	Expires int64             `json:"x"`
	Created int64             `json:"c"`
	PwdChg  bool              `json:"p,omitempty"`
	Ended   bool              `json:"e,omitempty"`
}

func sessionKey(id opgate.SessionID) string { return "sess:" + string(id) }
func seenKey(id opgate.SessionID) string    { return "seen:" + string(id) }

// Publish puts a live session into the cache (after the commit that
// created it).
func (s *Sessions) Publish(ctx context.Context, ss Session) error {
	b, _ := json.Marshal(toCached(ss))
	ttl := ss.ExpiresAt.Sub(s.clk.Now())
	if ttl <= 0 {
		return nil
	}
	if _, err := s.cache.PutIfAbsent(ctx, sessionKey(ss.ID), b, ttl); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

func toCached(ss Session) cached {
	return cached{Op: ss.OperatorID, Site: ss.SiteID, Term: ss.TerminalID, AMR: ss.AMR, Expires: ss.ExpiresAt.UnixMicro(),
		Created: ss.CreatedAt.UnixMicro(), PwdChg: ss.PasswordChangeRequired, Ended: !ss.EndedAt.IsZero()}
}

// tombstoneTTL outlives any session.
const tombstoneTTL = 8 * 24 * time.Hour

// SessionsEnded writes a tombstone for every ended session, so that every
// replica refuses them from now on. It is called after the commit that
// ended them; if the cache cannot be reached, Reconcile repairs it.
func (s *Sessions) SessionsEnded(ctx context.Context, ids []opgate.SessionID) {
	_ = s.tombstones(ctx, ids)
}

// tombstones writes them all, and returns the first failure.
func (s *Sessions) tombstones(ctx context.Context, ids []opgate.SessionID) error {
	b, _ := json.Marshal(cached{Ended: true})
	var first error
	for _, id := range ids {
		if err := s.cache.Put(ctx, sessionKey(id), b, tombstoneTTL); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Reconcile rewrites tombstones for sessions ended since t, for a cache
// that was unreachable or lost when they ended. It fails if any could not
// be written, so that the caller tries the same window again rather than
// move past a session that every replica would still accept.
func (s *Sessions) Reconcile(ctx context.Context, since time.Time) error {
	var ids []opgate.SessionID
	if err := s.db.View(ctx, func(tx SessionTx) (err error) { ids, err = tx.EndedSessionsSince(ctx, since); return }); err != nil {
		return err
	}
	if err := s.tombstones(ctx, ids); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// Principal is an authenticated caller.
type Principal struct {
	OperatorID             opgate.OperatorID
	SessionID              opgate.SessionID
	SiteID                 opgate.SiteID
	TerminalID             opgate.TerminalID
	AMR                    []string
	PasswordChangeRequired bool
	ExpiresAt              time.Time // the session's absolute end
	TokenExpiresAt         time.Time
}

// Authenticate checks a bearer token and its session's liveness: the
// signature (cached once verified), then the session entry every replica
// shares, then the idle timeout. An ended session is refused at once.
func (s *Sessions) Authenticate(ctx context.Context, raw string) (Principal, error) {
	c, err := s.tokens.Verify(raw)
	if err != nil {
		return Principal{}, ErrUnauthenticated
	}
	now := s.clk.Now()
	// The entry and the last-seen mark in one round trip: this is every
	// authenticated request's cost.
	vals, err := s.cache.GetMany(ctx, sessionKey(c.SessionID), seenKey(c.SessionID))
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var e cached
	var last time.Time
	if vals[0] != nil {
		if json.Unmarshal(vals[0], &e) != nil {
			return Principal{}, ErrUnauthenticated
		}
		last = seenAt(e, vals[1])
	} else {
		// The cache lost the entry: refill it from the store.
		if e, err = s.entry(ctx, c.SessionID); err != nil {
			return Principal{}, err
		}
		if last, err = s.lastSeen(ctx, c.SessionID, e); err != nil {
			return Principal{}, err
		}
	}
	if e.Ended || e.Op != c.OperatorID || now.UnixMicro() >= e.Expires {
		return Principal{}, ErrUnauthenticated
	}
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := s.touch(ctx, c.SessionID, e, last, now, p.Session.IdleTimeout); err != nil {
		return Principal{}, err
	}
	return Principal{OperatorID: c.OperatorID, SessionID: c.SessionID, SiteID: e.Site, TerminalID: e.Term, AMR: e.AMR,
		PasswordChangeRequired: e.PwdChg, ExpiresAt: time.UnixMicro(e.Expires).UTC(), TokenExpiresAt: c.ExpiresAt}, nil
}

// entry reads the shared session entry, filling it from the store when the
// cache lost it. PutIfAbsent never overwrites a tombstone written
// meanwhile by a replica that ended the session.
func (s *Sessions) entry(ctx context.Context, id opgate.SessionID) (cached, error) {
	var e cached
	b, err := s.cache.Get(ctx, sessionKey(id))
	if err == nil {
		if json.Unmarshal(b, &e) != nil {
			return e, ErrUnauthenticated
		}
		return e, nil
	}
	if !s.notFound(err) {
		return e, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var ss Session
	err = s.db.View(ctx, func(tx SessionTx) (err error) { ss, err = tx.GetSession(ctx, id); return })
	if errors.Is(err, opgate.ErrNotFound) {
		return e, ErrUnauthenticated
	}
	if err != nil {
		return e, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	e = toCached(ss)
	if e.Ended {
		s.SessionsEnded(ctx, []opgate.SessionID{id})
		return e, nil
	}
	if err := s.Publish(ctx, ss); err != nil {
		return e, err
	}
	// Read back: a tombstone written between our read of the store and
	// our put wins.
	if b, err := s.cache.Get(ctx, sessionKey(id)); err == nil {
		_ = json.Unmarshal(b, &e)
	}
	// The idle clock restarts from what the store last recorded.
	seen := ss.LastSeenAt.UnixMicro()
	_ = s.cache.Put(ctx, seenKey(id), []byte(fmt.Sprint(seen)), time.UnixMicro(e.Expires).Sub(s.clk.Now())+time.Minute)
	return e, nil
}

// touch enforces the idle timeout and records activity. It writes the
// shared last-seen mark at most every idle/20, and the store's copy (which
// survives losing the cache) at most every idle/4, so that a busy session
// costs a cache read per request, not a write.
func (s *Sessions) touch(ctx context.Context, id opgate.SessionID, e cached, last, now time.Time, idle time.Duration) error {
	if idle > 0 && !now.Before(last.Add(idle)) {
		_ = s.End(ctx, id, "idle_timeout")
		return ErrUnauthenticated
	}
	if now.Sub(last) < idle/20 {
		return nil
	}
	ttl := time.UnixMicro(e.Expires).Sub(now) + time.Minute
	if err := s.cache.Put(ctx, seenKey(id), []byte(fmt.Sprint(now.UnixMicro())), ttl); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if now.Sub(last) >= idle/4 {
		_ = s.db.InTx(ctx, func(tx SessionTx) error {
			ss, err := tx.GetSession(ctx, id)
			if err != nil || !ss.EndedAt.IsZero() {
				return err
			}
			ss.LastSeenAt = now
			return tx.UpdateSession(ctx, ss)
		})
	}
	return nil
}

// lastSeen is the session's last recorded activity.
func (s *Sessions) lastSeen(ctx context.Context, id opgate.SessionID, e cached) (time.Time, error) {
	b, err := s.cache.Get(ctx, seenKey(id))
	switch {
	case err == nil:
		return seenAt(e, b), nil
	case !s.notFound(err):
		return time.Time{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return seenAt(e, nil), nil
}

// seenAt reads a last-seen mark; without one, the session's start counts.
func seenAt(e cached, mark []byte) time.Time {
	var us int64
	if mark != nil {
		if _, err := fmt.Sscan(string(mark), &us); err == nil {
			return time.UnixMicro(us).UTC()
		}
	}
	return time.UnixMicro(e.Created).UTC()
}

// End ends one session (logout, idle timeout), audited, and refuses its
// tokens on every replica at once.
func (s *Sessions) End(ctx context.Context, id opgate.SessionID, reason string) error {
	now := s.clk.Now()
	err := s.db.InTx(ctx, func(tx SessionTx) error {
		ss, err := tx.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if !ss.EndedAt.IsZero() {
			return nil
		}
		ss.EndedAt, ss.EndReason = now, reason
		if err := tx.UpdateSession(ctx, ss); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.SessionEnded, At: now, ActorID: ss.OperatorID, OperatorID: ss.OperatorID,
			SiteID: ss.SiteID, TerminalID: ss.TerminalID, Resource: "session:" + string(id), Reason: reason})
		return err
	})
	if err != nil {
		return err
	}
	s.SessionsEnded(ctx, []opgate.SessionID{id})
	return nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("authn: random: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Refresh rewrites the shared entry of a session from the store, after a
// change to what the entry carries (a password changed clears
// password_change_required).
func (s *Sessions) Refresh(ctx context.Context, id opgate.SessionID) error {
	var ss Session
	if err := s.db.View(ctx, func(tx SessionTx) (err error) { ss, err = tx.GetSession(ctx, id); return }); err != nil {
		return err
	}
	if !ss.EndedAt.IsZero() {
		s.SessionsEnded(ctx, []opgate.SessionID{id})
		return nil
	}
	b, _ := json.Marshal(toCached(ss))
	if ttl := ss.ExpiresAt.Sub(s.clk.Now()); ttl > 0 {
		if err := s.cache.Put(ctx, sessionKey(id), b, ttl); err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	// The Put replaces whatever was there, a tombstone too: a session
	// ended (and its tombstone written) after the read above would live
	// again in the cache. Its end is committed before its tombstone is
	// written, so reading the store once more after the Put sees it.
	// If that read fails, the next reconcile writes the tombstone of a
	// session ended meanwhile; a tombstone here on a guess would end a
	// live session whose password change has just committed.
	if err := s.db.View(ctx, func(tx SessionTx) (err error) { ss, err = tx.GetSession(ctx, id); return }); err == nil && !ss.EndedAt.IsZero() {
		s.SessionsEnded(ctx, []opgate.SessionID{id})
	}
	return nil
}
