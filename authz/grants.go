package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// Actor is who asks, and from which terminal.
type Actor = lifecycle.Actor

// GrantRequest is what a chief fills in to grant a role.
type GrantRequest struct {
	OperatorID opgate.OperatorID
	RoleID     opgate.RoleID
	SiteID     opgate.SiteID
	Reason     string
	ValidUntil time.Time
}

// restrictedFromNonRegular are the permissions that only regular staff may
// hold: people who manage others' rights must be the municipality's own
// (R1.2, R3.2).
var restrictedFromNonRegular = []opgate.Permission{roles.OperatorManage, roles.GrantManage, roles.GrantApprove, roles.PolicyManage}

func newGrantID() opgate.GrantID { return opgate.GrantID(lifecycle.NewID("G-", 16)) }

// Grant gives a role to an operator at a site (R3.1, R3.2, R3.3). A role
// holding a high-risk permission starts pending a second person's approval.
func (s *Service) Grant(ctx context.Context, a Actor, r GrantRequest) (Grant, error) {
	if err := s.Require(ctx, a.ID, roles.GrantManage, r.SiteID); err != nil {
		return Grant{}, err
	}
	var fe []FieldError
	if r.SiteID != opgate.AllSites && !roles.ValidID(string(r.SiteID)) {
		fe = append(fe, FieldError{"site_id", "must be a site ID or *"})
	}
	if !roles.ValidID(string(r.RoleID)) {
		fe = append(fe, FieldError{"role_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if len(r.Reason) == 0 || len(r.Reason) > 1000 {
		fe = append(fe, FieldError{"reason", "required, at most 1000 bytes"})
	}
	now := s.clk.Now()
	if !r.ValidUntil.IsZero() && !r.ValidUntil.After(now) {
		fe = append(fe, FieldError{"valid_until", "must be in the future"})
	}
	if fe != nil {
		return Grant{}, &ValidationError{Fields: fe}
	}
	if r.OperatorID == a.ID {
		return Grant{}, ErrSelfGrant
	}
	// Where the actor manages grants decides what they may learn of the
	// operator: an unknown operator, or one of a site they do not manage,
	// is refused alike (API.md, Conventions).
	sites, err := s.Sites(ctx, a.ID, roles.GrantManage)
	if err != nil {
		return Grant{}, err
	}
	everywhere := containsSite(sites, opgate.AllSites)
	g := Grant{ID: newGrantID(), OperatorID: r.OperatorID, RoleID: r.RoleID, SiteID: r.SiteID, Status: Active,
		GrantedBy: a.ID, Reason: r.Reason, CreatedAt: now, ValidFrom: now, ValidUntil: r.ValidUntil.UTC().Truncate(time.Microsecond)}
	err = s.db.InTx(ctx, func(tx Tx) error {
		o, err := tx.GetOperatorForUpdate(ctx, r.OperatorID)
		if errors.Is(err, opgate.ErrNotFound) {
			if !everywhere {
				return ErrForbidden
			}
			return fmt.Errorf("%w: operator %s", ErrNotFound, r.OperatorID)
		}
		if err != nil {
			return err
		}
		if !everywhere && !containsSite(sites, o.SiteID) {
			return ErrForbidden
		}
		if o.Status == lifecycle.Retired || o.Status == lifecycle.Expired {
			return fmt.Errorf("%w: operator is %s", ErrInvalidTarget, o.Status)
		}
		// The role as it stands until this grant commits: an edit of it
		// judges its holders, this grant among them, under its own lock.
		role, err := tx.GetRoleForShare(ctx, r.RoleID)
		if errors.Is(err, opgate.ErrNotFound) {
			return &ValidationError{Fields: []FieldError{{"role_id", "no such role"}}}
		}
		if err != nil {
			return err
		}
		if r.SiteID == opgate.AllSites {
			if !roles.AllSitesAllowed(role.ID) {
				return fmt.Errorf("%w: only security_admin and auditor may be granted at every site", ErrConflict)
			}
		} else if r.SiteID != o.SiteID {
			return fmt.Errorf("%w: grants are made at the operator's home site %s", ErrConflict, o.SiteID)
		}
		if o.EmploymentType != lifecycle.Regular {
			for _, p := range restrictedFromNonRegular {
				if role.Has(p) {
					return fmt.Errorf("%w: %s staff cannot hold %s", ErrConflict, o.EmploymentType, p)
				}
			}
		}
		if !o.ValidUntil.IsZero() && (g.ValidUntil.IsZero() || g.ValidUntil.After(o.ValidUntil)) {
			// A grant never outlives the operator's own validity.
			g.ValidUntil = o.ValidUntil
		}
		var held []Grant
		for _, st := range []GrantStatus{Active, PendingApproval} {
			gs, err := allGrants(ctx, tx, GrantFilter{OperatorID: o.ID, Status: st})
			if err != nil {
				return err
			}
			held = append(held, gs...)
		}
		for _, h := range held {
			other, err := tx.GetRoleForShare(ctx, h.RoleID)
			if errors.Is(err, opgate.ErrNotFound) {
				continue // a deleted role conflicts with nothing
			}
			if err != nil {
				return err // any other failure must not let a conflict through
			}
			if roles.Conflict(role, other) {
				return fmt.Errorf("%w: %s conflicts with held %s", ErrSoDConflict, role.ID, other.ID)
			}
		}
		typ := audit.GrantRequested
		if role.HighRisk() {
			g.Status, g.ValidFrom = PendingApproval, time.Time{}
		} else {
			typ = audit.GrantApproved
		}
		if err := tx.CreateGrant(ctx, g); err != nil {
			return err
		}
		return grantEvent(ctx, tx, a, typ, g, r.Reason, now)
	})
	return g, err
}

func grantEvent(ctx context.Context, tx Tx, a Actor, typ audit.Type, g Grant, reason string, now time.Time) error {
	e := audit.Event{Type: typ, At: now, ActorID: a.ID, TerminalID: a.TerminalID, OperatorID: g.OperatorID, SiteID: g.SiteID,
		Resource: "grant:" + string(g.ID), Reason: reason}
	d := map[string]any{"role_id": string(g.RoleID), "status": string(g.Status), "granted_by": string(g.GrantedBy)}
	if !g.ValidUntil.IsZero() {
		d["valid_until"] = g.ValidUntil.Format(time.RFC3339Nano)
	}
	if g.ApprovedBy != "" {
		d["approved_by"] = string(g.ApprovedBy)
	}
	e.Data = audit.D(d)
	_, err := tx.AppendAudit(ctx, e)
	return err
}

// Approve makes a pending high-risk grant active. The approver is a
// different person from the requester and the grantee, holding
// grant.approve (or grant.manage) at the grant's site.
func (s *Service) Approve(ctx context.Context, a Actor, id opgate.GrantID, reason string) (Grant, error) {
	g, err := s.visibleGrant(ctx, a, id, roles.GrantApprove, roles.GrantManage)
	if err != nil {
		return g, err
	}
	if g.OperatorID == a.ID || g.GrantedBy == a.ID {
		return g, ErrSelfGrant
	}
	now := s.clk.Now()
	err = s.db.InTx(ctx, func(tx Tx) error {
		g, err = lockedGrant(ctx, tx, id)
		if err != nil {
			return err
		}
		if g.Status != PendingApproval {
			return fmt.Errorf("%w: grant is %s", ErrConflict, g.Status)
		}
		if now.Sub(g.CreatedAt) >= PendingTTL {
			// Lapsed, whether or not the sweep has marked it yet.
			return fmt.Errorf("%w: the request lapsed after %s without approval", ErrConflict, PendingTTL)
		}
		g.Status, g.ApprovedBy, g.ValidFrom = Active, a.ID, now
		if err := tx.UpdateGrant(ctx, g); err != nil {
			return err
		}
		return grantEvent(ctx, tx, a, audit.GrantApproved, g, reason, now)
	})
	return g, err
}

// Revoke ends a grant at once.
func (s *Service) Revoke(ctx context.Context, a Actor, id opgate.GrantID, reason string) (Grant, error) {
	g, err := s.visibleGrant(ctx, a, id, roles.GrantManage)
	if err != nil {
		return g, err
	}
	now := s.clk.Now()
	err = s.db.InTx(ctx, func(tx Tx) error {
		g, err = RevokeIn(ctx, tx, a, id, reason, now)
		return err
	})
	return g, err
}

// RevokeIn ends a pending or active grant inside the caller's transaction,
// with its grant.revoked event: a review decision and the revocation it
// orders commit together. Whether the actor may revoke is the caller's to
// check.
func RevokeIn(ctx context.Context, tx Tx, a Actor, id opgate.GrantID, reason string, now time.Time) (Grant, error) {
	g, err := lockedGrant(ctx, tx, id)
	if err != nil {
		return g, err
	}
	if g.Status != Active && g.Status != PendingApproval {
		return g, fmt.Errorf("%w: grant is %s", ErrConflict, g.Status)
	}
	g.Status, g.EndedAt, g.EndedBy, g.EndReason = Revoked, now, a.ID, reason
	if err := tx.UpdateGrant(ctx, g); err != nil {
		return g, err
	}
	return g, grantEvent(ctx, tx, a, audit.GrantRevoked, g, reason, now)
}

// lockedGrant reads a grant as it stands once its operator's row is
// locked: a transfer or retirement that ended it, or another approval or
// revocation, has either committed (and is seen) or waits for this
// transaction. Without the lock, PostgreSQL would let an approval write
// "active" over a revocation committed since the grant was read.
func lockedGrant(ctx context.Context, tx Tx, id opgate.GrantID) (Grant, error) {
	g, err := tx.GetGrant(ctx, id)
	if err != nil {
		return g, err
	}
	return grantUnderLock(ctx, tx, g)
}

// grantUnderLock locks g's operator and reads g again as it stands then.
// A grant never changes operator, so one already read names the lock.
func grantUnderLock(ctx context.Context, tx Tx, g Grant) (Grant, error) {
	if _, err := tx.GetOperatorForUpdate(ctx, g.OperatorID); err != nil {
		return g, err
	}
	return tx.GetGrant(ctx, g.ID)
}

// visibleGrant loads a grant the actor may act on with one of perms at its
// site; an unknown grant and a refused one look alike to whoever may not
// act at every site.
func (s *Service) visibleGrant(ctx context.Context, a Actor, id opgate.GrantID, perms ...opgate.Permission) (Grant, error) {
	var g Grant
	err := s.db.View(ctx, func(tx Tx) (err error) { g, err = tx.GetGrant(ctx, id); return })
	if err != nil && !errors.Is(err, opgate.ErrNotFound) {
		return g, err
	}
	for _, p := range perms {
		if g.ID != "" && s.Require(ctx, a.ID, p, g.SiteID) == nil {
			return g, nil
		}
	}
	for _, p := range perms {
		if s.Require(ctx, a.ID, p, opgate.AllSites) == nil {
			return Grant{}, ErrNotFound
		}
	}
	return Grant{}, ErrForbidden
}

// ListGrants lists grants the actor may see: all for a holder of
// grant.manage or audit.read at every site, else those of the sites where
// the actor holds grant.manage.
func (s *Service) ListGrants(ctx context.Context, a Actor, f GrantFilter) ([]Grant, error) {
	sites, err := s.Sites(ctx, a.ID, roles.GrantManage)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, ErrForbidden
	}
	all := false
	for _, x := range sites {
		all = all || x == opgate.AllSites
	}
	if !all && f.SiteID == "" && len(sites) == 1 {
		f.SiteID = sites[0]
	}
	var out []Grant
	err = s.db.View(ctx, func(tx Tx) error {
		gs, err := tx.ListGrants(ctx, f)
		if err != nil {
			return err
		}
		for _, g := range gs {
			if all || containsSite(sites, g.SiteID) {
				out = append(out, g)
			}
		}
		return nil
	})
	return out, err
}

func containsSite(sites []opgate.SiteID, s opgate.SiteID) bool {
	for _, x := range sites {
		if x == s {
			return true
		}
	}
	return false
}

// grantPage is how many grants allGrants reads at a time.
const grantPage = 1000

// allGrants reads every grant f selects, a page at a time. A store caps
// one list at a page; a check that read only the first page would miss a
// conflict (or a right) held by an operator with more grants than that,
// past or present.
func allGrants(ctx context.Context, tx interface {
	ListGrants(context.Context, GrantFilter) ([]Grant, error)
}, f GrantFilter) ([]Grant, error) {
	var out []Grant
	f.Limit = grantPage
	for {
		gs, err := tx.ListGrants(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, gs...)
		if len(gs) < grantPage {
			return out, nil
		}
		f.After = gs[len(gs)-1].ID
	}
}

// GrantsOf lists all of an operator's grants, past and present, for the
// operator view and its permissions at an instant.
func (s *Service) GrantsOf(ctx context.Context, op opgate.OperatorID) ([]Grant, error) {
	var out []Grant
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = allGrants(ctx, tx, GrantFilter{OperatorID: op}); return })
	return out, err
}

