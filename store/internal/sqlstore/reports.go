package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

var _ report.Source = (*DB)(nil)

// jsonRows is the dialect's aggregate of rows into a JSON array of
// objects, ordered, with '[]' for none: fields are name/expression pairs.
func (db *DB) jsonRows(from, order string, fields ...string) string {
	var obj strings.Builder
	for i := 0; i < len(fields); i += 2 {
		if i > 0 {
			obj.WriteString(", ")
		}
		obj.WriteString("'" + fields[i] + "', " + fields[i+1])
	}
	if db.D.Name == "postgres" {
		return `COALESCE((SELECT json_agg(json_build_object(` + obj.String() + `) ORDER BY ` + order + `) FROM ` + from + `), '[]'::json)`
	}
	return `(SELECT json_group_array(json_object(` + obj.String() + `)) FROM (SELECT * FROM ` + from + ` ORDER BY ` + order + `))`
}

type ledgerCard struct {
	ID      string `json:"c"`
	Serial  string `json:"s"`
	Status  string `json:"st"`
	Enroll  int64  `json:"e"`
	Changed int64  `json:"ch"`
}

type ledgerGrant struct {
	ID     string `json:"g"`
	Role   string `json:"r"`
	Site   string `json:"si"`
	Status string `json:"st"`
	By     string `json:"b"`
	From   *int64 `json:"f"`
	Until  *int64 `json:"u"`
}

func ptrTime(p *int64) report.T {
	if p == nil {
		return report.T{}
	}
	return report.T(at(*p))
}

