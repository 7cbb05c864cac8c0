package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/review"
)

// ---- review campaigns

const reviewCols = `review_id, site_id, due_at, on_unreviewed, status, created_by, created_at, closed_at, closed_by, schedule_id`

func scanReview(s scanner) (review.Campaign, error) {
	var c review.Campaign
	var due, created int64
	var closed sql.NullInt64
	err := s.Scan(&c.ID, &c.SiteID, &due, &c.OnUnreviewed, &c.Status, &c.CreatedBy, &created, &closed, &c.ClosedBy, &c.ScheduleID)
	c.DueAt, c.CreatedAt, c.ClosedAt = at(due), at(created), fromMicros(closed)
	return c, err
}

const itemCols = `review_id, item_id, grant_id, operator_id, operator_name, role_id, granted_by, granted_at, valid_until, last_login_at, last_used_at, hints, decision, reason, decided_by, decided_at`

func scanItem(s scanner) (review.Item, error) {
	var it review.Item
	var granted int64
	var until, login, used, decided sql.NullInt64
	var hints string
	err := s.Scan(&it.ReviewID, &it.ID, &it.GrantID, &it.OperatorID, &it.OperatorName, &it.RoleID, &it.GrantedBy, &granted, &until, &login, &used,
		&hints, &it.Decision, &it.Reason, &it.DecidedBy, &decided)
	it.GrantedAt, it.ValidUntil, it.LastLoginAt, it.LastUsedAt, it.DecidedAt = at(granted), fromMicros(until), fromMicros(login), fromMicros(used), fromMicros(decided)
	it.Hints = []string{}
	if hints != "" {
		it.Hints = strings.Split(hints, " ")
	}
	return it, err
}

// itemChunk bounds one multi-row insert of items (16 parameters a row).
const itemChunk = 500

func (t *tx) CreateReview(ctx context.Context, c review.Campaign, items []review.Item) error {
	if _, err := t.exec(ctx, `INSERT INTO review_campaigns (`+reviewCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.SiteID, must(c.DueAt), c.OnUnreviewed, c.Status, c.CreatedBy, must(c.CreatedAt), micros(c.ClosedAt), c.ClosedBy, c.ScheduleID); err != nil {
		return err
	}
	// Thousands of items go in a few multi-row inserts, not one round
	// trip each.
	for len(items) > 0 {
		n := min(len(items), itemChunk)
		var b strings.Builder
		b.WriteString(`INSERT INTO review_items (` + itemCols + `) VALUES `)
		args := make([]any, 0, n*16)
		for i, it := range items[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, c.ID, it.ID, it.GrantID, it.OperatorID, it.OperatorName, it.RoleID, it.GrantedBy, must(it.GrantedAt), micros(it.ValidUntil),
				micros(it.LastLoginAt), micros(it.LastUsedAt), strings.Join(it.Hints, " "), it.Decision, it.Reason, it.DecidedBy, micros(it.DecidedAt))
		}
		if _, err := t.exec(ctx, b.String(), args...); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

func (t *tx) GetReview(ctx context.Context, id string) (review.Campaign, error) {
	c, err := scanReview(t.row(ctx, `SELECT `+reviewCols+` FROM review_campaigns WHERE review_id = ?`+t.forUpdate(), id))
	return c, t.db.translate(err)
}

func (t *tx) UpdateReview(ctx context.Context, c review.Campaign) error {
	return t.execOne(ctx, `UPDATE review_campaigns SET status = ?, closed_at = ?, closed_by = ? WHERE review_id = ?`, c.Status, micros(c.ClosedAt), c.ClosedBy, c.ID)
}

func (t *tx) ListReviews(ctx context.Context, f review.Filter) ([]review.Campaign, error) {
	var w where
	w.addIf(f.SiteID != "", "site_id = ?", f.SiteID)
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.After != "", "review_id > ?", f.After)
	w.args = append(w.args, limit(f.Limit))
	r, err := t.rows(ctx, `SELECT `+reviewCols+` FROM review_campaigns`+w.String()+` ORDER BY review_id LIMIT ?`, w.args...)
	return collect(t, r, err, scanReview)
}