// ListRoles lists every role.
func (s *Service) ListRoles(ctx context.Context) ([]roles.Role, error) {
	var out []roles.Role
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListRoles(ctx); return })
	return out, err
}

// PutRole creates (create=true) or replaces a role, audited.
func (s *Service) PutRole(ctx context.Context, a Actor, r roles.Role, create bool) (roles.Role, error) {
	if err := s.Require(ctx, a.ID, roles.RoleManage, opgate.AllSites); err != nil {
		return r, err
	}
	if err := roles.Validate(r); err != nil {
		return r, err
	}
	now := s.clk.Now()
	err := s.db.InTx(ctx, func(tx Tx) error {
		// Locked: the holders are judged against the role as it stands
		// (an edit read before another committed would write over it).
		old, err := tx.GetRoleForUpdate(ctx, r.ID)
		switch {
		case err == nil && create:
			return fmt.Errorf("%w: role %s exists", ErrConflict, r.ID)
		case errors.Is(err, opgate.ErrNotFound) && !create:
			return fmt.Errorf("%w: role %s", ErrNotFound, r.ID)
		case err != nil && !errors.Is(err, opgate.ErrNotFound):
			return err
		}
		r.BuiltIn = old.BuiltIn
		if !create {
			if err := heldRoleChange(ctx, tx, old, r); err != nil {
				return err
			}
		}
		if err := tx.PutRole(ctx, r); err != nil {
			return err
		}
		e := audit.Event{Type: audit.RoleChanged, At: now, ActorID: a.ID, TerminalID: a.TerminalID, Resource: "role:" + string(r.ID)}
		e.Data = audit.D(map[string]any{"old": roleData(old), "new": roleData(r)})
		_, err = tx.AppendAudit(ctx, e)
		return err
	})
	return r, err
}

