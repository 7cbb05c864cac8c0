package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// testReports holds the stores to what reviews and reports read and
// write: campaigns and their items, the last use of grants from the
// decision log, the streamed ledger, event walks, the checklist's counts,
// and a purge that keeps the chain verifiable.
func testReports(t *testing.T, open func(*testing.T) Harness) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, func(*testing.T) Harness)
	}{
		{"ReviewRows", testReviewRows},
		{"LastUses", testLastUses},
		{"Ledger", testLedger},
		{"Events", testEvents},
		{"Facts", testFacts},
		{"Purge", testPurge},
		{"PurgeBrokenHistory", testPurgeBrokenHistory},
		{"Expiring", testExpiring},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open)
		})
	}
}

func grant(id opgate.GrantID, op opgate.OperatorID, role opgate.RoleID, site opgate.SiteID) authz.Grant {
	return authz.Grant{ID: id, OperatorID: op, RoleID: role, SiteID: site, Status: authz.Active, GrantedBy: "op-chief", Reason: "配属",
		CreatedAt: ts(1, 10, 0), ValidFrom: ts(1, 10, 0)}
}

func testReviewRows(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	c := review.Campaign{ID: "R-1", SiteID: siteA.ID, DueAt: ts(20, 0, 0), OnUnreviewed: review.Escalate, Status: review.Open, CreatedBy: "op-chief", CreatedAt: ts(2, 9, 0)}
	items := make([]review.Item, 1203) // more than one multi-row insert
	for i := range items {
		items[i] = review.Item{ReviewID: c.ID, ID: fmt.Sprintf("I-%05d", i+1), GrantID: opgate.GrantID(fmt.Sprintf("g-%d", i)),
			OperatorID: "op-a", OperatorName: "職員 A", RoleID: "counter_clerk", GrantedBy: "op-chief", GrantedAt: ts(1, 10, 0), Hints: []string{}}
	}
	items[0].Hints, items[0].LastUsedAt, items[0].LastLoginAt, items[0].ValidUntil = []string{review.HintUnused, review.HintHighRisk}, ts(2, 8, 0), ts(2, 7, 0), ts(25, 0, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.CreateReview(ctx, c, items) })
	got := read(t, s, func(ctx context.Context, tx store.Tx) (review.Campaign, error) { return tx.GetReview(ctx, "R-1") })
	diff(t, "GetReview", c, got)
	all, _ := pages(t, 500, func(after string, n int) []review.Item {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]review.Item, error) {
			return tx.ReviewItems(ctx, "R-1", after, n)
		})
	}, func(it review.Item) string { return it.ID })
	if len(all) != len(items) {
		t.Fatalf("%d items back, want %d", len(all), len(items))
	}
	it := read(t, s, func(ctx context.Context, tx store.Tx) (review.Item, error) {
		return tx.GetReviewItem(ctx, "R-1", items[0].ID)
	})
	diff(t, "GetReviewItem", items[0], it)
	it.Decision, it.Reason, it.DecidedBy, it.DecidedAt = review.Keep, "必要", "op-chief", ts(3, 9, 0)
	c.Status, c.ClosedAt, c.ClosedBy = review.Closed, ts(4, 9, 0), "op-chief"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateReviewItem(ctx, it), tx.UpdateReview(ctx, c))
	})
	diff(t, "item after update", it, read(t, s, func(ctx context.Context, tx store.Tx) (review.Item, error) {
		return tx.GetReviewItem(ctx, "R-1", it.ID)
	}))
	due := read(t, s, func(ctx context.Context, tx store.Tx) ([]review.Campaign, error) {
		return tx.DueReviews(ctx, ts(30, 0, 0), 10)
	})
	diff(t, "DueReviews of a closed campaign", []review.Campaign(nil), due)
	wantErr(t, "GetReview unknown", s.View(t.Context(), func(tx store.Tx) error { _, err := tx.GetReview(t.Context(), "R-2"); return err }), store.ErrNotFound)

	sc := review.Schedule{ID: "RS-1", SiteID: siteA.ID, EveryMonths: 3, DueAfter: 14 * 24 * time.Hour, OnUnreviewed: review.Revoke, NextAt: ts(5, 0, 0), CreatedBy: "op-chief", CreatedAt: ts(2, 0, 0)}
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.CreateReviewSchedule(ctx, sc) })
	claimed := read(t, s, func(ctx context.Context, tx store.Tx) ([]review.Schedule, error) {
		return tx.ClaimDueSchedules(ctx, ts(5, 0, 0), 10)
	})
	diff(t, "ClaimDueSchedules", []review.Schedule{sc}, claimed)
	sc.NextAt = ts(28, 0, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateReviewSchedule(ctx, sc) })
	diff(t, "ClaimDueSchedules after moving on", []review.Schedule(nil),
		read(t, s, func(ctx context.Context, tx store.Tx) ([]review.Schedule, error) {
			return tx.ClaimDueSchedules(ctx, ts(5, 0, 0), 10)
		}))
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.DeleteReviewSchedule(ctx, "RS-1") })
	wantErr(t, "delete twice", s.InTx(t.Context(), func(tx store.Tx) error { return tx.DeleteReviewSchedule(t.Context(), "RS-1") }), store.ErrNotFound)
}