func (t *tx) DueReviews(ctx context.Context, now time.Time, n int) ([]review.Campaign, error) {
	r, err := t.rows(ctx, `SELECT `+reviewCols+` FROM review_campaigns WHERE status = 'open' AND due_at <= ? ORDER BY due_at, review_id LIMIT ?`, must(now), limit(n))
	return collect(t, r, err, scanReview)
}

func (t *tx) ReviewItems(ctx context.Context, id, after string, n int) ([]review.Item, error) {
	r, err := t.rows(ctx, `SELECT `+itemCols+` FROM review_items WHERE review_id = ? AND item_id > ? ORDER BY item_id LIMIT ?`, id, after, limit(n))
	return collect(t, r, err, scanItem)
}

func (t *tx) GetReviewItem(ctx context.Context, id, item string) (review.Item, error) {
	it, err := scanItem(t.row(ctx, `SELECT `+itemCols+` FROM review_items WHERE review_id = ? AND item_id = ?`+t.forUpdate(), id, item))
	return it, t.db.translate(err)
}

func (t *tx) UpdateReviewItem(ctx context.Context, it review.Item) error {
	return t.execOne(ctx, `UPDATE review_items SET decision = ?, reason = ?, decided_by = ?, decided_at = ? WHERE review_id = ? AND item_id = ?`,
		it.Decision, it.Reason, it.DecidedBy, micros(it.DecidedAt), it.ReviewID, it.ID)
}

// grantUse is the latest decision in a flush naming one grant.
type grantUse struct {
	grant string
	at    int64
}

// grantUses reads the grants the decisions among events name, each with
// its latest time, in the order first named.
func grantUses(events []audit.Event) []grantUse {
	var out []grantUse
	for _, e := range events {
		if e.Type != audit.AuthzDecided || len(e.Data) == 0 {
			continue
		}
		// A path lookup, not a decode: this runs on the committer every
		// writer waits for, once per decision.
		g := gjson.GetBytes(e.Data, "grant_id")
		if g.Type != gjson.String || g.Str == "" {
			continue
		}
		at := must(e.At)
		i := slices.IndexFunc(out, func(u grantUse) bool { return u.grant == g.Str })
		switch {
		case i < 0:
			out = append(out, grantUse{g.Str, at})
		case at > out[i].at:
			out[i].at = at
		}
	}
	return out
}

// noteGrantUses keeps grant_last_use in step with the decisions being
// written, in their transaction: it is what the history says, kept as one
// row per grant rather than an index entry per decision (migration
// 00008), and never moves back in time.
func (t *tx) noteGrantUses(ctx context.Context, uses []grantUse) error {
	for len(uses) > 0 {
		n := min(len(uses), auditChunk)
		var b strings.Builder
		b.WriteString(`INSERT INTO grant_last_use (grant_id, at) VALUES `)
		args := make([]any, 0, 2*n)
		for i, u := range uses[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, u.grant, u.at)
		}
		b.WriteString(` ON CONFLICT (grant_id) DO UPDATE SET at = CASE WHEN excluded.at > grant_last_use.at THEN excluded.at ELSE grant_last_use.at END`)
		if _, err := t.exec(ctx, b.String(), args...); err != nil {
			return err
		}
		uses = uses[n:]
	}
	return nil
}

