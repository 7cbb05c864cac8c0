package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/roles"
)

// Outcome is the result of a change request: applied now (Operator set) or
// dated ahead (Change set).
type Outcome struct {
	Operator  Operator
	Scheduled *Change
}

// Transfer moves an operator to another site (R1.3). Every grant ends,
// every card is collected and every session ends, at once; the new site's
// chief grants anew. With effectiveAt in the future the change is stored
// and applied then by the scheduler.
func (s *Service) Transfer(ctx context.Context, a Actor, id opgate.OperatorID, to opgate.SiteID, reason string, effectiveAt time.Time) (Outcome, error) {
	if err := requireReason(reason); err != nil {
		return Outcome{}, err
	}
	o, err := s.target(ctx, a, id, to)
	if err != nil {
		return Outcome{}, err
	}
	if !roles.ValidID(string(to)) {
		return Outcome{}, &ValidationError{Fields: []FieldError{{"to_site_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"}}}
	}
	if to == o.SiteID {
		return Outcome{}, fmt.Errorf("%w: operator is already at site %s", ErrConflict, to)
	}
	return s.change(ctx, a, Change{OperatorID: id, Kind: ChangeTransfer, ToSiteID: to, Reason: reason, EffectiveAt: effectiveAt})
}

// Retire ends everything an operator had, forever (R1.4).
func (s *Service) Retire(ctx context.Context, a Actor, id opgate.OperatorID, reason string, effectiveAt time.Time) (Outcome, error) {
	if err := requireReason(reason); err != nil {
		return Outcome{}, err
	}
	if _, err := s.target(ctx, a, id, ""); err != nil {
		return Outcome{}, err
	}
	return s.change(ctx, a, Change{OperatorID: id, Kind: ChangeRetire, Reason: reason, EffectiveAt: effectiveAt})
}

// target loads the operator and checks that the actor manages operators at
// its site (or, for a transfer, at the target site).
func (s *Service) target(ctx context.Context, a Actor, id opgate.OperatorID, alsoSite opgate.SiteID) (Operator, error) {
	var o Operator
	err := s.db.View(ctx, func(tx Tx) (err error) { o, err = tx.GetOperator(ctx, id); return })
	if err != nil && !isNotFound(err) {
		return o, err
	}
	aerr := s.authz.Require(ctx, a.ID, roles.OperatorManage, o.SiteID)
	if aerr != nil && alsoSite != "" {
		aerr = s.authz.Require(ctx, a.ID, roles.OperatorManage, alsoSite)
	}
	if aerr != nil || o.ID == "" {
		return Operator{}, s.hide(ctx, a, roles.OperatorManage, aerr)
	}
	return o, nil
}

func (s *Service) change(ctx context.Context, a Actor, c Change) (Outcome, error) {
	now := s.clk.Now()
	if c.EffectiveAt.IsZero() || !c.EffectiveAt.After(now) {
		var out Outcome
		var ended []opgate.SessionID
		err := s.db.InTx(ctx, func(tx Tx) error {
			o, err := tx.GetOperatorForUpdate(ctx, c.OperatorID)
			if err != nil {
				return notFound(err)
			}
			o, ended, err = s.apply(ctx, tx, a, o, c, now)
			out.Operator = o
			return err
		})
		if err == nil {
			s.ended(ctx, ended)
		}
		return out, err
	}
	c.ID = opgate.ChangeID(NewID("CH-", 12))
	c.EffectiveAt = c.EffectiveAt.UTC().Truncate(time.Microsecond)
	c.CreatedBy, c.CreatedAt, c.Status = a.ID, now, ChangePending
	err := s.db.InTx(ctx, func(tx Tx) error {
		o, err := tx.GetOperatorForUpdate(ctx, c.OperatorID)
		if err != nil {
			return notFound(err)
		}
		if err := s.check(ctx, tx, o, c); err != nil {
			return err
		}
		if err := tx.CreateChange(ctx, c); err != nil {
			return err
		}
		e := a.event(audit.ChangeScheduled, now)
		e.OperatorID, e.SiteID, e.Resource, e.Reason = o.ID, o.SiteID, "change:"+string(c.ID), c.Reason
		e.Data = audit.D(map[string]any{"kind": string(c.Kind), "to_site_id": string(c.ToSiteID), "effective_at": c.EffectiveAt.Format(time.RFC3339Nano)})
		_, err = tx.AppendAudit(ctx, e)
		return err
	})
	return Outcome{Scheduled: &c}, err
}

