// Package authz owns grants, their approval, and the decision point: the
// one pure function that says whether an operator may exercise a
// permission at a site now, with the reason (R3), and the in-memory index
// that answers as that function does without reading grants on every
// decision (index.go). Admin endpoints and the counter terminals' checks
// use the same index. It knows neither HTTP nor SQL.
package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// Errors callers branch on.
var (
	ErrForbidden     = errors.New("authz: forbidden")
	ErrSelfGrant     = errors.New("authz: cannot grant, approve or review for oneself")
	ErrSoDConflict   = errors.New("authz: separation of duties forbids holding these roles together")
	ErrNotFound      = errors.New("authz: not found")
	ErrConflict      = errors.New("authz: conflict")
	ErrValidation    = errors.New("authz: invalid request")
	ErrInvalidTarget = errors.New("authz: operator cannot receive grants")
)

// FieldError names one invalid field.
type FieldError struct{ Field, Message string }

// ValidationError lists every problem at once.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string { return fmt.Sprintf("authz: invalid request: %v", e.Fields) }
func (e *ValidationError) Unwrap() error { return ErrValidation }

// Reasons a decision names. Stable strings: they are kept in the history.
const (
	ReasonAllowed           = "allowed"
	ReasonUnknownOperator   = "unknown_operator"
	ReasonOperatorSuspended = "operator_suspended"
	ReasonOperatorInactive  = "operator_inactive"
	ReasonNoGrant           = "no_grant"
	ReasonOtherSite         = "other_site"
	ReasonUnknownAction     = "unknown_action"
)

// Decision is the answer of the decision point.
type Decision struct {
	Allowed bool
	Reason  string
	GrantID opgate.GrantID // the grant that allowed it
}

// Input is everything a decision depends on. Decide reads nothing else,
// so the same inputs always give the same answer.
type Input struct {
	Operator   lifecycle.Operator
	Grants     []Grant
	Roles      map[opgate.RoleID]roles.Role
	Permission opgate.Permission
	Site       opgate.SiteID // opgate.AllSites asks for the permission at every site
	Now        time.Time
}

// Decide is the decision point (R3.4). A grant at "*" holds at every site;
// asking for "*" needs a grant at "*".
func Decide(in Input) Decision {
	switch {
	case in.Operator.ID == "":
		return Decision{Reason: ReasonUnknownOperator}
	case in.Operator.Status == lifecycle.Suspended:
		return Decision{Reason: ReasonOperatorSuspended}
	case in.Operator.Status != lifecycle.Active:
		return Decision{Reason: ReasonOperatorInactive}
	case !roles.Known(in.Permission):
		return Decision{Reason: ReasonUnknownAction}
	case in.Operator.ValidUntil.After(time.Time{}) && !in.Now.Before(in.Operator.ValidUntil):
		return Decision{Reason: ReasonOperatorInactive}
	}
	elsewhere := false
	for _, g := range in.Grants {
		if g.OperatorID != in.Operator.ID || !g.Live(in.Now) {
			continue
		}
		r, ok := in.Roles[g.RoleID]
		if !ok || !r.Has(in.Permission) {
			continue
		}
		if g.SiteID == opgate.AllSites || g.SiteID == in.Site {
			return Decision{Allowed: true, Reason: ReasonAllowed, GrantID: g.ID}
		}
		elsewhere = true
	}
	if elsewhere {
		return Decision{Reason: ReasonOtherSite}
	}
	return Decision{Reason: ReasonNoGrant}
}

