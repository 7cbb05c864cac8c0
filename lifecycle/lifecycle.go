// Package lifecycle owns sites, terminals and operators: issuing operator
// IDs, transfers, retirement, suspension and reinstatement, lifting locks,
// expiry of IDs past their end date, and changes dated ahead (R1). A
// transfer or retirement ends every right the operator had — grants, cards
// and sessions — in the same transaction as its audit events. It knows
// neither HTTP nor SQL, and it does not own grants, cards or sessions: it
// ends them through its transaction interface, which every store satisfies.
package lifecycle

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
)

// Errors callers branch on.
var (
	ErrNotFound     = errors.New("lifecycle: not found")
	ErrConflict     = errors.New("lifecycle: conflict")
	ErrInvalidState = errors.New("lifecycle: operator is not in a state that allows this")
	ErrValidation   = errors.New("lifecycle: invalid request")
	// ErrForbidden hides whether a target the actor may not manage exists.
	ErrForbidden = errors.New("lifecycle: forbidden")
)

// FieldError names one invalid field.
type FieldError struct{ Field, Message string }

// ValidationError lists every problem of a request at once.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string {
	return fmt.Sprintf("lifecycle: invalid request: %v", e.Fields)
}
func (e *ValidationError) Unwrap() error { return ErrValidation }

// Tx is what lifecycle reads and writes inside one transaction.
type Tx interface {
	CreateSite(ctx context.Context, s Site) error
	GetSite(ctx context.Context, id opgate.SiteID) (Site, error)
	ListSites(ctx context.Context) ([]Site, error)
	CreateTerminal(ctx context.Context, t Terminal) error
	GetTerminal(ctx context.Context, id opgate.TerminalID) (Terminal, error)
	ListTerminals(ctx context.Context, site opgate.SiteID) ([]Terminal, error)
	RemoveTerminal(ctx context.Context, id opgate.TerminalID, at time.Time) error

	CreateOperator(ctx context.Context, o Operator) error
	GetOperator(ctx context.Context, id opgate.OperatorID) (Operator, error)
	GetOperatorForUpdate(ctx context.Context, id opgate.OperatorID) (Operator, error)
	UpdateOperator(ctx context.Context, o Operator) error
	ListOperators(ctx context.Context, f OperatorFilter) ([]Operator, error)
	LocksOf(ctx context.Context, ids []opgate.OperatorID) (map[opgate.OperatorID]Lock, error)
	DueOperators(ctx context.Context, now time.Time, limit int) ([]Operator, error)
	DormantOperators(ctx context.Context, cutoff time.Time, limit int) ([]Operator, error)
	GetLock(ctx context.Context, id opgate.OperatorID) (Lock, error)
	PutLock(ctx context.Context, l Lock) error

	GetOperatorsForUpdate(ctx context.Context, ids []opgate.OperatorID) ([]Operator, error)
	MoveOperators(ctx context.Context, ids []opgate.OperatorID, site opgate.SiteID) error
	SetOperatorStatus(ctx context.Context, ids []opgate.OperatorID, status Status, at time.Time) error

	EndGrants(ctx context.Context, ops []opgate.OperatorID, at time.Time, by opgate.OperatorID, reason string) ([]Ended, error)
	CollectCards(ctx context.Context, ops []opgate.OperatorID, at time.Time) ([]Ended, error)
	EndOperatorSessions(ctx context.Context, ops []opgate.OperatorID, at time.Time, reason string) ([]Ended, error)

	CreateChange(ctx context.Context, c Change) error
	GetChange(ctx context.Context, id opgate.ChangeID) (Change, error)
	UpdateChange(ctx context.Context, c Change) error
	ListChanges(ctx context.Context, f ChangeFilter) ([]Change, error)
	ClaimDueChanges(ctx context.Context, now time.Time, limit int) ([]Change, error)
	FinishChanges(ctx context.Context, ids []opgate.ChangeID, status ChangeStatus, at time.Time) error

	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// DB runs lifecycle's transactions.
type DB interface {
	InTx(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
}

// Authorizer decides whether an actor holds a permission at a site. It
// returns nil when allowed and an error the HTTP edge maps (forbidden)
// when not.
type Authorizer interface {
	Require(ctx context.Context, actor opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) error
	// Sites lists where the actor holds perm ("*" for every site).
	Sites(ctx context.Context, actor opgate.OperatorID, perm opgate.Permission) ([]opgate.SiteID, error)
}

// SessionsEnded is told, after commit, which sessions a change ended, so
// that the ephemeral cache every replica reads refuses them at once.
type SessionsEnded interface {
	SessionsEnded(ctx context.Context, ids []opgate.SessionID)
}

// Actor is who asks for a change and from where.
type Actor struct {
	ID         opgate.OperatorID // empty for the system (scheduler, bootstrap)
	TerminalID opgate.TerminalID
}

// Config configures a Service.
type Config struct {
	// DB is required.
	DB DB
	// Authorizer is required; use AllowAll only for tools run on the
	// server's host.
	Authorizer Authorizer
	// Sessions is told of ended sessions; nil tells nobody.
	Sessions SessionsEnded
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
	// BatchSize is how many due changes one scheduler transaction applies.
	// Zero means 500.
	BatchSize int
}

// Service carries out lifecycle changes.
type Service struct {
	db    DB
	authz Authorizer
	sess  SessionsEnded
	clk   clock.Clock
	batch int
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("DB is required"))
	}
	if cfg.Authorizer == nil {
		errs = append(errs, errors.New("Authorizer is required"))
	}
	if cfg.BatchSize < 0 {
		errs = append(errs, errors.New("BatchSize must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lifecycle: config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	return &Service{db: cfg.DB, authz: cfg.Authorizer, sess: cfg.Sessions, clk: cfg.Clock, batch: cfg.BatchSize}, nil
}

// AllowAll is an Authorizer for the server host's own commands (bootstrap,
// the scheduler), which act as the system.
type AllowAll struct{}

// Require allows everything.
func (AllowAll) Require(context.Context, opgate.OperatorID, opgate.Permission, opgate.SiteID) error {
	return nil
}

// Sites answers every site.
func (AllowAll) Sites(context.Context, opgate.OperatorID, opgate.Permission) ([]opgate.SiteID, error) {
	return []opgate.SiteID{opgate.AllSites}, nil
}

// Now is the service's clock, for callers that must agree with it.
func (s *Service) Now() time.Time { return s.clk.Now() }

func (s *Service) ended(ctx context.Context, ids []opgate.SessionID) {
	if s.sess != nil && len(ids) > 0 {
		s.sess.SessionsEnded(ctx, ids)
	}
}

// NewID returns prefix followed by n random characters of Crockford's
// base32 alphabet (no I, L, O, U: they are misread at a counter).
func NewID(prefix string, n int) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("lifecycle: random: %v", err)) // the OS random source does not fail
	}
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return prefix + string(b)
}

func notFound(err error) error {
	if isNotFound(err) {
		return ErrNotFound
	}
	return err
}

func isNotFound(err error) bool { return errors.Is(err, opgate.ErrNotFound) }
func isConflict(err error) bool { return errors.Is(err, opgate.ErrConflict) }

func trim(s string) string { return strings.TrimSpace(s) }

func requireReason(reason string) error {
	if trim(reason) == "" {
		return &ValidationError{Fields: []FieldError{{"reason", "required"}}}
	}
	if len(reason) > 1000 {
		return &ValidationError{Fields: []FieldError{{"reason", "at most 1000 bytes"}}}
	}
	return nil
}
