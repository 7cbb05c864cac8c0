package authn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
)

// ServiceKey is a key a service (an HR system, a resident-record
// application) authenticates with to introspect tokens. Only its hash is
// kept.
type ServiceKey struct {
	Name      string
	Hash      []byte
	CreatedAt time.Time
	RevokedAt time.Time
}

// ServiceTx is what service-key management reads and writes.
type ServiceTx interface {
	PutServiceKey(ctx context.Context, k ServiceKey) error
	GetServiceKeyByHash(ctx context.Context, hash []byte) (ServiceKey, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// ServiceDB runs service-key transactions.
type ServiceDB interface {
	InTx(ctx context.Context, fn func(ServiceTx) error) error
	View(ctx context.Context, fn func(ServiceTx) error) error
}

const serviceKeyPrefix = "opgsk_"

// IsServiceKey tells a service key from an access token by its form.
func IsServiceKey(s string) bool { return strings.HasPrefix(s, serviceKeyPrefix) }

// AddServiceKey creates a key for name and returns it; it is shown once.
func AddServiceKey(ctx context.Context, db ServiceDB, name string, now time.Time) (string, error) {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n") {
		return "", errors.New("authn: service name must be 1 to 64 characters without spaces")
	}
	key := serviceKeyPrefix + randomToken(32)
	err := db.InTx(ctx, func(tx ServiceTx) error {
		if err := tx.PutServiceKey(ctx, ServiceKey{Name: name, Hash: hashToken(key), CreatedAt: now}); err != nil {
			if errors.Is(err, opgate.ErrConflict) {
				return fmt.Errorf("authn: a service named %q exists", name)
			}
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ServiceKeyAdded, At: now, Resource: "service:" + name})
		return err
	})
	return key, err
}

// CheckServiceKey returns the service a key belongs to.
func CheckServiceKey(ctx context.Context, db ServiceDB, key string) (string, error) {
	if !IsServiceKey(key) || len(key) > 128 {
		return "", ErrUnauthenticated
	}
	var k ServiceKey
	err := db.View(ctx, func(tx ServiceTx) (err error) { k, err = tx.GetServiceKeyByHash(ctx, hashToken(key)); return })
	if errors.Is(err, opgate.ErrNotFound) || (err == nil && !k.RevokedAt.IsZero()) {
		return "", ErrUnauthenticated
	}
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return k.Name, nil
}

// Inspect reports whether a token is live, for introspection (RFC 7662):
// like Authenticate, but it records no activity, so asking about a session
// does not keep it alive.
func (s *Sessions) Inspect(ctx context.Context, raw string) (Principal, bool, error) {
	c, err := s.tokens.Verify(raw)
	if err != nil {
		return Principal{}, false, nil
	}
	e, err := s.entry(ctx, c.SessionID)
	if errors.Is(err, ErrUnauthenticated) {
		return Principal{}, false, nil
	}
	if err != nil {
		return Principal{}, false, err
	}
	now := s.clk.Now()
	// A session that must change its password first may do nothing else
	// here (403 password_change_required): to a system asking about it,
	// it is not active either.
	if e.Ended || e.Op != c.OperatorID || now.UnixMicro() >= e.Expires || e.PwdChg {
		return Principal{}, false, nil
	}
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return Principal{}, false, err
	}
	last, err := s.lastSeen(ctx, c.SessionID, e)
	if err != nil {
		return Principal{}, false, err
	}
	if idle := p.Session.IdleTimeout; idle > 0 && !now.Before(last.Add(idle)) {
		return Principal{}, false, nil
	}
	return Principal{OperatorID: c.OperatorID, SessionID: c.SessionID, SiteID: e.Site, TerminalID: e.Term, AMR: e.AMR,
		ExpiresAt: time.UnixMicro(e.Expires).UTC(), TokenExpiresAt: c.ExpiresAt}, true, nil
}
