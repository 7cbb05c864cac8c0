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
			res, err := s.applyBatch(ctx, tx, []Change{c}, func(Change) Actor { return a }, now)
			if err != nil {
				return err
			}
			if r := res[0]; r.err != nil {
				return r.err
			}
			out.Operator, ended = res[0].op, res[0].sessions
			return nil
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
		if c.Kind == ChangeTransfer {
			c.FromSiteID = o.SiteID
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
	if err := operatorCheck(o, c); err != nil {
		return err
	}
	if c.Kind == ChangeTransfer {
		return siteExists(ctx, tx, c.ToSiteID)
	}
	return nil
}

// operatorCheck is what check judges of the operator alone.
func operatorCheck(o Operator, c Change) error {
	if o.Status == Retired {
		return fmt.Errorf("%w: operator %s is retired", ErrInvalidState, o.ID)
	}
	if c.Kind != ChangeTransfer {
		return nil
	}
	if o.Status == Expired {
		return fmt.Errorf("%w: operator %s has expired", ErrInvalidState, o.ID)
	}
	// A dated transfer moves the operator from where they were when it
	// was decided. Already there (a duplicate), or moved elsewhere since,
	// it would end the rights the new site has given them, on the word of
	// a chief who may no longer manage them.
	if o.SiteID == c.ToSiteID {
		return fmt.Errorf("%w: operator %s is already at %s", ErrConflict, o.ID, c.ToSiteID)
	}
	if c.FromSiteID != "" && o.SiteID != c.FromSiteID {
		return fmt.Errorf("%w: operator %s moved from %s to %s after this transfer was scheduled", ErrConflict, o.ID, c.FromSiteID, o.SiteID)
	}
	return nil
}

// siteExists refuses a transfer to a site that does not exist.
func siteExists(ctx context.Context, tx Tx, site opgate.SiteID) error {
	if _, err := tx.GetSite(ctx, site); err != nil {
		if isNotFound(err) {
			return &ValidationError{Fields: []FieldError{{"to_site_id", "no such site"}}}
		}
		return err
	}
	return nil
}

// result is what applying one change did.
type result struct {
	op       Operator
	sessions []opgate.SessionID
	err      error // why the change could not apply; the batch goes on
}