// check refuses a change the operator's state does not allow.
func (s *Service) check(ctx context.Context, tx Tx, o Operator, c Change) error {
	if o.Status == Retired {
		return fmt.Errorf("%w: operator %s is retired", ErrInvalidState, o.ID)
	}
	if c.Kind == ChangeTransfer {
		if o.Status == Expired {
			return fmt.Errorf("%w: operator %s has expired", ErrInvalidState, o.ID)
		}
		if _, err := tx.GetSite(ctx, c.ToSiteID); err != nil {
			if isNotFound(err) {
				return &ValidationError{Fields: []FieldError{{"to_site_id", "no such site"}}}
			}
			return err
		}
	}
	return nil
}

// apply carries out a transfer or retirement inside tx, with every event.
func (s *Service) apply(ctx context.Context, tx Tx, a Actor, o Operator, c Change, now time.Time) (Operator, []opgate.SessionID, error) {
	if err := s.check(ctx, tx, o, c); err != nil {
		return o, nil, err
	}
	from := o.SiteID
	why := string(c.Kind)
	if c.Kind == ChangeTransfer {
		why = "transferred"
		o.SiteID = c.ToSiteID
	} else {
		why = "retired"
		o.Status = Retired
	}
	o.StatusChanged = now
	ended, err := s.endRights(ctx, tx, a, o.ID, from, c.Reason, why, now)
	if err != nil {
		return o, nil, err
	}
	if err := tx.UpdateOperator(ctx, o); err != nil {
		return o, nil, err
	}
	typ := audit.OperatorTransferred
	d := map[string]any{"from_site_id": string(from)}
	if c.Kind == ChangeRetire {
		typ = audit.OperatorRetired
	} else {
		d["to_site_id"] = string(c.ToSiteID)
	}
	if c.ID != "" {
		d["change_id"] = string(c.ID)
	}
	e := a.event(typ, now)
	e.OperatorID, e.SiteID, e.Resource, e.Reason, e.Data = o.ID, from, "operator:"+string(o.ID), c.Reason, audit.D(d)
	_, err = tx.AppendAudit(ctx, e)
	return o, ended, err
}

// endRights ends every grant, collects every card and ends every session
// of an operator, each with its own event, so that the history shows
// exactly which rights ended and why.
func (s *Service) endRights(ctx context.Context, tx Tx, a Actor, id opgate.OperatorID, site opgate.SiteID, reason, why string, now time.Time) ([]opgate.SessionID, error) {
	grants, err := tx.EndGrants(ctx, id, now, a.ID, reason)
	if err != nil {
		return nil, err
	}
	cards, err := tx.CollectCards(ctx, id, now)
	if err != nil {
		return nil, err
	}
	sessions, err := tx.EndOperatorSessions(ctx, id, now, why)
	if err != nil {
		return nil, err
	}
	emit := func(typ audit.Type, resource string) error {
		e := a.event(typ, now)
		e.OperatorID, e.SiteID, e.Resource, e.Reason = id, site, resource, reason
		e.Data = audit.D(map[string]any{"cause": why})
		_, err := tx.AppendAudit(ctx, e)
		return err
	}
	for _, g := range grants {
		if err := emit(audit.GrantRevoked, "grant:"+string(g)); err != nil {
			return nil, err
		}
	}
	for _, c := range cards {
		if err := emit(audit.CardCollected, "card:"+string(c)); err != nil {
			return nil, err
		}
	}
	for _, ss := range sessions {
		if err := emit(audit.SessionEnded, "session:"+string(ss)); err != nil {
			return nil, err
		}
	}
	return sessions, nil
}

// Suspend stops an operator on leave (R1.7): sessions end, grants stay but
// count for nothing until reinstatement.
func (s *Service) Suspend(ctx context.Context, a Actor, id opgate.OperatorID, reason string) (Operator, error) {
	return s.setStatus(ctx, a, id, reason, Active, Suspended, audit.OperatorSuspended)
}

// Reinstate ends a suspension.
func (s *Service) Reinstate(ctx context.Context, a Actor, id opgate.OperatorID, reason string) (Operator, error) {
	return s.setStatus(ctx, a, id, reason, Suspended, Active, audit.OperatorReinstated)
}