func decided(at time.Time, op opgate.OperatorID, site opgate.SiteID, resource string, data map[string]any) audit.Event {
	return audit.Event{Type: audit.AuthzDecided, At: at, ActorID: op, OperatorID: op, SiteID: site, TerminalID: "term-" + opgate.TerminalID(site),
		Resource: resource, Reason: data["reason"].(string), Data: audit.D(data)}
}

func testLastUses(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		for i, at := range []time.Time{ts(2, 9, 0), ts(3, 9, 0), ts(2, 10, 0)} {
			g := "g-1"
			if i == 2 {
				g = "g-2"
			}
			if _, err := tx.AppendAudit(ctx, decided(at, "op-a", siteA.ID, "resident:R-1", map[string]any{"allowed": true, "reason": "allowed", "grant_id": g})); err != nil {
				return err
			}
		}
		// A refusal names no grant; other events have no data at all.
		_, err := tx.AppendAudit(ctx, decided(ts(4, 9, 0), "op-a", siteA.ID, "resident:R-1", map[string]any{"allowed": false, "reason": "no_grant"}))
		if err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.SiteCreated, At: ts(4, 9, 0)})
		return err
	})
	lastUses := func() map[opgate.GrantID]time.Time {
		return read(t, s, func(ctx context.Context, tx store.Tx) (map[opgate.GrantID]time.Time, error) {
			return tx.LastUses(ctx, []opgate.GrantID{"g-1", "g-2", "g-3"})
		})
	}
	diff(t, "LastUses", map[opgate.GrantID]time.Time{"g-1": ts(3, 9, 0), "g-2": ts(2, 10, 0)}, lastUses())
	// A decision rolled back was never made; one recorded with an earlier
	// time does not move a last use back, within a transaction or across.
	use := func(ctx context.Context, tx store.Tx, g string, at time.Time) error {
		_, err := tx.AppendAudit(ctx, decided(at, "op-a", siteA.ID, "resident:R-1", map[string]any{"allowed": true, "reason": "allowed", "grant_id": g}))
		return err
	}
	refused := errors.New("refused")
	wantErr(t, "rolled back", s.InTx(t.Context(), func(tx store.Tx) error {
		return errors.Join(use(t.Context(), tx, "g-2", ts(9, 9, 0)), refused)
	}), refused)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(use(ctx, tx, "g-1", ts(2, 8, 0)), use(ctx, tx, "g-3", ts(6, 9, 0)), use(ctx, tx, "g-3", ts(5, 9, 0)))
	})
	diff(t, "LastUses", map[opgate.GrantID]time.Time{"g-1": ts(3, 9, 0), "g-2": ts(2, 10, 0), "g-3": ts(6, 9, 0)}, lastUses())
}