// applyBatch carries out transfers and retirements inside tx, each with
// every event, in a handful of statements however many changes there are:
// the April 1 reshuffle moves thousands of operators at once (R1.5). A
// change the operator's state no longer allows gets its error in its
// result and the others go on; a storage error aborts the whole batch.
func (s *Service) applyBatch(ctx context.Context, tx Tx, cs []Change, actor func(Change) Actor, now time.Time) ([]result, error) {
	ids := make([]opgate.OperatorID, len(cs))
	for i, c := range cs {
		ids[i] = c.OperatorID
	}
	locked, err := tx.GetOperatorsForUpdate(ctx, ids)
	if err != nil {
		return nil, err
	}
	ops := make(map[opgate.OperatorID]Operator, len(locked))
	for _, o := range locked {
		ops[o.ID] = o
	}
	res := make([]result, len(cs))
	sites := map[opgate.SiteID]error{}
	// Changes that can apply, grouped by what their statements share.
	type key struct {
		by     opgate.OperatorID
		reason string
		kind   ChangeKind
		to     opgate.SiteID
	}
	groups := map[key][]int{}
	var order []key
	seen := map[opgate.OperatorID]bool{}
	for i, c := range cs {
		o, ok := ops[c.OperatorID]
		switch {
		case !ok:
			res[i].err = ErrNotFound
		case seen[o.ID]:
			// Two changes of one operator due together: the first wins,
			// the second is judged against the state it leaves.
			res[i].err = fmt.Errorf("%w: another change of operator %s applies in the same instant", ErrConflict, o.ID)
		default:
			res[i].err = s.checkCached(ctx, tx, o, c, sites)
		}
		if res[i].err != nil {
			continue
		}
		seen[o.ID] = true
		k := key{actor(c).ID, c.Reason, c.Kind, c.ToSiteID}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	type rights struct{ grants, cards, sessions []string }
	byOp := map[opgate.OperatorID]*rights{}
	for _, k := range order {
		idx := groups[k]
		gids := make([]opgate.OperatorID, len(idx))
		for j, i := range idx {
			gids[j] = cs[i].OperatorID
			byOp[gids[j]] = &rights{}
		}
		why := "transferred"
		if k.kind == ChangeRetire {
			why = "retired"
		}
		grants, err := tx.EndGrants(ctx, gids, now, k.by, k.reason)
		if err != nil {
			return nil, err
		}
		cards, err := tx.CollectCards(ctx, gids, now)
		if err != nil {
			return nil, err
		}
		sessions, err := tx.EndOperatorSessions(ctx, gids, now, why)
		if err != nil {
			return nil, err
		}
		for _, e := range grants {
			byOp[e.OperatorID].grants = append(byOp[e.OperatorID].grants, e.ID)
		}
		for _, e := range cards {
			byOp[e.OperatorID].cards = append(byOp[e.OperatorID].cards, e.ID)
		}
		for _, e := range sessions {
			byOp[e.OperatorID].sessions = append(byOp[e.OperatorID].sessions, e.ID)
		}
		if k.kind == ChangeTransfer {
			err = tx.MoveOperators(ctx, gids, k.to)
		} else {
			err = tx.SetOperatorStatus(ctx, gids, Retired, now)
		}
		if err != nil {
			return nil, err
		}
	}
	// Events, change by change, in the order the changes came.
	for i, c := range cs {
		if res[i].err != nil {
			continue
		}
		a, o, r := actor(c), ops[c.OperatorID], byOp[c.OperatorID]
		from, why, typ := o.SiteID, "transferred", audit.OperatorTransferred
		d := map[string]any{"from_site_id": string(from)}
		if c.Kind == ChangeRetire {
			why, typ = "retired", audit.OperatorRetired
			o.Status, o.StatusChanged = Retired, now
		} else {
			// A transfer changes the site, not the status: an ID nobody
			// uses stays dormant however often it is moved.
			d["to_site_id"] = string(c.ToSiteID)
			o.SiteID = c.ToSiteID
		}
		if c.ID != "" {
			d["change_id"] = string(c.ID)
		}
		if err := s.rightsEvents(ctx, tx, a, o.ID, from, c.Reason, why, now, r.grants, r.cards, r.sessions); err != nil {
			return nil, err
		}
		e := a.event(typ, now)
		e.OperatorID, e.SiteID, e.Resource, e.Reason, e.Data = o.ID, from, "operator:"+string(o.ID), c.Reason, audit.D(d)
		if _, err := tx.AppendAudit(ctx, e); err != nil {
			return nil, err
		}
		res[i].op = o
		for _, id := range r.sessions {
			res[i].sessions = append(res[i].sessions, opgate.SessionID(id))
		}
	}
	return res, nil
}

// checkCached is check with the batch's answers about sites remembered.
func (s *Service) checkCached(ctx context.Context, tx Tx, o Operator, c Change, sites map[opgate.SiteID]error) error {
	// Everything about the operator is judged change by change; only the
	// destination's existence is shared by the changes of a batch.
	if err := operatorCheck(o, c); err != nil || c.Kind != ChangeTransfer {
		return err
	}
	err, ok := sites[c.ToSiteID]
	if !ok {
		err = siteExists(ctx, tx, c.ToSiteID)
		sites[c.ToSiteID] = err
	}
	return err
}

// rightsEvents records, one event each, the grants, cards and sessions a
// change ended, so that the history shows exactly which rights ended and
// why.
func (s *Service) rightsEvents(ctx context.Context, tx Tx, a Actor, id opgate.OperatorID, site opgate.SiteID, reason, why string, now time.Time, grants, cards, sessions []string) error {
	data := audit.D(map[string]any{"cause": why})
	for _, list := range []struct {
		typ    audit.Type
		prefix string
		ids    []string
	}{{audit.GrantRevoked, "grant:", grants}, {audit.CardCollected, "card:", cards}, {audit.SessionEnded, "session:", sessions}} {
		for _, rid := range list.ids {
			e := a.event(list.typ, now)
			e.OperatorID, e.SiteID, e.Resource, e.Reason, e.Data = id, site, list.prefix+rid, reason, data
			if _, err := tx.AppendAudit(ctx, e); err != nil {
				return err
			}
		}
	}
	return nil
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
			ss, err := tx.EndOperatorSessions(ctx, []opgate.OperatorID{id}, now, "suspended")
			if err != nil {
				return err
			}
			var sids []string
			for _, e := range ss {
				sids = append(sids, e.ID)
				ended = append(ended, opgate.SessionID(e.ID))
			}
			if err := s.rightsEvents(ctx, tx, a, id, o.SiteID, reason, "suspended", now, nil, nil, sids); err != nil {
				return err
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
		if o.Status == Retired {
			return fmt.Errorf("%w: operator %s is retired", ErrInvalidState, id)
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
		d := map[string]any{"was_locked": l.Locked(now), "was_permanent": l.Permanent, "failures": len(l.Recent)}
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
	// The store selects by site: a page filtered after it was cut could
	// come back empty while a chief's own changes lay beyond it.
	f.Sites = nil
	if !slices.Contains(sites, opgate.AllSites) {
		f.Sites = sites
	}
	var out []Change
	err = s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListChanges(ctx, f); return })
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
		if err != nil || len(due) == 0 {
			return err
		}
		n = len(due)
		// Events of a scheduled change name who decided it, not the
		// scheduler that carried it out.
		res, err := s.applyBatch(ctx, tx, due, func(c Change) Actor { return Actor{ID: c.CreatedBy} }, now)
		if err != nil {
			return err
		}
		var applied []opgate.ChangeID
		for i, c := range due {
			r := res[i]
			if r.err == nil {
				applied = append(applied, c.ID)
				ended = append(ended, r.sessions...)
				continue
			}
			if !(errors.Is(r.err, ErrInvalidState) || errors.Is(r.err, ErrValidation) || errors.Is(r.err, ErrConflict) || errors.Is(r.err, ErrNotFound)) {
				return r.err
			}
			// The operator's state moved on since the change was dated:
			// record why it did not apply instead of retrying it forever.
			c.Status, c.DoneAt, c.Error = ChangeFailed, now, r.err.Error()
			if err := tx.UpdateChange(ctx, c); err != nil {
				return err
			}
			ev := Actor{ID: c.CreatedBy}.event(audit.ChangeFailed, now)
			ev.OperatorID, ev.Resource, ev.Reason = c.OperatorID, "change:"+string(c.ID), c.Reason
			ev.Data = audit.D(map[string]any{"error": r.err.Error()})
			if _, err := tx.AppendAudit(ctx, ev); err != nil {
				return err
			}
		}
		return tx.FinishChanges(ctx, applied, ChangeApplied, now)
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
		if err != nil || len(due) == 0 {
			return err
		}
		n = len(due)
		ids := make([]opgate.OperatorID, len(due))
		for i, o := range due {
			ids[i] = o.ID
		}
		const reason = "valid_until passed"
		grants, err := tx.EndGrants(ctx, ids, now, "", reason)
		if err != nil {
			return err
		}
		cards, err := tx.CollectCards(ctx, ids, now)
		if err != nil {
			return err
		}
		sessions, err := tx.EndOperatorSessions(ctx, ids, now, "expired")
		if err != nil {
			return err
		}
		if err := tx.SetOperatorStatus(ctx, ids, Expired, now); err != nil {
			return err
		}
		of := func(list []Ended, op opgate.OperatorID) []string {
			var out []string
			for _, e := range list {
				if e.OperatorID == op {
					out = append(out, e.ID)
				}
			}
			return out
		}
		for _, o := range due {
			ss := of(sessions, o.ID)
			if err := s.rightsEvents(ctx, tx, Actor{}, o.ID, o.SiteID, reason, "expired", now, of(grants, o.ID), of(cards, o.ID), ss); err != nil {
				return err
			}
			for _, id := range ss {
				ended = append(ended, opgate.SessionID(id))
			}
			ev := audit.Event{Type: audit.OperatorExpired, At: now, OperatorID: o.ID, SiteID: o.SiteID, Resource: "operator:" + string(o.ID), Reason: reason}
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
