package lifecycle

import (
	"context"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/roles"
)

// SuspendDormant suspends active operators who have not logged in for
// after, counted from their last login, issue or reinstatement, whichever
// is latest (R1.6, CL 10-4: unneeded IDs are not left usable), each with an
// operator.suspended event whose reason says so, their sessions ended.
// Holders of emergency.stop at every site are left alone: they are who
// resumes logins after an emergency, and suspending the last of them
// would leave nobody able to. It returns how many it suspended.
func (s *Service) SuspendDormant(ctx context.Context, after time.Duration) (int, error) {
	if after <= 0 {
		return 0, nil
	}
	now := s.clk.Now()
	var candidates []Operator
	if err := s.db.View(ctx, func(tx Tx) (err error) { candidates, err = tx.DormantOperators(ctx, now.Add(-after), s.batch); return }); err != nil {
		return 0, err
	}
	var ids []opgate.OperatorID
	for _, o := range candidates {
		if s.authz.Require(ctx, o.ID, roles.EmergencyStop, opgate.AllSites) == nil {
			continue
		}
		ids = append(ids, o.ID)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var ended []opgate.SessionID
	n := 0
	err := s.db.InTx(ctx, func(tx Tx) error {
		ended, n = ended[:0], 0
		ops, err := tx.GetOperatorsForUpdate(ctx, ids)
		if err != nil {
			return err
		}
		var sus []opgate.OperatorID
		for _, o := range ops {
			// Judged again under the lock: a login in between keeps it.
			// A reinstatement is a fresh start: the one who reinstated a
			// dormant ID meant it to be used, not suspended at the next
			// sweep before its owner could log in.
			last := o.LastLoginAt
			if last.IsZero() {
				last = o.IssuedAt
			}
			if o.StatusChanged.After(last) {
				last = o.StatusChanged
			}
			if o.Status == Active && now.Sub(last) >= after {
				sus = append(sus, o.ID)
			}
		}
		if err := tx.SetOperatorStatus(ctx, sus, Suspended, now); err != nil {
			return err
		}
		ss, err := tx.EndOperatorSessions(ctx, sus, now, "suspended")
		if err != nil {
			return err
		}
		for _, e := range ss {
			ended = append(ended, opgate.SessionID(e.ID))
		}
		for _, o := range ops {
			for _, id := range sus {
				if id != o.ID {
					continue
				}
				last := o.LastLoginAt
				e := Actor{}.event(audit.OperatorSuspended, now)
				e.OperatorID, e.SiteID, e.Resource, e.Reason = o.ID, o.SiteID, "operator:"+string(o.ID), "dormant"
				d := map[string]any{"dormant_after_s": int64(after / time.Second)}
				if !last.IsZero() {
					d["last_login_at"] = last.Format(time.RFC3339)
				}
				e.Data = audit.D(d)
				if _, err := tx.AppendAudit(ctx, e); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	if err == nil {
		s.ended(ctx, ended)
	}
	return n, err
}