// heldRoleChange refuses an edit of a role that would give its present
// holders what a grant could not have given them: every rule of Grant is
// judged when the grant is made, and a decision reads the role as it is
// now, so widening a held role would pass them by. A high-risk permission
// is not added to live grants without a second person (revoke and grant
// again: the new grant waits for approval); a permission only regular
// staff may hold is not given to a non-regular holder; and a new conflict
// is not declared with a role that a holder of this one also holds.
func heldRoleChange(ctx context.Context, tx Tx, old, r roles.Role) error {
	var added []opgate.Permission
	for _, p := range r.Permissions {
		if !old.Has(p) {
			added = append(added, p)
		}
	}
	var newConflicts []opgate.RoleID
	for _, c := range r.ConflictsWith {
		if !slices.Contains(old.ConflictsWith, c) {
			newConflicts = append(newConflicts, c)
		}
	}
	if len(added) == 0 && len(newConflicts) == 0 {
		return nil
	}
	holders := map[opgate.OperatorID]bool{} // operator → holds it active (not only pending)
	for _, st := range []GrantStatus{Active, PendingApproval} {
		gs, err := allGrants(ctx, tx, GrantFilter{RoleID: r.ID, Status: st})
		if err != nil {
			return err
		}
		for _, g := range gs {
			holders[g.OperatorID] = holders[g.OperatorID] || st == Active
		}
	}
	if len(holders) == 0 {
		return nil
	}
	for _, p := range added {
		if !roles.HighRisk(p) {
			continue
		}
		for _, active := range holders {
			if active {
				return fmt.Errorf("%w: role %s is held: %s is high risk and needs a second person's approval for each holder; revoke the grants and grant them again", ErrConflict, r.ID, p)
			}
		}
	}
	for _, p := range added {
		if !slices.Contains(restrictedFromNonRegular, p) {
			continue
		}
		for op := range holders {
			o, err := tx.GetOperator(ctx, op)
			if err != nil {
				return err
			}
			if o.EmploymentType != lifecycle.Regular {
				return fmt.Errorf("%w: role %s is held by %s staff, who cannot hold %s", ErrConflict, r.ID, o.EmploymentType, p)
			}
		}
	}
	for _, c := range newConflicts {
		for _, st := range []GrantStatus{Active, PendingApproval} {
			gs, err := allGrants(ctx, tx, GrantFilter{RoleID: c, Status: st})
			if err != nil {
				return err
			}
			for _, g := range gs {
				if _, ok := holders[g.OperatorID]; ok {
					return fmt.Errorf("%w: %s would conflict with %s, which a holder of both already has", ErrSoDConflict, r.ID, c)
				}
			}
		}
	}
	return nil
}