func testLedger(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		o := operator("op-c", "S-0003", siteA.ID, lifecycle.Active)
		o.LastLoginAt, o.ValidUntil, o.EmploymentType = ts(3, 9, 0), ts(29, 0, 0), lifecycle.Temporary
		g1, g2 := grant("g-1", "op-c", "counter_clerk", siteA.ID), grant("g-2", "op-c", "counter_viewer", siteA.ID)
		g2.Status, g2.EndedAt = authz.Revoked, ts(2, 0, 0)
		g1.ValidUntil = ts(29, 0, 0)
		return errors.Join(tx.CreateOperator(ctx, o), tx.CreateGrant(ctx, g1), tx.CreateGrant(ctx, g2),
			tx.CreateCard(ctx, authn.Card{ID: "C-1", OperatorID: "op-c", Serial: "SN-1", Label: "x", Status: authn.CardActive, CredentialID: []byte("c1"),
				PublicKey: []byte{1}, AAGUID: make([]byte, 16), EnrolledAt: ts(1, 11, 0), StatusChanged: ts(1, 11, 0)}),
			tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: "op-c", Hash: "$argon2id$x", SetAt: ts(1, 0, 0), ExpiresAt: ts(30, 0, 0)}),
			tx.PutLock(ctx, lifecycle.Lock{OperatorID: "op-a", Permanent: true}))
	})
	var rows []report.LedgerRow
	if err := s.Ledger(t.Context(), siteA.ID, ts(5, 0, 0), func(r report.LedgerRow) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].OperatorID != "op-a" || rows[1].OperatorID != "op-c" {
		t.Fatalf("ledger rows %+v", rows)
	}
	if rows[0].Status != "locked" || len(rows[0].Cards) != 0 || len(rows[0].Grants) != 0 {
		t.Errorf("op-a %+v", rows[0])
	}
	want := report.LedgerRow{OperatorID: "op-c", StaffNumber: "S-0003", Name: "職員 op-c", SiteID: siteA.ID, EmploymentType: "temporary", Status: "active",
		IssuedAt: report.T(ts(1, 9, 0)), ValidUntil: report.T(ts(29, 0, 0)), LastLoginAt: report.T(ts(3, 9, 0)), PasswordExpiresAt: report.T(ts(30, 0, 0)),
		Cards:  []report.LedgerCard{{CardID: "C-1", Serial: "SN-1", Status: "active", EnrolledAt: report.T(ts(1, 11, 0)), ChangedAt: report.T(ts(1, 11, 0))}},
		Grants: []report.LedgerGrant{{GrantID: "g-1", RoleID: "counter_clerk", SiteID: siteA.ID, Status: "active", GrantedBy: "op-chief", Since: report.T(ts(1, 10, 0)), Until: report.T(ts(29, 0, 0))}}}
	diff(t, "ledger row", want, rows[1])
	n := 0
	if err := s.Ledger(t.Context(), "", ts(5, 0, 0), func(report.LedgerRow) error { n++; return nil }); err != nil || n != 3 {
		t.Errorf("ledger of every site: %d rows, %v", n, err)
	}
	// Past its end, op-c's ID and grant count for nothing, swept or not:
	// the ledger says expired.
	rows = rows[:0]
	if err := s.Ledger(t.Context(), siteA.ID, ts(29, 0, 0), func(r report.LedgerRow) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Status != "expired" || len(rows[1].Grants) != 1 || rows[1].Grants[0].Status != "expired" {
		t.Errorf("op-c at its end: %+v", rows[1])
	}
}

func testEvents(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		for i := range 12 {
			op := opgate.OperatorID("op-a")
			if i%4 == 0 {
				op = "op-b"
			}
			d := map[string]any{"allowed": true, "reason": "allowed", "restricted": i == 5}
			if _, err := tx.AppendAudit(ctx, decided(ts(2+i/6, 9, i), op, siteA.ID, "resident:R-"+string(rune('0'+i%2)), d)); err != nil {
				return err
			}
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.LoginFailed, At: ts(2, 9, 0), Reason: "terminal_other_site"})
		return err
	})
	count := func(q report.EventQuery) int {
		n := 0
		if err := s.Events(t.Context(), q, func(audit.Event) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		name string
		q    report.EventQuery
		want int
	}{
		{"by resource", report.EventQuery{Types: []audit.Type{audit.AuthzDecided}, Resource: "resident:R-1"}, 6},
		{"restricted", report.EventQuery{Restricted: true}, 1},
		{"period", report.EventQuery{Types: []audit.Type{audit.AuthzDecided}, From: ts(3, 0, 0), To: ts(4, 0, 0)}, 6},
		{"reasons over two types", report.EventQuery{Types: []audit.Type{audit.AuthzDecided, audit.LoginFailed}, Reasons: []string{"terminal_other_site"}}, 1},
	} {
		if got := count(tc.q); got != tc.want {
			t.Errorf("%s: %d events, want %d", tc.name, got, tc.want)
		}
	}
	counts, err := s.DecisionCounts(t.Context(), ts(1, 0, 0), ts(10, 0, 0), 9*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "DecisionCounts", []report.DayCount{{OperatorID: "op-a", SiteID: siteA.ID, Day: "2027-04-02", N: 4}, {OperatorID: "op-b", SiteID: siteA.ID, Day: "2027-04-02", N: 2}, {OperatorID: "op-a", SiteID: siteA.ID, Day: "2027-04-03", N: 5}, {OperatorID: "op-b", SiteID: siteA.ID, Day: "2027-04-03", N: 1}}, counts)
}