func (s *Service) setStatus(ctx context.Context, a Actor, id opgate.OperatorID, reason string, from, to Status, typ audit.Type) (Operator, error) {
	if err := requireReason(reason); err != nil {
		return Operator{}, err
	}
	if _, err := s.target(ctx, a, id, ""); err != nil {
		return Operator{}, err
	}
	if a.ID == id {
		return Operator{}, fmt.Errorf("%w: an operator cannot change their own status", ErrInvalidState)
	}
	now := s.clk.Now()
	var o Operator
	var ended []opgate.SessionID
	err := s.db.InTx(ctx, func(tx Tx) (err error) {
		if o, err = tx.GetOperatorForUpdate(ctx, id); err != nil {
			return notFound(err)
		}
		if o.Status != from {
			return fmt.Errorf("%w: operator %s is %s", ErrInvalidState, id, o.Status)
		}
		o.Status, o.StatusChanged = to, now
		if err := tx.UpdateOperator(ctx, o); err != nil {
			return err
		}
		if to == Suspended {
			if ended, err = tx.EndOperatorSessions(ctx, id, now, "suspended"); err != nil {
				return err
			}
			for _, ss := range ended {
				e := a.event(audit.SessionEnded, now)
				e.OperatorID, e.SiteID, e.Resource, e.Reason = id, o.SiteID, "session:"+string(ss), reason
				if _, err := tx.AppendAudit(ctx, e); err != nil {
					return err
				}
			}
		}
		e := a.event(typ, now)
		e.OperatorID, e.SiteID, e.Resource, e.Reason = id, o.SiteID, "operator:"+string(id), reason
		_, err = tx.AppendAudit(ctx, e)
		return err
	})
	if err == nil {
		s.ended(ctx, ended)
	}
	return o, err
}

// Unlock lifts a login lock, temporary or permanent, and resets the count
// of locks in a row (R2.4). Only a chief of the operator's site does this.
func (s *Service) Unlock(ctx context.Context, a Actor, id opgate.OperatorID, reason string) (Operator, error) {
	if err := requireReason(reason); err != nil {
		return Operator{}, err
	}
	if _, err := s.target(ctx, a, id, ""); err != nil {
		return Operator{}, err
	}
	if a.ID == id {
		return Operator{}, fmt.Errorf("%w: an operator cannot unlock themselves", ErrInvalidState)
	}
	now := s.clk.Now()
	var o Operator
	err := s.db.InTx(ctx, func(tx Tx) (err error) {
		if o, err = tx.GetOperatorForUpdate(ctx, id); err != nil {
			return notFound(err)
		}
		l, err := tx.GetLock(ctx, id)
		if err != nil {
			return err
		}
		if err := tx.PutLock(ctx, Lock{OperatorID: id}); err != nil {
			return err
		}
		e := a.event(audit.OperatorUnlocked, now)
		e.OperatorID, e.SiteID, e.Resource, e.Reason = id, o.SiteID, "operator:"+string(id), reason
		d := map[string]any{"was_locked": l.Locked(now), "was_permanent": l.Permanent, "failures": l.Failures}
		if !l.Until.IsZero() {
			d["locked_until"] = l.Until.Format(time.RFC3339Nano)
		}
		e.Data = audit.D(d)
		_, err = tx.AppendAudit(ctx, e)
		return err
	})
	return o, err
}

// ListChanges lists the scheduled changes the actor may see: all of them
// for a holder of operator.manage at every site, else those whose operator
// is at, or moving to, one of the actor's sites.
func (s *Service) ListChanges(ctx context.Context, a Actor, f ChangeFilter) ([]Change, error) {
	sites, err := s.authz.Sites(ctx, a.ID, roles.OperatorManage)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, ErrForbidden
	}
	var out []Change
	err = s.db.View(ctx, func(tx Tx) error {
		all, err := tx.ListChanges(ctx, f)
		if err != nil {
			return err
		}
		if slices.Contains(sites, opgate.AllSites) {
			out = all
			return nil
		}
		for _, c := range all {
			o, err := tx.GetOperator(ctx, c.OperatorID)
			if err != nil {
				return err
			}
			if slices.Contains(sites, o.SiteID) || slices.Contains(sites, c.ToSiteID) {
				out = append(out, c)
			}
		}
		return nil
	})
	return out, err
}