func roleData(r roles.Role) map[string]any {
	if r.ID == "" {
		return nil
	}
	return map[string]any{"name": r.Name, "permissions": r.Permissions, "conflicts_with": r.ConflictsWith}
}

// SeedRoles stores the built-in roles inside tx (bootstrap).
func SeedRoles(ctx context.Context, tx Tx) error {
	for _, r := range roles.BuiltIn() {
		if err := tx.PutRole(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// PendingTTL is how long a high-risk grant may wait for its second
// person before the request lapses.
const PendingTTL = 7 * 24 * time.Hour

// Sweep marks grants past valid_until expired, and requests that waited
// for approval longer than PendingTTL, each with a grant.expired event.
// Decisions already ignore both; this keeps the stored status and the
// history in step.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	total, err := s.sweepPending(ctx)
	if err != nil {
		return total, err
	}
	for {
		now := s.clk.Now()
		n := 0
		err := s.db.InTx(ctx, func(tx Tx) error {
			gs, err := tx.ExpireGrants(ctx, now, 500)
			if err != nil {
				return err
			}
			n = len(gs)
			for _, g := range gs {
				if err := grantEvent(ctx, tx, Actor{}, audit.GrantExpired, g, "valid_until passed", now); err != nil {
					return err
				}
			}
			return nil
		})
		total += n
		if err != nil || n < 500 {
			return total, err
		}
	}
}

func (s *Service) sweepPending(ctx context.Context) (int, error) {
	now := s.clk.Now()
	total := 0
	var after opgate.GrantID
	for {
		n, last, more := 0, after, false
		err := s.db.InTx(ctx, func(tx Tx) error {
			n = 0
			gs, err := tx.ListGrants(ctx, GrantFilter{Status: PendingApproval, After: after, Limit: grantPage})
			if err != nil {
				return err
			}
			more = len(gs) == grantPage
			if len(gs) > 0 {
				last = gs[len(gs)-1].ID
			}
			for _, g := range gs {
				if now.Sub(g.CreatedAt) < PendingTTL {
					continue
				}
				// As it stands under its operator's lock: an approval that
				// committed since the list was read keeps its grant.
				if g, err = grantUnderLock(ctx, tx, g); err != nil {
					return err
				}
				if g.Status != PendingApproval {
					continue
				}
				g.Status, g.EndedAt, g.EndReason = Expired, now, "approval not given within 7 days"
				if err := tx.UpdateGrant(ctx, g); err != nil {
					return err
				}
				if err := grantEvent(ctx, tx, Actor{}, audit.GrantExpired, g, g.EndReason, now); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		// Every page is read, so requests younger than a week do not hide
		// older ones behind them.
		total, after = total+n, last
		if !more {
			return total, nil
		}
	}
}

// Holder is one way someone held a permission.
type Holder struct {
	OperatorID opgate.OperatorID
	GrantID    opgate.GrantID
	RoleID     opgate.RoleID
	SiteID     opgate.SiteID // the grant's site ("*" for every site)
}

// HoldersAt answers "who could use perm at site at instant at?" from the
// grants, which are never deleted, only ended (R4.4): every grant live at
// that instant whose role gave perm at that instant (RolesAt), at the site
// or at every site.
func (s *Service) HoldersAt(ctx context.Context, perm opgate.Permission, site opgate.SiteID, at time.Time) ([]Holder, error) {
	rs, err := s.RolesAt(ctx, at)
	if err != nil {
		return nil, err
	}
	var out []Holder
	err = s.db.View(ctx, func(tx Tx) error {
		giving := map[opgate.RoleID]bool{}
		for _, r := range rs {
			giving[r.ID] = r.Has(perm)
		}
		for _, where := range []opgate.SiteID{site, opgate.AllSites} {
			after := opgate.GrantID("")
			for {
				gs, err := tx.ListGrants(ctx, GrantFilter{SiteID: where, After: after, Limit: 1000})
				if err != nil {
					return err
				}
				for _, g := range gs {
					if giving[g.RoleID] && g.LiveAt(at) {
						out = append(out, Holder{OperatorID: g.OperatorID, GrantID: g.ID, RoleID: g.RoleID, SiteID: g.SiteID})
					}
				}
				if len(gs) < 1000 {
					break
				}
				after = gs[len(gs)-1].ID
			}
			if site == opgate.AllSites {
				break
			}
		}
		return nil
	})
	return out, err
}