// Tx is what authz reads and writes inside one transaction.
type Tx interface {
	GetOperator(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	// GetOperatorForUpdate reads the operator and locks its row until the
	// transaction ends: every change to an operator's rights (a grant, an
	// approval, a revocation, a transfer, a retirement) takes this lock
	// first, so none of them acts on what another has just changed.
	GetOperatorForUpdate(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	CreateGrant(ctx context.Context, g Grant) error
	GetGrant(ctx context.Context, id opgate.GrantID) (Grant, error)
	UpdateGrant(ctx context.Context, g Grant) error
	ListGrants(ctx context.Context, f GrantFilter) ([]Grant, error)
	ExpireGrants(ctx context.Context, now time.Time, limit int) ([]Grant, error)
	GetRole(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	// GetRoleForUpdate locks the role until the transaction ends;
	// GetRoleForShare keeps it from changing until then.
	GetRoleForUpdate(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	GetRoleForShare(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	ListRoles(ctx context.Context) ([]roles.Role, error)
	PutRole(ctx context.Context, r roles.Role) error
	CreateApproval(ctx context.Context, a Approval) error
	GetApproval(ctx context.Context, id string) (Approval, error)
	ApproveApproval(ctx context.Context, id string, by opgate.OperatorID, at time.Time) error
	UseApproval(ctx context.Context, id string, op opgate.OperatorID, action opgate.Permission, site opgate.SiteID, decision string, at time.Time) (bool, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	// AuthzEpoch reads a number that moves with every change of any
	// operator's rights or of the roles, where the store can keep one
	// cheaply (ok false where it cannot). Two equal readings mean nothing
	// a decision depends on changed between them.
	AuthzEpoch(ctx context.Context) (epoch int64, ok bool, err error)
	// AuthzVersions reads, in one statement, the versions of op's rights
	// and of the roles that this transaction sees; in a write transaction
	// no change of them can commit between this read and its commit, so a
	// decision is never recorded after a change it did not see.
	AuthzVersions(ctx context.Context, op opgate.OperatorID) (Versions, error)
	// LoadAuthz reads what every decision reads, at once. Each version is
	// read before the rows it stands for, so that no entry is ever tagged
	// with a version newer than its content.
	LoadAuthz(ctx context.Context) (State, error)
}

// DB runs authz's transactions.
type DB interface {
	InTx(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
}

// Config configures a Service.
type Config struct {
	// DB is required.
	DB DB
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Service manages grants and answers permission questions.
type Service struct {
	db  DB
	clk clock.Clock
	idx *Index
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil {
		return nil, errors.New("authz: config: DB is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Service{db: cfg.DB, clk: cfg.Clock, idx: NewIndex()}, nil
}

// LoadIndex fills the decision index from the store at once, so that the
// first decision about each operator does not read its grants. Without
// it the index fills as decisions meet operators; either way every
// decision checks its entry's version first.
func (s *Service) LoadIndex(ctx context.Context) (operators int, err error) {
	var st State
	if err := s.db.View(ctx, func(tx Tx) (err error) { st, err = tx.LoadAuthz(ctx); return }); err != nil {
		return 0, err
	}
	s.idx.Load(st)
	return len(st.Operators), nil
}

// fresh returns op's entry as tx sees it (nil when op does not exist):
// from the index when the store's authz epoch is the one the entry and
// the roles were read at, or when its version is the one tx reads; else
// read again in tx. publish installs what was read; call it only after tx
// committed.
func (s *Service) fresh(ctx context.Context, tx Tx, op opgate.OperatorID) (e *entry, publish func(), err error) {
	epoch, epochOK, err := tx.AuthzEpoch(ctx)
	if err != nil {
		return nil, nil, err
	}
	if !epochOK {
		epoch = 0 // never a tag
	}
	if rs := s.idx.roles.Load(); epoch != 0 && rs != nil && rs.epoch == epoch {
		if cached, ok := s.idx.get(op); ok && cached.epoch == epoch {
			return cached.withRoles(rs), func() {}, nil
		}
	}
	v, err := tx.AuthzVersions(ctx, op)
	if err != nil || !v.Found {
		return nil, func() {}, err
	}
	rs := s.idx.roles.Load()
	newRoles := false
	switch {
	case rs == nil || rs.version != v.Roles:
		list, err := tx.ListRoles(ctx)
		if err != nil {
			return nil, nil, err
		}
		rs, newRoles = newRoleSet(v.Roles, list), true
		rs.epoch = epoch
	case rs.epoch != epoch:
		c := *rs
		c.epoch = epoch
		rs, newRoles = &c, true
	}
	cached, ok := s.idx.get(op)
	if ok && cached.version == v.Operator {
		e = cached.withRoles(rs)
	} else {
		o, err := tx.GetOperator(ctx, op)
		if errors.Is(err, opgate.ErrNotFound) {
			return nil, func() {}, nil
		}
		if err != nil {
			return nil, nil, err
		}
		gs, err := allGrants(ctx, tx, GrantFilter{OperatorID: op, Status: Active})
		if err != nil {
			return nil, nil, err
		}
		e = s.idx.newEntry(OperatorState{ID: o.ID, Status: o.Status, ValidUntil: o.ValidUntil, Version: v.Operator}, gs, rs)
	}
	retag := e.epoch != epoch
	e.epoch = epoch
	return e, func() {
		if newRoles {
			s.idx.roles.Store(rs)
		}
		if e != &cached || retag {
			s.idx.put(e)
		}
	}, nil
}

// view runs fn on op's fresh entry in a read transaction.
func (s *Service) view(ctx context.Context, op opgate.OperatorID, fn func(*entry)) error {
	var publish func()
	err := s.db.View(ctx, func(tx Tx) error {
		e, p, err := s.fresh(ctx, tx, op)
		if err != nil {
			return err
		}
		publish = p
		fn(e)
		return nil
	})
	if err == nil {
		publish()
	}
	return err
}

// Decide answers whether op may use perm at site now, from the live grants.
func (s *Service) Decide(ctx context.Context, op opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) (Decision, error) {
	var d Decision
	err := s.view(ctx, op, func(e *entry) { d = e.decide(perm, site, s.clk.Now(), s.idx.sites.Load()) })
	return d, err
}

// Require returns nil when op may use perm at site, ErrForbidden when not.
func (s *Service) Require(ctx context.Context, op opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) error {
	d, err := s.Decide(ctx, op, perm, site)
	if err != nil {
		return err
	}
	if !d.Allowed {
		return fmt.Errorf("%w: %s", ErrForbidden, d.Reason)
	}
	return nil
}

// Sites lists the sites at which op holds perm now ("*" included).
func (s *Service) Sites(ctx context.Context, op opgate.OperatorID, perm opgate.Permission) ([]opgate.SiteID, error) {
	var out []opgate.SiteID
	err := s.view(ctx, op, func(e *entry) {
		if e == nil {
			return
		}
		now, sites := s.clk.Now(), s.idx.sites.Load()
		for _, g := range e.grants {
			site := sites.names[g.site]
			if d := e.decide(perm, site, now, sites); d.Allowed && !slices.Contains(out, site) {
				out = append(out, site)
			}
		}
	})
	return out, err
}

// HoldsAnywhere reports whether op holds perm at some site: the coarse
// check made before a request's content is read, so that a caller without
// the permission learns nothing about the target.
func (s *Service) HoldsAnywhere(ctx context.Context, op opgate.OperatorID, perm opgate.Permission) (bool, error) {
	sites, err := s.Sites(ctx, op, perm)
	return len(sites) > 0, err
}

// HasGrantAt reports whether op holds any live grant at site (a grant at
// every site counts): a terminal of that site is one the operator may use.
func (s *Service) HasGrantAt(ctx context.Context, op opgate.OperatorID, site opgate.SiteID) (bool, error) {
	var ok bool
	err := s.view(ctx, op, func(e *entry) { ok = e.hasGrantAt(site, s.clk.Now(), s.idx.sites.Load()) })
	return ok, err
}