// Ledger streams the ledger in one query: each operator row carries its
// cards and current grants as JSON arrays aggregated by the engine through
// the per-operator indexes, so rows flow from the cursor to fn one at a
// time and memory stays flat however many operators there are.
func (db *DB) Ledger(ctx context.Context, site opgate.SiteID, now time.Time, fn func(report.LedgerRow) error) error {
	cards := db.jsonRows(`cards c WHERE c.operator_id = o.operator_id`, `enrolled_at, card_id`,
		"c", "card_id", "s", "serial", "st", "status", "e", "enrolled_at", "ch", "status_changed_at")
	grants := db.jsonRows(`grants g WHERE g.operator_id = o.operator_id AND g.status IN ('active', 'pending_approval')`, `grant_id`,
		"g", "grant_id", "r", "role_id", "si", "site_id", "st", "status", "b", "granted_by", "f", "valid_from", "u", "valid_until")
	q := `SELECT o.operator_id, o.staff_number, o.name, o.site_id, o.employment_type,
		CASE WHEN ` + idEnded("o.") + ` THEN 'expired'
			WHEN o.status = 'active' AND l.operator_id IS NOT NULL AND (l.permanent OR l.locked_until > ?) THEN 'locked' ELSE o.status END,
		o.issued_at, o.valid_until, o.last_login_at, p.expires_at, ` + cards + `, ` + grants + `
		FROM operators o LEFT JOIN login_locks l ON l.operator_id = o.operator_id LEFT JOIN passwords p ON p.operator_id = o.operator_id`
	args := []any{must(now), must(now)}
	if site != "" && site != opgate.AllSites {
		q += ` WHERE o.site_id = ?`
		args = append(args, site)
	}
	q += ` ORDER BY o.operator_id`
	rows, err := db.R.QueryContext(ctx, db.q(q), args...)
	if err != nil {
		return db.translate(err)
	}
	defer rows.Close()
	var r report.LedgerRow
	var issued int64
	var until, login, pw sql.NullInt64
	var cj, gj []byte
	var cs []ledgerCard
	var gs []ledgerGrant
	for rows.Next() {
		if err := rows.Scan(&r.OperatorID, &r.StaffNumber, &r.Name, &r.SiteID, &r.EmploymentType, &r.Status, &issued, &until, &login, &pw, &cj, &gj); err != nil {
			return db.translate(err)
		}
		cs, gs = cs[:0], gs[:0]
		if err := json.Unmarshal(cj, &cs); err != nil {
			return err
		}
		if err := json.Unmarshal(gj, &gs); err != nil {
			return err
		}
		r.IssuedAt, r.ValidUntil, r.LastLoginAt, r.PasswordExpiresAt = report.T(at(issued)), report.T(fromMicros(until)), report.T(fromMicros(login)), report.T(fromMicros(pw))
		r.Cards, r.Grants = make([]report.LedgerCard, len(cs)), make([]report.LedgerGrant, len(gs))
		for i, c := range cs {
			r.Cards[i] = report.LedgerCard{CardID: opgate.CardID(c.ID), Serial: c.Serial, Status: c.Status, EnrolledAt: report.T(at(c.Enroll)), ChangedAt: report.T(at(c.Changed))}
		}
		for i, g := range gs {
			r.Grants[i] = report.LedgerGrant{GrantID: opgate.GrantID(g.ID), RoleID: opgate.RoleID(g.Role), SiteID: opgate.SiteID(g.Site), Status: g.Status,
				GrantedBy: opgate.OperatorID(g.By), Since: ptrTime(g.From), Until: ptrTime(g.Until)}
			// Past its end a grant counts for nothing, whether or not the
			// sweep has marked it yet: the ledger says so at the instant.
			if g.Status == "active" && g.Until != nil && *g.Until <= must(now) {
				r.Grants[i].Status = "expired"
			}
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return db.translate(rows.Err())
}

// restrictedDecision is the predicate of the restricted-read index.
func (db *DB) restrictedDecision() string {
	if db.D.Name == "postgres" {
		return `((NULLIF(data, '')::jsonb) ->> 'restricted') = 'true'`
	}
	return `json_extract(NULLIF(data, ''), '$.restricted') = 1`
}

// Events walks the events a query selects in time order, a page at a
// time, each page one bounded query on the (type, at), resource or
// restricted-read index.
func (db *DB) Events(ctx context.Context, q report.EventQuery, fn func(audit.Event) error) error {
	const page = 5000
	var w where
	if len(q.Types) > 0 {
		in, args := inList(q.Types)
		w.conds = append(w.conds, "type IN ("+in+")")
		w.args = append(w.args, args...)
	}
	w.addIf(q.Resource != "", "resource = ?", q.Resource)
	if len(q.Reasons) > 0 {
		in, args := inList(q.Reasons)
		w.conds = append(w.conds, "reason IN ("+in+")")
		w.args = append(w.args, args...)
	}
	if q.Restricted {
		w.conds = append(w.conds, "type = 'authz.decided' AND "+db.restrictedDecision())
	}
	w.addIf(!q.From.IsZero(), "at >= ?", must(q.From))
	w.addIf(!q.To.IsZero(), "at < ?", must(q.To))
	base := w.String()
	join := " WHERE "
	if base != "" {
		join = " AND "
	}
	return db.eventPages(ctx, page, func(last *audit.Event) (string, []any) {
		at, seq := int64(-1<<62), int64(0)
		if last != nil {
			at, seq = last.At.UnixMicro(), last.Seq
		}
		return `SELECT ` + eventCols + ` FROM audit_events` + base + join + `(at > ? OR (at = ? AND seq > ?)) ORDER BY at, seq LIMIT ?`,
			append(append([]any{}, w.args...), at, at, seq)
	}, fn)
}

const microsPerDay = int64(24 * time.Hour / time.Microsecond)

// DecisionCounts counts decisions per operator, site and local day in
// the engine, over the (type, at) index.
func (db *DB) DecisionCounts(ctx context.Context, from, to time.Time, offset time.Duration) ([]report.DayCount, error) {
	off := int64(offset / time.Microsecond)
	rows, err := db.R.QueryContext(ctx, db.q(`SELECT operator_id, site_id, (at + ?) / ? AS d, COUNT(*) FROM audit_events
		WHERE type = 'authz.decided' AND at >= ? AND at < ? GROUP BY 1, 2, 3 ORDER BY 3, 2, 1`),
		off, microsPerDay, must(from), must(to))
	if err != nil {
		return nil, db.translate(err)
	}
	defer rows.Close()
	var out []report.DayCount
	for rows.Next() {
		var c report.DayCount
		var d int64
		if err := rows.Scan(&c.OperatorID, &c.SiteID, &d, &c.N); err != nil {
			return nil, db.translate(err)
		}
		c.Day = time.UnixMicro(d * microsPerDay).UTC().Format(time.DateOnly)
		out = append(out, c)
	}
	return out, db.translate(rows.Err())
}

// Expiring walks dormant operators, then operators and grants ending
// soon, then passwords expiring soon.
func (db *DB) Expiring(ctx context.Context, q report.ExpiringQuery, fn func(report.ExpiringRow) error) error {
	site, siteArgs := "", []any{}
	if q.SiteID != "" && q.SiteID != opgate.AllSites {
		site, siteArgs = " AND o.site_id = ?", []any{q.SiteID}
	}
	queries := []struct {
		kind, sql string
		args      []any
	}{
		{report.DormantOperator, `SELECT o.operator_id, o.name, o.site_id, o.status, '', '', COALESCE(o.last_login_at, o.issued_at) FROM operators o
			WHERE o.status = 'active' AND COALESCE(o.last_login_at, o.issued_at) < ? AND o.status_changed_at < ?` + site + ` ORDER BY o.operator_id`,
			[]any{must(q.DormantBefore), must(q.DormantBefore)}},
		{report.OperatorExpiring, `SELECT o.operator_id, o.name, o.site_id, o.status, '', '', o.valid_until FROM operators o
			WHERE o.status IN ('active', 'suspended') AND o.valid_until >= ? AND o.valid_until < ?` + site + ` ORDER BY o.valid_until, o.operator_id`,
			[]any{must(q.Now), must(q.Until)}},
		{report.GrantExpiring, `SELECT o.operator_id, o.name, g.site_id, g.status, g.grant_id, g.role_id, g.valid_until FROM grants g JOIN operators o ON o.operator_id = g.operator_id
			WHERE g.status = 'active' AND g.valid_until >= ? AND g.valid_until < ?` + site + ` ORDER BY g.valid_until, g.grant_id`,
			[]any{must(q.Now), must(q.Until)}},
		{report.PasswordExpiring, `SELECT o.operator_id, o.name, o.site_id, o.status, '', '', p.expires_at FROM passwords p JOIN operators o ON o.operator_id = p.operator_id
			WHERE o.status = 'active' AND p.expires_at >= ? AND p.expires_at < ?` + site + ` ORDER BY p.expires_at, o.operator_id`,
			[]any{must(q.Now), must(q.PasswordUntil)}},
	}
	for _, x := range queries {
		rows, err := db.R.QueryContext(ctx, db.q(x.sql), append(x.args, siteArgs...)...)
		if err != nil {
			return db.translate(err)
		}
		for rows.Next() {
			r := report.ExpiringRow{Kind: x.kind}
			var when int64
			if err := rows.Scan(&r.OperatorID, &r.Name, &r.SiteID, &r.Status, &r.GrantID, &r.RoleID, &when); err != nil {
				rows.Close()
				return db.translate(err)
			}
			r.At = report.T(at(when))
			if err := fn(r); err != nil {
				rows.Close()
				return err
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return db.translate(err)
		}
	}
	return nil
}

// CloneSuspects lists cards flagged when a signature counter went back.
func (db *DB) CloneSuspects(ctx context.Context) ([]report.CardRef, error) {
	rows, err := db.R.QueryContext(ctx, `SELECT c.card_id, c.serial, c.operator_id, o.site_id, c.status, c.status_changed_at FROM cards c
		JOIN operators o ON o.operator_id = c.operator_id WHERE c.clone_suspected ORDER BY c.card_id`)
	if err != nil {
		return nil, db.translate(err)
	}
	defer rows.Close()
	var out []report.CardRef
	for rows.Next() {
		var c report.CardRef
		var changed int64
		if err := rows.Scan(&c.CardID, &c.Serial, &c.OperatorID, &c.SiteID, &c.Status, &changed); err != nil {
			return nil, db.translate(err)
		}
		c.ChangedAt = at(changed)
		out = append(out, c)
	}
	return out, db.translate(rows.Err())
}

// Facts counts, in one read-only transaction, what the checklist is
// scored from.
func (db *DB) Facts(ctx context.Context, now time.Time, p policy.Policy) (report.Facts, error) {
	var f report.Facts
	err := db.View(ctx, func(stx store.Tx) error {
		t := stx.(*tx)
		rs, err := t.ListRoles(ctx)
		if err != nil {
			return err
		}
		var readers, risky []opgate.RoleID
		for _, r := range rs {
			if r.Has(roles.AuditRead) {
				readers = append(readers, r.ID)
			}
			if r.HighRisk() {
				risky = append(risky, r.ID)
			}
		}
		n := must(now)
		const live = `g.status = 'active' AND (g.valid_until IS NULL OR g.valid_until > ?)`
		count := func(dst *int, q string, args ...any) {
			if err != nil {
				return
			}
			err = t.row(ctx, q, args...).Scan(dst)
		}
		inRoles := func(ids []opgate.RoleID) (string, []any) {
			if len(ids) == 0 {
				return "''", nil
			}
			return inList(ids)
		}
		count(&f.ActiveOperators, `SELECT COUNT(*) FROM operators WHERE status = 'active'`)
		count(&f.SharedSerials, `SELECT COUNT(*) FROM (SELECT serial FROM cards WHERE status = 'active' GROUP BY serial HAVING COUNT(DISTINCT operator_id) > 1) x`)
		count(&f.UnattributedGrants, `SELECT COUNT(*) FROM grants g WHERE `+live+` AND (g.reason = '' OR g.role_id NOT IN (SELECT role_id FROM roles))`, n)
		count(&f.GrantsAwayFromHome, `SELECT COUNT(*) FROM grants g JOIN operators o ON o.operator_id = g.operator_id WHERE `+live+` AND g.site_id <> '*' AND g.site_id <> o.site_id`, n)
		count(&f.DormantOperators, `SELECT COUNT(*) FROM operators WHERE status = 'active' AND COALESCE(last_login_at, issued_at) < ? AND status_changed_at < ?`,
			must(now.Add(-p.DormantAfter)), must(now.Add(-p.DormantAfter)))
		count(&f.PastValidity, `SELECT COUNT(*) FROM operators WHERE status IN ('active', 'suspended') AND valid_until <= ?`, n)
		count(&f.ExpiredPasswords, `SELECT COUNT(*) FROM passwords p JOIN operators o ON o.operator_id = p.operator_id WHERE o.status = 'active' AND p.expires_at <= ?`, n)
		in, args := inRoles(readers)
		count(&f.AuditReaders, `SELECT COUNT(*) FROM grants g WHERE `+live+` AND g.role_id IN (`+in+`)`, append([]any{n}, args...)...)
		count(&f.DepartedWithCards, `SELECT COUNT(*) FROM cards c JOIN operators o ON o.operator_id = c.operator_id WHERE c.status = 'active' AND o.status IN ('retired', 'expired')`)
		count(&f.TransferredWithOldCards, `SELECT COUNT(*) FROM cards c JOIN (SELECT operator_id, MAX(at) AS t FROM audit_events WHERE type = 'operator.transferred' GROUP BY operator_id) x
			ON x.operator_id = c.operator_id WHERE c.status = 'active' AND c.enrolled_at < x.t`)
		count(&f.LiveSessionsBadCards, `SELECT COUNT(*) FROM sessions s JOIN cards c ON c.card_id = s.card_id WHERE s.ended_at IS NULL AND s.expires_at > ? AND c.status <> 'active'`, n)
		count(&f.LoginsAfterLoss, `SELECT COUNT(*) FROM cards c JOIN sessions s ON s.card_id = c.card_id WHERE c.status IN ('lost', 'stolen') AND s.created_at > c.status_changed_at`)
		count(&f.CloneSuspectsActive, `SELECT COUNT(*) FROM cards WHERE clone_suspected AND status = 'active'`)
		count(&f.OtherSiteRefusals, `SELECT COUNT(*) FROM audit_events WHERE type IN ('login.failed', 'authz.decided') AND at >= ? AND reason IN ('terminal_other_site', 'terminal_site_mismatch')`,
			must(now.Add(-30*24*time.Hour)))
		in, args = inRoles(risky)
		count(&f.HighRiskUnapproved, `SELECT COUNT(*) FROM grants g WHERE `+live+` AND g.granted_by <> '' AND (g.approved_by = '' OR g.approved_by = g.granted_by) AND g.role_id IN (`+in+`)`,
			append([]any{n}, args...)...)
		count(&f.BroadHolders, `SELECT COUNT(*) FROM (SELECT g.operator_id FROM grants g WHERE `+live+` GROUP BY g.operator_id HAVING COUNT(*) > ?) x`, n, report.MaxGrants)
		var last sql.NullInt64
		if err == nil {
			err = t.row(ctx, `SELECT MAX(at) FROM audit_events WHERE type = 'report.read' AND resource = 'report:anomalies'`).Scan(&last)
			f.LastAnomalyRead = fromMicros(last)
		}
		if err != nil {
			return err
		}
		f.LastReview = map[opgate.SiteID]time.Time{}
		sr, err := t.rows(ctx, `SELECT DISTINCT g.site_id FROM grants g WHERE `+live+` AND g.site_id <> '*'`, n)
		sites, err := ids[opgate.SiteID](t, sr, err)
		if err != nil {
			return err
		}
		for _, s := range sites {
			f.LastReview[s] = time.Time{}
		}
		// A campaign the sweep closed with items escalated and still
		// undecided is no completed review: nobody has looked at them.
		r, err := t.rows(ctx, `SELECT site_id, MAX(closed_at) FROM review_campaigns c WHERE status = 'closed'
			AND NOT EXISTS (SELECT 1 FROM review_items i WHERE i.review_id = c.review_id AND i.decision = 'escalated') GROUP BY site_id`)
		if err != nil {
			return err
		}
		defer r.Close()
		for r.Next() {
			var s opgate.SiteID
			var c int64
			if err := r.Scan(&s, &c); err != nil {
				return t.db.translate(err)
			}
			if _, ok := f.LastReview[s]; ok {
				f.LastReview[s] = at(c)
			}
		}
		return t.db.translate(r.Err())
	})
	return f, err
}

// PurgeAudit removes the prefix of the history the plan allows: up to the
// first event that must stay. It moves the anchor to the last event
// removed first — the database refuses to delete any event past the
// anchor — so verification starts from that event's stored hash, and
// records the checkpoint.
func (t *tx) PurgeAudit(ctx context.Context, p report.PurgePlan, when time.Time) (report.Purged, error) {
	out := report.Purged{ByType: map[string]int64{}}
	if err := t.flush(ctx); err != nil {
		return out, err
	}
	var anchor int64
	var anchorHash []byte
	if err := t.row(ctx, `SELECT seq, hash, anchor_seq, anchor_hash FROM audit_head WHERE id = 1`+t.forUpdate()).Scan(&t.headSeq, &t.headHash, &anchor, &anchorHash); err != nil {
		return out, t.db.translate(err)
	}
	t.headLocked = true
	logins, largs := inList(report.LoginTypes)
	args := []any{anchor, must(p.Decisions)}
	args = append(args, largs...)
	args = append(args, must(p.Logins))
	args = append(args, largs...)
	args = append(args, must(p.Other))
	var keep sql.NullInt64
	if err := t.row(ctx, `SELECT MIN(seq) FROM audit_events WHERE seq > ? AND (
		(type = 'authz.decided' AND at >= ?) OR (type IN (`+logins+`) AND at >= ?) OR (type <> 'authz.decided' AND type NOT IN (`+logins+`) AND at >= ?))`,
		args...).Scan(&keep); err != nil {
		return out, t.db.translate(err)
	}
	through := t.headSeq
	if keep.Valid {
		through = keep.Int64 - 1
	}
	if through <= anchor {
		return out, nil
	}
	// What goes must verify, from the present anchor to the new one: the
	// new anchor is the hash the walk computed, and a chain broken inside
	// the range is reported, not purged away.
	v := audit.NewVerifier(audit.Anchor{Seq: anchor, Hash: anchorHash})
	vr, err := t.rows(ctx, `SELECT `+eventCols+` FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq`, anchor, through)
	if err != nil {
		return out, err
	}
	for vr.Next() {
		e, err := scanEvent(vr)
		if err == nil {
			err = v.Next(e)
		}
		if err != nil {
			vr.Close()
			if _, ok := errors.AsType[*audit.BrokenError](err); ok {
				return out, fmt.Errorf("%w: %v", report.ErrChainBroken, err)
			}
			return out, t.db.translate(err)
		}
	}
	err = vr.Err()
	vr.Close()
	if err != nil {
		return out, t.db.translate(err)
	}
	seq, hash, _ := v.Head()
	if seq != through {
		return out, fmt.Errorf("%w: the history ends at seq %d before seq %d", report.ErrChainBroken, seq, through)
	}
	r, err := t.rows(ctx, `SELECT type, COUNT(*) FROM audit_events WHERE seq > ? AND seq <= ? GROUP BY type ORDER BY type`, anchor, through)
	if err != nil {
		return out, err
	}
	for r.Next() {
		var typ string
		var n int64
		if err := r.Scan(&typ, &n); err != nil {
			r.Close()
			return out, t.db.translate(err)
		}
		out.ByType[typ], out.Removed = n, out.Removed+n
	}
	err = r.Err()
	r.Close()
	if err != nil {
		return out, t.db.translate(err)
	}
	if _, err := t.exec(ctx, `UPDATE audit_head SET anchor_seq = ?, anchor_hash = ? WHERE id = 1`, through, hash); err != nil {
		return out, err
	}
	if _, err := t.exec(ctx, `DELETE FROM audit_events WHERE seq > ? AND seq <= ?`, anchor, through); err != nil {
		return out, err
	}
	if _, err := t.exec(ctx, `INSERT INTO audit_checkpoints (anchor_seq, anchor_hash, removed, purged_at) VALUES (?, ?, ?, ?)`, through, hash, out.Removed, must(when)); err != nil {
		return out, err
	}
	out.AnchorSeq, out.AnchorHash = through, hash
	return out, nil
}