// LastUses reads the last decision naming each grant.
func (t *tx) LastUses(ctx context.Context, grants []opgate.GrantID) (map[opgate.GrantID]time.Time, error) {
	out := make(map[opgate.GrantID]time.Time, len(grants))
	if len(grants) == 0 {
		return out, nil
	}
	list := `json_each(?) AS g`
	if t.db.D.Name == "postgres" {
		list = `json_array_elements_text(CAST(? AS json)) AS g(value)`
	}
	ids, _ := json.Marshal(grants)
	r, err := t.rows(ctx, `SELECT u.grant_id, u.at FROM `+list+` JOIN grant_last_use u ON u.grant_id = g.value`, string(ids))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for r.Next() {
		var g string
		var last int64
		if err := r.Scan(&g, &last); err != nil {
			return nil, t.db.translate(err)
		}
		out[opgate.GrantID(g)] = at(last)
	}
	return out, t.db.translate(r.Err())
}

func (t *tx) Operators(ctx context.Context, ids []opgate.OperatorID) ([]lifecycle.Operator, error) {
	var out []lifecycle.Operator
	for len(ids) > 0 {
		n := min(len(ids), 500)
		in, args := inList(ids[:n])
		r, err := t.rows(ctx, `SELECT `+operatorCols+` FROM operators WHERE operator_id IN (`+in+`)`, args...)
		got, err := collect(t, r, err, scanOperator)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		ids = ids[n:]
	}
	return out, nil
}

// ---- schedules

const scheduleCols = `schedule_id, site_id, every_months, due_after_s, on_unreviewed, next_at, created_by, created_at`

func scanSchedule(s scanner) (review.Schedule, error) {
	var sc review.Schedule
	var due, next, created int64
	err := s.Scan(&sc.ID, &sc.SiteID, &sc.EveryMonths, &due, &sc.OnUnreviewed, &next, &sc.CreatedBy, &created)
	sc.DueAfter, sc.NextAt, sc.CreatedAt = time.Duration(due)*time.Second, at(next), at(created)
	return sc, err
}

func (t *tx) CreateReviewSchedule(ctx context.Context, sc review.Schedule) error {
	_, err := t.exec(ctx, `INSERT INTO review_schedules (`+scheduleCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		sc.ID, sc.SiteID, sc.EveryMonths, int64(sc.DueAfter/time.Second), sc.OnUnreviewed, must(sc.NextAt), sc.CreatedBy, must(sc.CreatedAt))
	return err
}

func (t *tx) ListReviewSchedules(ctx context.Context, site opgate.SiteID) ([]review.Schedule, error) {
	var w where
	w.addIf(site != "", "site_id = ?", site)
	r, err := t.rows(ctx, `SELECT `+scheduleCols+` FROM review_schedules`+w.String()+` ORDER BY schedule_id`, w.args...)
	return collect(t, r, err, scanSchedule)
}

func (t *tx) ClaimDueSchedules(ctx context.Context, now time.Time, n int) ([]review.Schedule, error) {
	r, err := t.rows(ctx, `SELECT `+scheduleCols+` FROM review_schedules WHERE next_at <= ? ORDER BY next_at, schedule_id LIMIT ?`+t.skipLocked(), must(now), limit(n))
	return collect(t, r, err, scanSchedule)
}

func (t *tx) UpdateReviewSchedule(ctx context.Context, sc review.Schedule) error {
	return t.execOne(ctx, `UPDATE review_schedules SET next_at = ? WHERE schedule_id = ?`, must(sc.NextAt), sc.ID)
}

func (t *tx) DeleteReviewSchedule(ctx context.Context, id string) error {
	return t.execOne(ctx, `DELETE FROM review_schedules WHERE schedule_id = ?`, id)
}

// DormantOperators lists active operators unused since before cutoff; an
// ID never used counts from its issue (R1.6), and a reinstated one from
// its reinstatement.
func (t *tx) DormantOperators(ctx context.Context, cutoff time.Time, n int) ([]lifecycle.Operator, error) {
	r, err := t.rows(ctx, `SELECT `+operatorCols+` FROM operators WHERE status = 'active' AND COALESCE(last_login_at, issued_at) < ? AND status_changed_at < ? ORDER BY operator_id LIMIT ?`,
		must(cutoff), must(cutoff), limit(n))
	return collect(t, r, err, scanOperator)
}