// CancelChange cancels a pending change.
func (s *Service) CancelChange(ctx context.Context, a Actor, id opgate.ChangeID, reason string) error {
	var c Change
	err := s.db.View(ctx, func(tx Tx) (err error) { c, err = tx.GetChange(ctx, id); return })
	if isNotFound(err) {
		return s.hide(ctx, a, roles.OperatorManage, nil)
	}
	if err != nil {
		return err
	}
	if _, err := s.target(ctx, a, c.OperatorID, c.ToSiteID); err != nil {
		return err
	}
	now := s.clk.Now()
	return s.db.InTx(ctx, func(tx Tx) error {
		c, err := tx.GetChange(ctx, id)
		if err != nil {
			return notFound(err)
		}
		if c.Status != ChangePending {
			return fmt.Errorf("%w: change %s is %s", ErrConflict, id, c.Status)
		}
		c.Status, c.DoneAt = ChangeCancelled, now
		if err := tx.UpdateChange(ctx, c); err != nil {
			return err
		}
		e := a.event(audit.ChangeCancelled, now)
		e.OperatorID, e.Resource, e.Reason = c.OperatorID, "change:"+string(id), reason
		_, err = tx.AppendAudit(ctx, e)
		return err
	})
}

// Sweep applies every change now due and expires operators past their end
// date. The scheduler calls it on a ticker; tests call it after moving the
// clock. Each batch is one transaction whose claimed rows other replicas
// skip, so every change applies exactly once.
func (s *Service) Sweep(ctx context.Context) (applied int, err error) {
	for {
		n, err := s.sweepChanges(ctx)
		applied += n
		if err != nil || n < s.batch {
			if err != nil {
				return applied, err
			}
			break
		}
	}
	for {
		n, err := s.sweepExpiry(ctx)
		applied += n
		if err != nil || n < s.batch {
			return applied, err
		}
	}
}

func (s *Service) sweepChanges(ctx context.Context) (int, error) {
	now := s.clk.Now()
	var ended []opgate.SessionID
	n := 0
	err := s.db.InTx(ctx, func(tx Tx) error {
		ended, n = ended[:0], 0
		due, err := tx.ClaimDueChanges(ctx, now, s.batch)
		if err != nil {
			return err
		}
		for _, c := range due {
			n++
			a := Actor{ID: c.CreatedBy}
			o, err := tx.GetOperatorForUpdate(ctx, c.OperatorID)
			var e []opgate.SessionID
			if err == nil {
				_, e, err = s.apply(ctx, tx, a, o, c, now)
			}
			c.DoneAt = now
			switch {
			case err == nil:
				c.Status = ChangeApplied
				ended = append(ended, e...)
			case errors.Is(err, ErrInvalidState) || errors.Is(err, ErrValidation) || errors.Is(err, ErrConflict) || isNotFound(err):
				// The operator's state moved on since the change was
				// dated: record why it did not apply instead of retrying.
				c.Status, c.Error = ChangeFailed, err.Error()
				ev := a.event(audit.ChangeFailed, now)
				ev.OperatorID, ev.Resource, ev.Reason = c.OperatorID, "change:"+string(c.ID), c.Reason
				ev.Data = audit.D(map[string]any{"error": err.Error()})
				if _, err := tx.AppendAudit(ctx, ev); err != nil {
					return err
				}
			default:
				return err
			}
			if err := tx.UpdateChange(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.ended(ctx, ended)
	return n, nil
}

func (s *Service) sweepExpiry(ctx context.Context) (int, error) {
	now := s.clk.Now()
	var ended []opgate.SessionID
	n := 0
	err := s.db.InTx(ctx, func(tx Tx) error {
		ended, n = ended[:0], 0
		due, err := tx.DueOperators(ctx, now, s.batch)
		if err != nil {
			return err
		}
		for _, o := range due {
			n++
			e, err := s.endRights(ctx, tx, Actor{}, o.ID, o.SiteID, "valid_until passed", "expired", now)
			if err != nil {
				return err
			}
			ended = append(ended, e...)
			o.Status, o.StatusChanged = Expired, now
			if err := tx.UpdateOperator(ctx, o); err != nil {
				return err
			}
			ev := audit.Event{Type: audit.OperatorExpired, At: now, OperatorID: o.ID, SiteID: o.SiteID, Resource: "operator:" + string(o.ID), Reason: "valid_until passed"}
			ev.Data = audit.D(map[string]any{"valid_until": o.ValidUntil.Format(time.RFC3339Nano)})
			if _, err := tx.AppendAudit(ctx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.ended(ctx, ended)
	return n, nil
}
