package review

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// ScheduleRequest asks for a campaign at a site every EveryMonths months,
// the first at FirstAt (now when zero).
type ScheduleRequest struct {
	SiteID       opgate.SiteID
	EveryMonths  int
	DueAfter     time.Duration // zero: 14 days
	OnUnreviewed Unreviewed
	FirstAt      time.Time
}

// AddSchedule records a schedule, audited.
func (s *Service) AddSchedule(ctx context.Context, a Actor, r ScheduleRequest) (Schedule, error) {
	if err := s.az.Require(ctx, a.ID, roles.ReviewPerform, r.SiteID); err != nil {
		return Schedule{}, err
	}
	now := s.clk.Now()
	if r.OnUnreviewed == "" {
		r.OnUnreviewed = Escalate
	}
	if r.DueAfter == 0 {
		r.DueAfter = 14 * 24 * time.Hour
	}
	if r.FirstAt.IsZero() {
		r.FirstAt = now
	}
	var fe []FieldError
	if r.EveryMonths < 1 || r.EveryMonths > 36 {
		fe = append(fe, FieldError{"every_months", "between 1 and 36"})
	}
	if r.DueAfter < time.Second || r.DueAfter > 366*24*time.Hour {
		fe = append(fe, FieldError{"due_after_s", "between 1 second and 366 days"})
	}
	if !validUnreviewed(r.OnUnreviewed) {
		fe = append(fe, FieldError{"on_unreviewed", "one of revoke, escalate"})
	}
	if fe != nil {
		return Schedule{}, &ValidationError{Fields: fe}
	}
	sc := Schedule{ID: lifecycle.NewID("RS-", 10), SiteID: r.SiteID, EveryMonths: r.EveryMonths, DueAfter: r.DueAfter, OnUnreviewed: r.OnUnreviewed,
		NextAt: r.FirstAt.UTC().Truncate(time.Microsecond), CreatedBy: a.ID, CreatedAt: now}
	err := s.db.InTx(ctx, func(tx Tx) error {
		if _, err := tx.GetSite(ctx, r.SiteID); err != nil {
			if errors.Is(err, opgate.ErrNotFound) {
				return &ValidationError{Fields: []FieldError{{"site_id", "no such site"}}}
			}
			return err
		}
		if err := tx.CreateReviewSchedule(ctx, sc); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ReviewScheduled, At: now, ActorID: a.ID, TerminalID: a.TerminalID, SiteID: sc.SiteID,
			Resource: "review_schedule:" + sc.ID, Data: audit.D(map[string]any{"every_months": sc.EveryMonths, "next_at": sc.NextAt.Format(time.RFC3339),
				"due_after_s": int64(sc.DueAfter / time.Second), "on_unreviewed": string(sc.OnUnreviewed)})})
		return err
	})
	return sc, err
}

// Schedules lists the schedules of a site (every site for "").
func (s *Service) Schedules(ctx context.Context, a Actor, site opgate.SiteID) ([]Schedule, error) {
	where := site
	if where == "" {
		where = opgate.AllSites
	}
	if err := s.az.Require(ctx, a.ID, roles.ReviewPerform, where); err != nil {
		return nil, err
	}
	var out []Schedule
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListReviewSchedules(ctx, site); return })
	return out, err
}

// RemoveSchedule deletes a schedule, audited.
func (s *Service) RemoveSchedule(ctx context.Context, a Actor, id string) error {
	var sc Schedule
	err := s.db.View(ctx, func(tx Tx) error {
		all, err := tx.ListReviewSchedules(ctx, "")
		for _, x := range all {
			if x.ID == id {
				sc = x
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if sc.ID == "" || s.az.Require(ctx, a.ID, roles.ReviewPerform, sc.SiteID) != nil {
		return s.hide(ctx, a)
	}
	return s.db.InTx(ctx, func(tx Tx) error {
		if err := tx.DeleteReviewSchedule(ctx, id); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ReviewUnscheduled, At: s.clk.Now(), ActorID: a.ID, TerminalID: a.TerminalID,
			SiteID: sc.SiteID, Resource: "review_schedule:" + sc.ID})
		return err
	})
}

// Sweep opens the campaigns whose schedule is due and closes the campaigns
// past their due date (R5.1: unreviewed items are escalated or revoked at
// the deadline). The scheduler calls it; tests call it after moving the
// clock. It returns how many campaigns it opened and closed.
func (s *Service) Sweep(ctx context.Context) (opened, closed int, err error) {
	now := s.clk.Now()
	for {
		n := 0
		err := s.db.InTx(ctx, func(tx Tx) error {
			n = 0
			due, err := tx.ClaimDueSchedules(ctx, now, 50)
			if err != nil {
				return err
			}
			for _, sc := range due {
				// A schedule that fell behind (a server down for months)
				// opens one campaign, not one per missed period.
				for !sc.NextAt.After(now) {
					sc.NextAt = sc.NextAt.AddDate(0, sc.EveryMonths, 0)
				}
				if err := tx.UpdateReviewSchedule(ctx, sc); err != nil {
					return err
				}
				r := OpenRequest{SiteID: sc.SiteID, DueAt: now.Add(sc.DueAfter), OnUnreviewed: sc.OnUnreviewed}
				if _, err := s.open(ctx, tx, Actor{}, r, sc.ID, now); err != nil {
					var ve *ValidationError
					if errors.As(err, &ve) {
						continue // the site is gone; the schedule waits for it
					}
					return err
				}
				n++
			}
			return nil
		})
		opened += n
		if err != nil {
			return opened, closed, fmt.Errorf("review: open scheduled: %w", err)
		}
		if n < 50 {
			break
		}
	}
	for {
		var due []Campaign
		if err := s.db.View(ctx, func(tx Tx) (err error) { due, err = tx.DueReviews(ctx, now, 20); return }); err != nil {
			return opened, closed, err
		}
		for _, c := range due {
			err := s.db.InTx(ctx, func(tx Tx) error {
				_, _, err := s.close(ctx, tx, Actor{}, c.ID, now)
				return err
			})
			switch {
			case err == nil:
				closed++
			case errors.Is(err, ErrConflict):
				// Another replica closed it first.
			default:
				return opened, closed, fmt.Errorf("review: close due: %w", err)
			}
		}
		if len(due) < 20 {
			return opened, closed, nil
		}
	}
}