// testFacts builds, for each count the checklist reads, data that makes
// it one and checks that it is counted.
func testFacts(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	now := ts(20, 0, 0)
	p := policy.Default()
	empty, err := s.Facts(t.Context(), now, p)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "facts of a store without grants", report.Facts{ActiveOperators: 2, DormantOperators: 0, LastReview: map[opgate.SiteID]time.Time{}}, empty)
	card := func(id opgate.CardID, op opgate.OperatorID, serial string, status authn.CardStatus, enrolled time.Time) authn.Card {
		return authn.Card{ID: id, OperatorID: op, Serial: serial, Label: "x", Status: status, CredentialID: []byte(id), PublicKey: []byte{1},
			AAGUID: make([]byte, 16), EnrolledAt: enrolled, StatusChanged: enrolled}
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := SeedRoles(ctx, tx); err != nil {
			return err
		}
		retired := operator("op-r", "S-R", siteA.ID, lifecycle.Retired)
		past := operator("op-p", "S-P", siteA.ID, lifecycle.Active)
		past.ValidUntil, past.LastLoginAt = ts(10, 0, 0), ts(19, 0, 0)
		moved := operator("op-m", "S-M", siteB.ID, lifecycle.Active)
		moved.LastLoginAt = ts(19, 0, 0)
		awayGrant := grant("g-away", "op-m", "counter_clerk", siteA.ID)
		noReason := grant("g-noreason", "op-a", "counter_viewer", siteA.ID)
		noReason.Reason = ""
		selfApproved := grant("g-risky", "op-a", roles.SecurityAdmin, opgate.AllSites)
		selfApproved.ApprovedBy = selfApproved.GrantedBy
		lost := card("C-lost", "op-m", "SN-L", authn.CardLost, ts(2, 0, 0))
		lost.StatusChanged = ts(3, 0, 0)
		sess := session("S-lost", "op-m", siteB.ID, "C-lost")
		sess.CreatedAt, sess.ExpiresAt = ts(4, 0, 0), ts(25, 0, 0)
		clone := card("C-clone", "op-b", "SN-C", authn.CardActive, ts(2, 0, 0))
		clone.CloneSuspected = true
		errs := []error{
			tx.CreateOperator(ctx, retired), tx.CreateOperator(ctx, past), tx.CreateOperator(ctx, moved),
			tx.CreateCard(ctx, card("C-r", "op-r", "SN-R", authn.CardActive, ts(2, 0, 0))),
			tx.CreateCard(ctx, card("C-shared1", "op-a", "SN-S", authn.CardActive, ts(2, 0, 0))),
			tx.CreateCard(ctx, card("C-shared2", "op-p", "SN-S", authn.CardActive, ts(2, 0, 0))),
			tx.CreateCard(ctx, card("C-old", "op-m", "SN-O", authn.CardActive, ts(2, 0, 0))),
			tx.CreateCard(ctx, lost), tx.CreateSession(ctx, sess), tx.CreateCard(ctx, clone),
			tx.CreateGrant(ctx, awayGrant), tx.CreateGrant(ctx, noReason), tx.CreateGrant(ctx, selfApproved),
			tx.CreateGrant(ctx, grant("g-a1", "op-p", "counter_clerk", siteA.ID)), tx.CreateGrant(ctx, grant("g-a2", "op-p", "auditor", siteA.ID)),
			tx.CreateGrant(ctx, grant("g-a3", "op-p", "counter_viewer", siteA.ID)), tx.CreateGrant(ctx, grant("g-a4", "op-p", "section_chief", siteA.ID)),
			tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: "op-p", Hash: "$argon2id$x", SetAt: ts(1, 0, 0), ExpiresAt: ts(15, 0, 0)}),
			tx.CreateReview(ctx, review.Campaign{ID: "R-1", SiteID: siteA.ID, DueAt: ts(10, 0, 0), OnUnreviewed: review.Escalate, Status: review.Closed,
				CreatedAt: ts(1, 0, 0), ClosedAt: ts(9, 0, 0)}, nil),
			// Closed later by the sweep with its item escalated and still
			// undecided: nobody has reviewed it, so it is no completed review.
			tx.CreateReview(ctx, review.Campaign{ID: "R-2", SiteID: siteA.ID, DueAt: ts(12, 0, 0), OnUnreviewed: review.Escalate, Status: review.Closed,
				CreatedAt: ts(10, 0, 0), ClosedAt: ts(12, 0, 0)}, []review.Item{{ReviewID: "R-2", ID: "I-00001", GrantID: "g-a1", OperatorID: "op-p",
				OperatorName: "職員 P", RoleID: "counter_clerk", GrantedBy: "op-chief", GrantedAt: ts(1, 10, 0), Hints: []string{}, Decision: review.Escalated}}),
		}
		for _, e := range []audit.Event{
			{Type: audit.OperatorTransferred, At: ts(5, 0, 0), OperatorID: "op-m"},
			{Type: audit.LoginFailed, At: ts(18, 0, 0), Reason: "terminal_other_site"},
			{Type: audit.AuthzDecided, At: ts(18, 0, 0), Reason: "terminal_site_mismatch", Data: audit.D(map[string]any{"allowed": false})},
			{Type: audit.ReportRead, At: ts(19, 0, 0), Resource: "report:anomalies"},
		} {
			_, err := tx.AppendAudit(ctx, e)
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	got, err := s.Facts(t.Context(), now, p)
	if err != nil {
		t.Fatal(err)
	}
	want := report.Facts{
		ActiveOperators:         4, // op-a, op-b, op-p, op-m
		SharedSerials:           1,
		UnattributedGrants:      1,
		GrantsAwayFromHome:      1 + 0, // g-away (op-m at site-a); op-p's are at home
		DormantOperators:        0,
		PastValidity:            1,
		ExpiredPasswords:        1,
		AuditReaders:            2, // security_admin and auditor hold audit.read
		DepartedWithCards:       1,
		TransferredWithOldCards: 1,
		LiveSessionsBadCards:    1,
		LoginsAfterLoss:         1,
		CloneSuspectsActive:     1,
		OtherSiteRefusals:       2,
		HighRiskUnapproved:      1,
		BroadHolders:            1,
		LastReview:              map[opgate.SiteID]time.Time{siteA.ID: ts(9, 0, 0)},
		LastAnomalyRead:         ts(19, 0, 0),
	}
	diff(t, "facts", want, got)
	// Dormancy is counted from the last login, or the issue.
	p.DormantAfter = 15 * 24 * time.Hour
	got, err = s.Facts(t.Context(), now, p)
	if err != nil {
		t.Fatal(err)
	}
	if got.DormantOperators != 2 { // op-a and op-b, issued on the 1st, never logged in
		t.Errorf("dormant %d, want 2", got.DormantOperators)
	}
}

