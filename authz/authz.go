// Package authz owns grants, their approval, and the decision point: the
// one pure function that says whether an operator may exercise a
// permission at a site now, with the reason (R3). Admin endpoints and the
// counter terminals' checks use the same function. It knows neither HTTP
// nor SQL.
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
	CreateGrant(ctx context.Context, g Grant) error
	GetGrant(ctx context.Context, id opgate.GrantID) (Grant, error)
	UpdateGrant(ctx context.Context, g Grant) error
	ListGrants(ctx context.Context, f GrantFilter) ([]Grant, error)
	ExpireGrants(ctx context.Context, now time.Time, limit int) ([]Grant, error)
	GetRole(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	ListRoles(ctx context.Context) ([]roles.Role, error)
	PutRole(ctx context.Context, r roles.Role) error
	CreateApproval(ctx context.Context, a Approval) error
	GetApproval(ctx context.Context, id string) (Approval, error)
	ApproveApproval(ctx context.Context, id string, by opgate.OperatorID, at time.Time) error
	UseApproval(ctx context.Context, id string, op opgate.OperatorID, action opgate.Permission, site opgate.SiteID, decision string, at time.Time) (bool, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error)
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
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil {
		return nil, errors.New("authz: config: DB is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Service{db: cfg.DB, clk: cfg.Clock}, nil
}

// input loads what a decision about op needs.
func (s *Service) input(ctx context.Context, tx Tx, op opgate.OperatorID) (Input, error) {
	in := Input{Now: s.clk.Now()}
	o, err := tx.GetOperator(ctx, op)
	if err != nil {
		if errors.Is(err, opgate.ErrNotFound) {
			return in, nil
		}
		return in, err
	}
	in.Operator = o
	if in.Grants, err = tx.ListGrants(ctx, GrantFilter{OperatorID: op, Status: Active}); err != nil {
		return in, err
	}
	rs, err := tx.ListRoles(ctx)
	if err != nil {
		return in, err
	}
	in.Roles = make(map[opgate.RoleID]roles.Role, len(rs))
	for _, r := range rs {
		in.Roles[r.ID] = r
	}
	return in, nil
}

// Decide answers whether op may use perm at site now, from the live grants.
func (s *Service) Decide(ctx context.Context, op opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) (Decision, error) {
	var d Decision
	err := s.db.View(ctx, func(tx Tx) error {
		in, err := s.input(ctx, tx, op)
		if err != nil {
			return err
		}
		in.Permission, in.Site = perm, site
		d = Decide(in)
		return nil
	})
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
	err := s.db.View(ctx, func(tx Tx) error {
		in, err := s.input(ctx, tx, op)
		if err != nil {
			return err
		}
		in.Permission = perm
		for _, g := range in.Grants {
			in.Site = g.SiteID
			if d := Decide(in); d.Allowed && !slices.Contains(out, g.SiteID) {
				out = append(out, g.SiteID)
			}
		}
		return nil
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
	err := s.db.View(ctx, func(tx Tx) error {
		gs, err := tx.ListGrants(ctx, GrantFilter{OperatorID: op, Status: Active})
		if err != nil {
			return err
		}
		now := s.clk.Now()
		for _, g := range gs {
			if g.Live(now) && (g.SiteID == site || g.SiteID == opgate.AllSites) {
				ok = true
			}
		}
		return nil
	})
	return ok, err
}
