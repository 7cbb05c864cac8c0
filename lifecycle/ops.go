package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/roles"
)

func (a Actor) event(typ audit.Type, at time.Time) audit.Event {
	return audit.Event{Type: typ, At: at, ActorID: a.ID, TerminalID: a.TerminalID}
}

// CreateSite registers a site.
func (s *Service) CreateSite(ctx context.Context, a Actor, site Site) (Site, error) {
	if err := s.authz.Require(ctx, a.ID, roles.SiteManage, opgate.AllSites); err != nil {
		return Site{}, err
	}
	var fe []FieldError
	if !roles.ValidID(string(site.ID)) {
		fe = append(fe, FieldError{"site_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if trim(site.Name) == "" || len(site.Name) > 200 {
		fe = append(fe, FieldError{"name", "required, at most 200 bytes"})
	}
	if !municipalityCode(site.MunicipalityCode) {
		fe = append(fe, FieldError{"municipality_code", "must be the 6-digit local government code"})
	}
	if fe != nil {
		return Site{}, &ValidationError{Fields: fe}
	}
	site.CreatedAt = s.clk.Now()
	err := s.db.InTx(ctx, func(tx Tx) error {
		if err := tx.CreateSite(ctx, site); err != nil {
			return err
		}
		e := a.event(audit.SiteCreated, site.CreatedAt)
		e.SiteID, e.Resource = site.ID, "site:"+string(site.ID)
		e.Data = audit.D(map[string]any{"name": site.Name, "municipality_code": site.MunicipalityCode})
		_, err := tx.AppendAudit(ctx, e)
		return err
	})
	if isConflict(err) {
		return Site{}, fmt.Errorf("%w: site %s exists", ErrConflict, site.ID)
	}
	return site, err
}

func municipalityCode(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ListSites lists every site.
func (s *Service) ListSites(ctx context.Context) ([]Site, error) {
	var out []Site
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListSites(ctx); return })
	return out, err
}

// RegisterTerminal registers a counter terminal at a site.
func (s *Service) RegisterTerminal(ctx context.Context, a Actor, t Terminal) (Terminal, error) {
	if err := s.authz.Require(ctx, a.ID, roles.TerminalManage, t.SiteID); err != nil {
		return Terminal{}, err
	}
	var fe []FieldError
	if !roles.ValidID(string(t.ID)) {
		fe = append(fe, FieldError{"terminal_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if !roles.ValidID(string(t.SiteID)) {
		fe = append(fe, FieldError{"site_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if trim(t.Name) == "" || len(t.Name) > 200 {
		fe = append(fe, FieldError{"name", "required, at most 200 bytes"})
	}
	if fe != nil {
		return Terminal{}, &ValidationError{Fields: fe}
	}
	t.CreatedAt = s.clk.Now()
	err := s.db.InTx(ctx, func(tx Tx) error {
		if _, err := tx.GetSite(ctx, t.SiteID); err != nil {
			if isNotFound(err) {
				// Like an operator's site: a field naming nothing, not a
				// missing resource of the path.
				return &ValidationError{Fields: []FieldError{{"site_id", "no such site"}}}
			}
			return err
		}
		if err := tx.CreateTerminal(ctx, t); err != nil {
			return err
		}
		e := a.event(audit.TerminalRegistered, t.CreatedAt)
		e.SiteID, e.Resource = t.SiteID, "terminal:"+string(t.ID)
		e.Data = audit.D(map[string]any{"name": t.Name})
		_, err := tx.AppendAudit(ctx, e)
		return err
	})
	if isConflict(err) {
		return Terminal{}, fmt.Errorf("%w: terminal %s exists", ErrConflict, t.ID)
	}
	return t, err
}

// RemoveTerminal unregisters a terminal; logins from it are refused.
func (s *Service) RemoveTerminal(ctx context.Context, a Actor, id opgate.TerminalID) error {
	var t Terminal
	err := s.db.View(ctx, func(tx Tx) (err error) { t, err = tx.GetTerminal(ctx, id); return })
	if err != nil && !isNotFound(err) {
		return err
	}
	if err := s.authz.Require(ctx, a.ID, roles.TerminalManage, t.SiteID); err != nil || t.ID == "" || !t.RemovedAt.IsZero() {
		return s.hide(ctx, a, roles.TerminalManage, err)
	}
	now := s.clk.Now()
	return s.db.InTx(ctx, func(tx Tx) error {
		if err := tx.RemoveTerminal(ctx, id, now); err != nil {
			return notFound(err)
		}
		e := a.event(audit.TerminalRemoved, now)
		e.SiteID, e.Resource = t.SiteID, "terminal:"+string(id)
		_, err := tx.AppendAudit(ctx, e)
		return err
	})
}

// ListTerminals lists registered terminals, of one site or all.
func (s *Service) ListTerminals(ctx context.Context, site opgate.SiteID) ([]Terminal, error) {
	var out []Terminal
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListTerminals(ctx, site); return })
	return out, err
}

// hide answers a refused or unknown target without telling which: an actor
// who may act at every site learns "not found", anybody else "forbidden"
// (upspin's "private" rather than "not found").
func (s *Service) hide(ctx context.Context, a Actor, perm opgate.Permission, err error) error {
	if err != nil {
		return err
	}
	if s.authz.Require(ctx, a.ID, perm, opgate.AllSites) == nil {
		return ErrNotFound
	}
	return ErrForbidden
}

// IssueRequest is what a chief fills in to issue an operator ID (R1.2).
type IssueRequest struct {
	StaffNumber    string
	Name           string
	SiteID         opgate.SiteID
	EmploymentType EmploymentType
	ValidUntil     time.Time
}

// Issue issues a new operator ID.
func (s *Service) Issue(ctx context.Context, a Actor, r IssueRequest) (Operator, error) {
	if err := s.authz.Require(ctx, a.ID, roles.OperatorManage, r.SiteID); err != nil {
		return Operator{}, err
	}
	now := s.clk.Now()
	var fe []FieldError
	if trim(r.StaffNumber) == "" || len(r.StaffNumber) > 64 {
		fe = append(fe, FieldError{"staff_number", "required, at most 64 bytes"})
	}
	if trim(r.Name) == "" || len(r.Name) > 200 {
		fe = append(fe, FieldError{"name", "required, at most 200 bytes"})
	}
	if !roles.ValidID(string(r.SiteID)) {
		fe = append(fe, FieldError{"site_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if !r.EmploymentType.Valid() {
		fe = append(fe, FieldError{"employment_type", "one of regular, part_time, temporary, dispatched, contractor"})
	} else if r.EmploymentType != Regular && r.ValidUntil.IsZero() {
		fe = append(fe, FieldError{"valid_until", "required for non-regular staff and contractors"})
	}
	if !r.ValidUntil.IsZero() && !r.ValidUntil.After(now) {
		fe = append(fe, FieldError{"valid_until", "must be in the future"})
	}
	if fe != nil {
		return Operator{}, &ValidationError{Fields: fe}
	}
	o := Operator{StaffNumber: trim(r.StaffNumber), Name: trim(r.Name), SiteID: r.SiteID, EmploymentType: r.EmploymentType,
		Status: Active, ValidUntil: r.ValidUntil.UTC().Truncate(time.Microsecond), IssuedAt: now, IssuedBy: a.ID, StatusChanged: now}
	err := s.db.InTx(ctx, func(tx Tx) error {
		var err error
		o, err = s.issue(ctx, tx, a, o)
		return err
	})
	return o, err
}

// IssueIn issues an operator inside the caller's transaction (bootstrap).
func (s *Service) IssueIn(ctx context.Context, tx Tx, a Actor, o Operator) (Operator, error) {
	return s.issue(ctx, tx, a, o)
}

func (s *Service) issue(ctx context.Context, tx Tx, a Actor, o Operator) (Operator, error) {
	if _, err := tx.GetSite(ctx, o.SiteID); err != nil {
		if isNotFound(err) {
			return o, &ValidationError{Fields: []FieldError{{"site_id", "no such site"}}}
		}
		return o, err
	}
	live, err := tx.ListOperators(ctx, OperatorFilter{StaffNumber: o.StaffNumber, Limit: 10})
	if err != nil {
		return o, err
	}
	for _, x := range live {
		if x.Status != Retired {
			// The existing ID is not named: the caller may not manage it.
			return o, fmt.Errorf("%w: the staff number already has an operator ID that is not retired", ErrConflict)
		}
	}
	// Operator IDs are random and never reused: a collision with any
	// operator ever issued fails the insert, and we draw again.
	for range 5 {
		o.ID = opgate.OperatorID(NewID("OP-", 8))
		err = tx.CreateOperator(ctx, o)
		if !isConflict(err) {
			break
		}
		if _, gerr := tx.GetOperator(ctx, o.ID); gerr != nil {
			// The conflict was the staff number (a concurrent issue).
			return o, fmt.Errorf("%w: staff number already has an operator", ErrConflict)
		}
	}
	if err != nil {
		return o, err
	}
	e := a.event(audit.OperatorIssued, o.IssuedAt)
	e.OperatorID, e.SiteID, e.Resource = o.ID, o.SiteID, "operator:"+string(o.ID)
	d := map[string]any{"staff_number": o.StaffNumber, "name": o.Name, "employment_type": string(o.EmploymentType)}
	if !o.ValidUntil.IsZero() {
		d["valid_until"] = o.ValidUntil.Format(time.RFC3339)
	}
	e.Data = audit.D(d)
	_, err = tx.AppendAudit(ctx, e)
	return o, err
}

// GetOperator returns one operator, if the actor may see operators of its
// site.
func (s *Service) GetOperator(ctx context.Context, a Actor, id opgate.OperatorID) (Operator, Lock, error) {
	var o Operator
	var l Lock
	err := s.db.View(ctx, func(tx Tx) (err error) {
		if o, err = tx.GetOperator(ctx, id); err != nil {
			return err
		}
		l, err = tx.GetLock(ctx, id)
		return err
	})
	if err != nil && !isNotFound(err) {
		return o, l, err
	}
	if aerr := s.authz.Require(ctx, a.ID, roles.OperatorManage, o.SiteID); aerr != nil || o.ID == "" {
		return Operator{}, Lock{}, s.hide(ctx, a, roles.OperatorManage, aerr)
	}
	return o, l, nil
}

// ListOperators lists operators of a site (or, for a holder at every site,
// of all sites), with their lock states.
func (s *Service) ListOperators(ctx context.Context, a Actor, f OperatorFilter) ([]Operator, map[opgate.OperatorID]Lock, error) {
	site := f.SiteID
	if site == "" {
		site = opgate.AllSites
	}
	if err := s.authz.Require(ctx, a.ID, roles.OperatorManage, site); err != nil {
		return nil, nil, err
	}
	f.At = s.clk.Now()
	var out []Operator
	var locks map[opgate.OperatorID]Lock
	err := s.db.View(ctx, func(tx Tx) (err error) {
		if out, err = tx.ListOperators(ctx, f); err != nil {
			return err
		}
		ids := make([]opgate.OperatorID, len(out))
		for i, o := range out {
			ids[i] = o.ID
		}
		locks, err = tx.LocksOf(ctx, ids)
		return err
	})
	return out, locks, err
}

// DisplayStatus is the status shown for an operator: "expired" from the
// end of an ID's validity, though the sweep that ends its rights and
// records it may not have run yet (decisions already refuse it, and the
// ledger shows it so too); "locked" while an active operator's lock is in
// force.
func DisplayStatus(o Operator, l Lock, now time.Time) Status {
	if (o.Status == Active || o.Status == Suspended) && !o.ValidUntil.IsZero() && !now.Before(o.ValidUntil) {
		return Expired
	}
	if o.Status == Active && l.Locked(now) {
		return Locked
	}
	return o.Status
}

// Self returns the operator behind an authenticated session, for showing
// operators their own record.
func (s *Service) Self(ctx context.Context, id opgate.OperatorID) (Operator, Lock, error) {
	var o Operator
	var l Lock
	err := s.db.View(ctx, func(tx Tx) (err error) {
		if o, err = tx.GetOperator(ctx, id); err != nil {
			return notFound(err)
		}
		l, err = tx.GetLock(ctx, id)
		return err
	})
	return o, l, err
}