// SeedRoles stores the built-in roles.
func SeedRoles(ctx context.Context, tx store.Tx) error { return authz.SeedRoles(ctx, tx) }

// testPurge removes the history past retention, keeps everything inside
// it, and leaves a chain that verifies from its new anchor, twice over.
func testPurge(t *testing.T, open func(*testing.T) Harness) {
	h := open(t)
	s := h.Store
	ctx := t.Context()
	// Decisions, logins and other events, old and new, interleaved.
	old, recent := ts(1, 0, 0).AddDate(-8, 0, 0), ts(1, 0, 0)
	var all []audit.Event
	for i := range 30 {
		at := old.Add(time.Duration(i) * time.Hour)
		if i >= 20 {
			at = recent.Add(time.Duration(i) * time.Hour)
		}
		typ := []audit.Type{audit.AuthzDecided, audit.LoginSucceeded, audit.GrantRevoked}[i%3]
		all = append(all, audit.Event{Type: typ, At: at, OperatorID: "op-a", Reason: "allowed", Resource: "x"})
	}
	// An old decision after a recent event stays: only a prefix can go.
	all = append(all, audit.Event{Type: audit.AuthzDecided, At: old, Reason: "allowed"})
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		for _, e := range all {
			if _, err := tx.AppendAudit(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	p := policy.Default()
	purge := func(before time.Time) report.Purged {
		t.Helper()
		res, err := report.Purge(ctx, store.Runner[report.PurgeTx]{S: s}, p, before, recent.AddDate(0, 0, 10), "")
		if err != nil {
			t.Fatalf("purge: %v", err)
		}
		if err := verify(ctx, s); err != nil {
			t.Fatalf("verify after purge: %v", err)
		}
		if r, err := audit.VerifyChain(ctx, s); err != nil || !r.OK {
			t.Fatalf("VerifyChain after purge: %+v %v", r, err)
		}
		return res
	}
	// Nothing older than before: nothing goes.
	if res := purge(old.Add(-time.Hour)); res.Removed != 0 {
		t.Fatalf("removed %d older than nothing", res.Removed)
	}
	// Only the first 10 are older than before.
	res := purge(old.Add(10 * time.Hour))
	if res.Removed != 10 || res.AnchorSeq != 10 {
		t.Fatalf("first purge %+v", res)
	}
	// Everything past retention: the first 20; the recent ones and the
	// old decision after them stay.
	res = purge(recent.AddDate(0, 0, 10))
	if res.Removed != 10 || res.AnchorSeq != 20 {
		t.Fatalf("second purge %+v", res)
	}
	// Left: the ten recent events, the old decision after them, and both
	// purges' own events.
	left := scanAll(t, s, 0)
	if len(left) != 13 || left[0].Seq != 21 {
		t.Fatalf("left %d events from seq %d", len(left), left[0].Seq)
	}
	last := left[len(left)-1]
	if last.Type != audit.AuditPurged {
		t.Errorf("last event %v", last.Type)
	}
	// The database refuses to remove anything past the anchor.
	if err := h.Exec(t, `DELETE FROM audit_events WHERE seq = 21`); err == nil {
		t.Errorf("deleting an event past the anchor was allowed")
	}
	if err := verify(ctx, s); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Nor may the anchor be moved by hand to cut more history off: the
	// delete would pass the database's guard, but no purge event names
	// that anchor, and verification says so.
	if err := h.Exec(t, `UPDATE audit_head SET anchor_seq = 25, anchor_hash = (SELECT hash FROM audit_events WHERE seq = 25) WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if err := h.Exec(t, `DELETE FROM audit_events WHERE seq <= 25`); err != nil {
		t.Fatal(err)
	}
	if r, err := audit.VerifyChain(ctx, s); err != nil || r.OK || r.FirstBadSeq != 25 || r.HeadSeq == 0 || len(r.HeadHash) == 0 {
		t.Fatalf("VerifyChain after the anchor was moved by hand: %+v %v", r, err)
	}
}

// testPurgeBrokenHistory: a purge walks what it would remove and refuses,
// removing nothing, when that part of the chain does not verify: purging
// it would erase the evidence and anchor on a forged hash.
func testPurgeBrokenHistory(t *testing.T, open func(*testing.T) Harness) {
	h := open(t)
	s := h.Store
	ctx := t.Context()
	old := ts(1, 0, 0).AddDate(-8, 0, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		for i := range 10 {
			if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.GrantRevoked, At: old.Add(time.Duration(i) * time.Hour), OperatorID: "op-a", Reason: "r"}); err != nil {
				return err
			}
		}
		return nil
	})
	for _, q := range append(slices.Clone(h.Unguard), `UPDATE audit_events SET reason = 'rewritten' WHERE seq = 4`) {
		if err := h.Exec(t, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err := report.Purge(ctx, store.Runner[report.PurgeTx]{S: s}, policy.Default(), ts(1, 0, 0), ts(1, 0, 0), "")
	if !errors.Is(err, report.ErrChainBroken) {
		t.Fatalf("purging a broken history: %v, want %v", err, report.ErrChainBroken)
	}
	if left := scanAll(t, s, 0); len(left) != 10 {
		t.Fatalf("%d events left, want all 10", len(left))
	}
}

// testExpiring: dormant operators (by last login, or issue), operators,
// grants and passwords ending inside the window, cards flagged as
// possibly cloned, per site.
func testExpiring(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s) // op-a (site-a), op-b (site-b): issued on the 1st, never logged in
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		c := operator("op-c", "S-0003", siteA.ID, lifecycle.Active)
		c.LastLoginAt, c.ValidUntil, c.EmploymentType = ts(19, 0, 0), ts(25, 0, 0), lifecycle.Temporary
		g := grant("g-1", "op-c", "counter_clerk", siteA.ID)
		g.ValidUntil = ts(22, 0, 0)
		late := grant("g-2", "op-c", "counter_viewer", siteA.ID)
		late.ValidUntil = ts(30, 0, 0).AddDate(0, 2, 0)
		return errors.Join(tx.CreateOperator(ctx, c), tx.CreateGrant(ctx, g), tx.CreateGrant(ctx, late),
			tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: "op-c", Hash: "$argon2id$x", SetAt: ts(1, 0, 0), ExpiresAt: ts(21, 0, 0)}),
			tx.CreateCard(ctx, authn.Card{ID: "C-x", OperatorID: "op-c", Serial: "SN-X", Label: "x", Status: authn.CardRevoked, CredentialID: []byte("x"),
				PublicKey: []byte{1}, AAGUID: make([]byte, 16), CloneSuspected: true, EnrolledAt: ts(2, 0, 0), StatusChanged: ts(3, 0, 0)}))
	})
	now := ts(20, 0, 0)
	q := report.ExpiringQuery{DormantBefore: ts(10, 0, 0), Now: now, Until: ts(28, 0, 0), PasswordUntil: ts(24, 0, 0)}
	kinds := func(q report.ExpiringQuery) []string {
		var out []string
		if err := s.Expiring(t.Context(), q, func(r report.ExpiringRow) error {
			out = append(out, r.Kind+" "+string(r.OperatorID)+" "+string(r.GrantID))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	diff(t, "Expiring", []string{"dormant_operator op-a ", "dormant_operator op-b ", "operator_expiring op-c ", "grant_expiring op-c g-1", "password_expiring op-c "}, kinds(q))
	q.SiteID = siteB.ID
	diff(t, "Expiring at site-b", []string{"dormant_operator op-b "}, kinds(q))
	dormant := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) {
		return tx.DormantOperators(ctx, ts(10, 0, 0), 10)
	})
	diff(t, "DormantOperators", []opgate.OperatorID{"op-a", "op-b"}, ids(dormant, func(o lifecycle.Operator) opgate.OperatorID { return o.ID }))
	// Reinstated (its status changed) after the cutoff, op-b is not dormant
	// however long ago it last logged in.
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		o, err := tx.GetOperator(ctx, "op-b")
		if err != nil {
			return err
		}
		o.StatusChanged = ts(12, 0, 0)
		return tx.UpdateOperator(ctx, o)
	})
	dormant = read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) {
		return tx.DormantOperators(ctx, ts(10, 0, 0), 10)
	})
	diff(t, "DormantOperators after op-b's reinstatement", []opgate.OperatorID{"op-a"}, ids(dormant, func(o lifecycle.Operator) opgate.OperatorID { return o.ID }))
	all := q
	all.SiteID = ""
	diff(t, "Expiring after op-b's reinstatement", []string{"dormant_operator op-a ", "operator_expiring op-c ", "grant_expiring op-c g-1", "password_expiring op-c "}, kinds(all))
	clones, err := s.CloneSuspects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "CloneSuspects", []report.CardRef{{CardID: "C-x", Serial: "SN-X", OperatorID: "op-c", SiteID: siteA.ID, Status: "revoked", ChangedAt: ts(3, 0, 0)}}, clones)
}
