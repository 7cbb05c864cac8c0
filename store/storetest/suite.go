// Package storetest is the one conformance suite every store.Store passes,
// run by store/sqlite and store/postgres against their real engines (house
// style 5), and the benchmarks both run.
//
// Unlike ephemeraltest, the harness returns no clock: a store never reads
// the time, every instant it keeps is passed in by its caller (house style
// 6), so the suite passes fixed instants at microsecond precision, the
// precision both stores keep.
//
// What the suite holds the stores to, beyond round trips of every entity:
// the errors of the contract (ErrNotFound, ErrConflict); that a rolled-back
// transaction leaves nothing behind, history included; that the history is
// one gap-free hash chain however many writers append to it, that the
// database itself refuses to change it, and that verification names the
// first event changed, removed or moved by someone who lifts that guard;
// and that work claimed or rows locked "for update" are never handed to two
// transactions at once.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// Harness is how the suite reaches one implementation.
type Harness struct {
	// Store is an empty store on a database private to the test; the
	// engine's test closes it when the test ends.
	Store store.Store

	// Exec runs one statement directly on the same database, outside the
	// store, as someone with database access would: to tamper with history
	// and to check that the database refuses to let it be changed. It
	// returns the statement's error so that a refusal can be checked.
	Exec func(t *testing.T, query string) error

	// Unguard lists the statements that drop the database's append-only
	// guard on audit_events (its triggers), in order.
	Unguard []string
}

// Run runs the suite. open is called once per subtest and must return a
// Harness on an empty database of its own.
func Run(t *testing.T, open func(t *testing.T) Harness) {
	tests := []struct {
		name string
		run  func(*testing.T, func(*testing.T) Harness)
	}{
		{"Sites", testSites},
		{"Terminals", testTerminals},
		{"Roles", testRoles},
		{"Operators", testOperators},
		{"StaffNumber", testStaffNumber},
		{"Locks", testLocks},
		{"Grants", testGrants},
		{"Cards", testCards},
		{"Sessions", testSessions},
		{"EndSessions", testEndSessions},
		{"EndedSessionsSince", testEndedSessionsSince},
		{"Changes", testChanges},
		{"ClaimDueChanges", testClaimDueChanges},
		{"Policy", testPolicy},
		{"SigningKeys", testSigningKeys},
		{"Meta", testMeta},
		{"Stops", testStops},
		{"Passwords", testPasswords},
		{"OperatorBatches", testOperatorBatches},
		{"DueOperators", testDueOperators},
		{"EndGrants", testEndGrants},
		{"ExpireGrants", testExpireGrants},
		{"AuthzVersions", testAuthzVersions},
		{"LoadAuthz", testLoadAuthz},
		{"CollectCards", testCollectCards},
		{"EndOperatorSessions", testEndOperatorSessions},
		{"FinishChanges", testFinishChanges},
		{"Enrollments", testEnrollments},
		{"NotFound", testNotFound},
		{"UpdateUnknown", testUpdateUnknown},
		{"Conflict", testConflict},
		{"Rollback", testRollback},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ListOperators", testListOperators},
		{"ListGrants", testListGrants},
		{"ListChanges", testListChanges},
		{"ListAudit", testListAudit},
		{"AuditChain", testAuditChain},
		{"AuditScanPages", testAuditScanPages},
		{"AuditConcurrentAppend", testAuditConcurrentAppend},
		{"AuditAppendOnly", testAuditAppendOnly},
		{"AuditTamper", testAuditTamper},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ForUpdateLosesNoUpdate", testForUpdateLosesNoUpdate},
		{"MixedOutcomes", testMixedOutcomes},
		{"HistoryReadThenFailure", testHistoryReadThenFailure},
		{"CloseAnswersEveryone", testCloseAnswersEveryone},
		{"Reports", testReports},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open)
		})
	}
}

// ---- helpers

// ts is an instant on 2027-04-<day> in UTC, with a microsecond part so that
// a store keeping less precision is caught.
func ts(day, hour, minute int) time.Time {
	return time.Date(2027, time.April, day, hour, minute, 7, 654321000, time.UTC).UTC()
}

// opts compare domain values as the contract defines them: an empty slice
// and nil are the same (a store may return either), times by instant.
var opts = cmp.Options{cmpopts.EquateEmpty()}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, opts); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// write runs fn in a read-write transaction and fails the test on error.
func write(t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	ctx := t.Context()
	if err := s.InTx(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatalf("InTx: %v", err)
	}
}

// read runs fn in a read-only transaction and returns its value.
func read[T any](t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) (T, error)) T {
	t.Helper()
	ctx := t.Context()
	var v T
	err := s.View(ctx, func(tx store.Tx) error {
		var err error
		v, err = fn(ctx, tx)
		return err
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return v
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error = %v, want %v", what, err, target)
	}
}

// pages collects every item a list returns by following its cursor, one
// page of size at a time, and fails if it never ends.
func pages[T any, C any](t *testing.T, size int, list func(after C, limit int) []T, cursor func(T) C) (all []T, n int) {
	t.Helper()
	var after C
	for n = 1; n < 1000; n++ {
		page := list(after, size)
		if len(page) > size {
			t.Fatalf("page %d has %d items, more than the limit %d", n, len(page), size)
		}
		all = append(all, page...)
		if len(page) < size {
			return all, n
		}
		after = cursor(page[len(page)-1])
	}
	t.Fatal("pagination does not end")
	return nil, 0
}

func ids[T any, ID any](items []T, id func(T) ID) []ID {
	out := []ID{}
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}

// ---- fixtures

var (
	siteA = lifecycle.Site{ID: "site-a", Name: "本庁舎 市民課", MunicipalityCode: "131016", CreatedAt: ts(1, 8, 0)}
	siteB = lifecycle.Site{ID: "site-b", Name: "北出張所", MunicipalityCode: "131016", CreatedAt: ts(1, 8, 5)}
)

func operator(id opgate.OperatorID, staff string, site opgate.SiteID, status lifecycle.Status) lifecycle.Operator {
	return lifecycle.Operator{
		ID: id, StaffNumber: staff, Name: "職員 " + string(id), SiteID: site,
		EmploymentType: lifecycle.Regular, Status: status,
		IssuedAt: ts(1, 9, 0), IssuedBy: "op-admin", StatusChanged: ts(1, 9, 0),
	}
}

// seed creates the two sites and operators op-a (site-a) and op-b (site-b).
func seed(t *testing.T, s store.Store) {
	t.Helper()
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(
			tx.CreateSite(ctx, siteA),
			tx.CreateSite(ctx, siteB),
			tx.CreateOperator(ctx, operator("op-a", "S-0001", siteA.ID, lifecycle.Active)),
			tx.CreateOperator(ctx, operator("op-b", "S-0002", siteB.ID, lifecycle.Active)),
		)
	})
}

// event is a realistic history entry.
func event(i int) audit.Event {
	return audit.Event{
		At:         ts(2, 9, 0).Add(time.Duration(i) * time.Millisecond),
		Type:       audit.LoginSucceeded,
		ActorID:    "op-a",
		OperatorID: "op-a",
		SiteID:     siteA.ID,
		TerminalID: "term-a1",
		Resource:   fmt.Sprintf("session:S-%08d", i),
		Data:       audit.D(map[string]any{"amr": []string{"hwk", "pin"}, "card_id": "C-7Q2K9X4M", "ip": "10.20.30.40"}),
	}
}

// verify walks the whole history as an auditor would.
func verify(ctx context.Context, s store.Store) error {
	a, err := s.AuditAnchor(ctx)
	if err != nil {
		return fmt.Errorf("AuditAnchor: %w", err)
	}
	v := audit.NewVerifier(a)
	if err := s.ScanAudit(ctx, a.Seq, v.Next); err != nil {
		return err
	}
	seq, hash, err := s.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("AuditHead: %w", err)
	}
	return v.Finish(seq, hash)
}

func scanAll(t *testing.T, s store.Store, after int64) []audit.Event {
	t.Helper()
	var got []audit.Event
	if err := s.ScanAudit(t.Context(), after, func(e audit.Event) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("ScanAudit: %v", err)
	}
	return got
}

// ---- round trips

func testSites(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateSite(ctx, siteB), tx.CreateSite(ctx, siteA))
	})
	for _, want := range []lifecycle.Site{siteA, siteB} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Site, error) { return tx.GetSite(ctx, want.ID) })
		diff(t, "GetSite("+string(want.ID)+")", want, got)
	}
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Site, error) { return tx.ListSites(ctx) })
	diff(t, "ListSites", []lifecycle.Site{siteA, siteB}, got)
}

func testTerminals(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	t1 := lifecycle.Terminal{ID: "term-a1", SiteID: siteA.ID, Name: "窓口1", CreatedAt: ts(1, 10, 0)}
	t2 := lifecycle.Terminal{ID: "term-a2", SiteID: siteA.ID, Name: "窓口2", CreatedAt: ts(1, 10, 1)}
	t3 := lifecycle.Terminal{ID: "term-b1", SiteID: siteB.ID, Name: "窓口1", CreatedAt: ts(1, 10, 2)}
	gone := lifecycle.Terminal{ID: "term-b0", SiteID: siteB.ID, Name: "旧端末", CreatedAt: ts(1, 10, 3), RemovedAt: ts(1, 10, 4)}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateTerminal(ctx, t3), tx.CreateTerminal(ctx, t1), tx.CreateTerminal(ctx, t2), tx.CreateTerminal(ctx, gone))
	})
	for _, want := range []lifecycle.Terminal{t1, t2, t3, gone} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Terminal, error) {
			return tx.GetTerminal(ctx, want.ID)
		})
		diff(t, "GetTerminal("+string(want.ID)+")", want, got)
	}

	removed := ts(3, 17, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.RemoveTerminal(ctx, t2.ID, removed) })
	t2.RemovedAt = removed
	got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Terminal, error) { return tx.GetTerminal(ctx, t2.ID) })
	diff(t, "GetTerminal after RemoveTerminal", t2, got)

	err := s.InTx(t.Context(), func(tx store.Tx) error { return tx.RemoveTerminal(t.Context(), t2.ID, ts(4, 0, 0)) })
	wantErr(t, "RemoveTerminal of a removed terminal", err, store.ErrNotFound)
	got = read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Terminal, error) { return tx.GetTerminal(ctx, t2.ID) })
	diff(t, "GetTerminal after a second RemoveTerminal", t2, got)

	for _, tc := range []struct {
		name string
		site opgate.SiteID
		want []lifecycle.Terminal
	}{
		{"every site", "", []lifecycle.Terminal{t1, t3}},
		{"site-a", siteA.ID, []lifecycle.Terminal{t1}},
		{"site-b", siteB.ID, []lifecycle.Terminal{t3}},
		{"unknown site", "site-x", nil},
	} {
		t.Run("ListTerminals/"+tc.name, func(t *testing.T) {
			got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Terminal, error) {
				return tx.ListTerminals(ctx, tc.site)
			})
			diff(t, "ListTerminals", tc.want, got)
		})
	}
}

func testRoles(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	clerk := roles.Role{ID: "clerk", Name: "窓口担当", Permissions: []opgate.Permission{roles.ResidentRead, roles.CertificateIssue}}
	admin := roles.Role{ID: "admin", Name: "管理者", Permissions: []opgate.Permission{roles.PolicyManage}, ConflictsWith: []opgate.RoleID{"auditor"}, BuiltIn: true}
	empty := roles.Role{ID: "empty", Name: "空"}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.PutRole(ctx, clerk), tx.PutRole(ctx, admin), tx.PutRole(ctx, empty))
	})
	for _, want := range []roles.Role{clerk, admin, empty} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (roles.Role, error) { return tx.GetRole(ctx, want.ID) })
		diff(t, "GetRole("+string(want.ID)+")", want, got)
	}

	// PutRole replaces a role in place.
	clerk.Name = "窓口担当（改）"
	clerk.Permissions = []opgate.Permission{roles.ResidentRead, roles.ResidentUpdate, roles.CertificateIssue}
	clerk.ConflictsWith = []opgate.RoleID{"admin"}
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutRole(ctx, clerk) })
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]roles.Role, error) { return tx.ListRoles(ctx) })
	diff(t, "ListRoles after replacing clerk", []roles.Role{admin, clerk, empty}, got)
}

func testOperators(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	plain := operator("op-1", "S-1001", siteA.ID, lifecycle.Active)
	dated := operator("op-2", "S-1002", siteB.ID, lifecycle.Suspended)
	dated.EmploymentType = lifecycle.Temporary
	dated.ValidUntil = ts(30, 23, 59)
	dated.LastLoginAt = ts(2, 8, 45)
	dated.StatusChanged = ts(3, 12, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateOperator(ctx, plain), tx.CreateOperator(ctx, dated))
	})
	for _, tc := range []struct {
		name string
		want lifecycle.Operator
	}{
		{"zero ValidUntil and LastLoginAt", plain},
		{"set ValidUntil and LastLoginAt", dated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Operator, error) {
				return tx.GetOperator(ctx, tc.want.ID)
			})
			diff(t, "GetOperator", tc.want, got)
			var locked lifecycle.Operator
			write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
				locked, err = tx.GetOperatorForUpdate(ctx, tc.want.ID)
				return err
			})
			diff(t, "GetOperatorForUpdate", tc.want, locked)
		})
	}

	// Every field UpdateOperator keeps, both ways between zero and set.
	plain2 := plain
	plain2.StaffNumber, plain2.Name, plain2.SiteID = "S-1101", "職員 改名", siteB.ID
	plain2.EmploymentType, plain2.Status = lifecycle.Contractor, lifecycle.Expired
	plain2.ValidUntil, plain2.LastLoginAt, plain2.StatusChanged = ts(20, 0, 0), ts(4, 9, 1), ts(5, 0, 0)
	dated2 := dated
	dated2.ValidUntil, dated2.LastLoginAt, dated2.Status = time.Time{}, time.Time{}, lifecycle.Active
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateOperator(ctx, plain2), tx.UpdateOperator(ctx, dated2))
	})
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) {
		return tx.ListOperators(ctx, lifecycle.OperatorFilter{})
	})
	diff(t, "ListOperators after UpdateOperator", []lifecycle.Operator{
		plain2, dated2, operator("op-a", "S-0001", siteA.ID, lifecycle.Active), operator("op-b", "S-0002", siteB.ID, lifecycle.Active),
	}, got)
	n := read(t, s, func(ctx context.Context, tx store.Tx) (int, error) { return tx.CountOperators(ctx) })
	diff(t, "CountOperators", 4, n)
}

// testStaffNumber is R1.1: one staff member, at most one operator ID that
// is not retired.
func testStaffNumber(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	ctx := t.Context()
	create := func(o lifecycle.Operator) error {
		return s.InTx(ctx, func(tx store.Tx) error { return tx.CreateOperator(ctx, o) })
	}
	update := func(o lifecycle.Operator) error {
		return s.InTx(ctx, func(tx store.Tx) error { return tx.UpdateOperator(ctx, o) })
	}
	first := operator("op-1", "S-7777", siteA.ID, lifecycle.Active)
	second := operator("op-2", "S-7777", siteB.ID, lifecycle.Active)
	third := operator("op-3", "S-7777", siteB.ID, lifecycle.Suspended)
	retired := first
	retired.Status = lifecycle.Retired
	revived := first

	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{"first", func() error { return create(first) }, nil},
		{"second while the first is active", func() error { return create(second) }, store.ErrConflict},
		{"retire the first", func() error { return update(retired) }, nil},
		{"second once the first is retired", func() error { return create(second) }, nil},
		{"a suspended third while the second is active", func() error { return create(third) }, store.ErrConflict},
		{"reinstate the retired first", func() error { return update(revived) }, store.ErrConflict},
		{"a retired operator with the number", func() error {
			o := operator("op-4", "S-7777", siteA.ID, lifecycle.Retired)
			return create(o)
		}, nil},
	}
	for _, st := range steps {
		err := st.do()
		if st.want == nil && err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.want != nil {
			wantErr(t, st.name, err, st.want)
		}
	}
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]opgate.OperatorID, error) {
		ops, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{StaffNumber: "S-7777"})
		return ids(ops, func(o lifecycle.Operator) opgate.OperatorID { return o.ID }), err
	})
	diff(t, "operators with S-7777", []opgate.OperatorID{"op-1", "op-2", "op-4"}, got)
	// The console's search: ID or staff number from the start (any case),
	// or any part of the name; the query's own % and _ are plain text.
	for _, tc := range []struct {
		q    string
		want []opgate.OperatorID
	}{
		{"s-77", []opgate.OperatorID{"op-1", "op-2", "op-4"}},
		{"OP-4", []opgate.OperatorID{"op-4"}},
		{"員 op-2", []opgate.OperatorID{"op-2"}},
		{"77", nil},
		{"%", nil},
		{"op_1", nil},
	} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) ([]opgate.OperatorID, error) {
			ops, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{Query: tc.q})
			return ids(ops, func(o lifecycle.Operator) opgate.OperatorID { return o.ID }), err
		})
		diff(t, "operators matching "+tc.q, tc.want, got)
	}
}

func testLocks(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	get := func(id opgate.OperatorID) lifecycle.Lock {
		return read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Lock, error) { return tx.GetLock(ctx, id) })
	}
	diff(t, "GetLock before any failure", lifecycle.Lock{OperatorID: "op-a"}, get("op-a"))
	diff(t, "GetLock of an unknown operator", lifecycle.Lock{OperatorID: "op-nobody"}, get("op-nobody"))

	steps := []struct {
		name string
		put  lifecycle.Lock
	}{
		{"first failure", lifecycle.Lock{OperatorID: "op-a", Recent: []time.Time{ts(2, 9, 0)}}},
		{"attempt in flight", lifecycle.Lock{OperatorID: "op-a", Recent: []time.Time{ts(2, 9, 0), ts(2, 9, 1)},
			Pending: []lifecycle.Reservation{{ID: "r1", Until: ts(2, 9, 2)}, {ID: "r2", Until: ts(2, 9, 3)}}}},
		{"locked", lifecycle.Lock{OperatorID: "op-a", Until: ts(2, 9, 30), LocksInRow: 1}},
		{"permanent", lifecycle.Lock{OperatorID: "op-a", Permanent: true, LocksInRow: 3}},
		{"unlocked", lifecycle.Lock{OperatorID: "op-a"}},
	}
	for _, st := range steps {
		write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutLock(ctx, st.put) })
		diff(t, "GetLock after "+st.name, st.put, get("op-a"))
	}
	diff(t, "GetLock of another operator", lifecycle.Lock{OperatorID: "op-b"}, get("op-b"))
}

func testGrants(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	pending := authz.Grant{
		ID: "g-1", OperatorID: "op-a", RoleID: "restricted_reader", SiteID: siteA.ID, Status: authz.PendingApproval,
		GrantedBy: "op-chief", Reason: "支援措置対応", CreatedAt: ts(2, 10, 0), ValidUntil: ts(30, 0, 0),
	}
	active := authz.Grant{
		ID: "g-2", OperatorID: "op-b", RoleID: "counter_clerk", SiteID: opgate.AllSites, Status: authz.Active,
		GrantedBy: "op-chief", Reason: "配属", CreatedAt: ts(2, 10, 5), ValidFrom: ts(2, 10, 5),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateGrant(ctx, pending), tx.CreateGrant(ctx, active))
	})
	for _, want := range []authz.Grant{pending, active} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (authz.Grant, error) { return tx.GetGrant(ctx, want.ID) })
		diff(t, "GetGrant("+string(want.ID)+")", want, got)
	}

	approved := pending
	approved.Status, approved.ApprovedBy, approved.ValidFrom = authz.Active, "op-admin", ts(2, 11, 0)
	revoked := active
	revoked.Status, revoked.EndedAt, revoked.EndedBy, revoked.EndReason = authz.Revoked, ts(3, 9, 0), "op-chief", "異動"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateGrant(ctx, approved), tx.UpdateGrant(ctx, revoked))
	})
	for _, want := range []authz.Grant{approved, revoked} {
		var got authz.Grant
		write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
			got, err = tx.GetGrant(ctx, want.ID)
			return err
		})
		diff(t, "GetGrant("+string(want.ID)+") after UpdateGrant", want, got)
	}

	// Back to zero where a time may be zero.
	approved.ValidUntil = time.Time{}
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateGrant(ctx, approved) })
	got := read(t, s, func(ctx context.Context, tx store.Tx) (authz.Grant, error) { return tx.GetGrant(ctx, approved.ID) })
	diff(t, "GetGrant after clearing ValidUntil", approved, got)

	// A copy read before the grant ended, written back, is refused: the
	// grant stays revoked.
	stale := active
	stale.ApprovedBy = "op-late"
	wantErr(t, "UpdateGrant of a revoked grant", s.InTx(t.Context(), func(tx store.Tx) error { return tx.UpdateGrant(t.Context(), stale) }), store.ErrConflict)
	got = read(t, s, func(ctx context.Context, tx store.Tx) (authz.Grant, error) { return tx.GetGrant(ctx, revoked.ID) })
	diff(t, "GetGrant after a stale write", revoked, got)
}

func testCards(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	c1 := authn.Card{
		ID: "card-1", OperatorID: "op-a", Serial: "JP-000123", Label: "青いカード", Status: authn.CardActive,
		CredentialID:   []byte{0x00, 0x01, 0xfe, 0xff, 'c', 'r', 'e', 'd'},
		PublicKey:      []byte{0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20, 0x00},
		SignCount:      math.MaxUint32,
		AAGUID:         []byte{0xee, 0x88, 0x28, 0x79, 0x72, 0x1c, 0x49, 0x13, 0x97, 0x75, 0x3d, 0xfc, 0xce, 0x97, 0x07, 0x2a},
		Flags:          0xff,
		Attestation:    "packed",
		CloneSuspected: true,
		EnrolledAt:     ts(2, 9, 0), EnrolledBy: "op-chief", StatusChanged: ts(2, 9, 0),
	}
	c2 := authn.Card{
		ID: "card-2", OperatorID: "op-a", Serial: "JP-000124", Status: authn.CardActive,
		CredentialID: []byte("second-credential"), PublicKey: []byte{0x01}, AAGUID: make([]byte, 16),
		Attestation: "none", EnrolledAt: ts(2, 8, 0), EnrolledBy: "op-chief", StatusChanged: ts(2, 8, 0),
	}
	c3 := authn.Card{
		ID: "card-3", OperatorID: "op-b", Serial: "JP-000200", Status: authn.CardLost,
		CredentialID: []byte("third"), PublicKey: []byte{0x02}, AAGUID: make([]byte, 16),
		EnrolledAt: ts(2, 7, 0), EnrolledBy: "op-chief", StatusChanged: ts(2, 7, 30),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateCard(ctx, c1), tx.CreateCard(ctx, c2), tx.CreateCard(ctx, c3))
	})
	for _, want := range []authn.Card{c1, c2, c3} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Card, error) { return tx.GetCard(ctx, want.ID) })
		diff(t, "GetCard("+string(want.ID)+")", want, got)
	}
	byCred := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Card, error) {
		return tx.GetCardByCredential(ctx, c1.CredentialID)
	})
	diff(t, "GetCardByCredential", c1, byCred)
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]authn.Card, error) { return tx.ListCards(ctx, "op-a") })
	diff(t, "ListCards(op-a), by enrollment", []authn.Card{c2, c1}, got)

	c1.Label, c1.Status, c1.SignCount, c1.CloneSuspected, c1.StatusChanged = "", authn.CardRevoked, 7, false, ts(3, 9, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateCard(ctx, c1) })
	one := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Card, error) { return tx.GetCard(ctx, c1.ID) })
	diff(t, "GetCard after UpdateCard", c1, one)
	got = read(t, s, func(ctx context.Context, tx store.Tx) ([]authn.Card, error) { return tx.ListCards(ctx, "op-nobody") })
	diff(t, "ListCards of an operator without cards", []authn.Card(nil), got)

	// A card that left "active" never returns to it: a login's copy read
	// before the card was reported lost, written back, is refused. Leaving
	// "lost" for "collected" is allowed.
	stale := c3
	stale.Status, stale.SignCount = authn.CardActive, 99
	wantErr(t, "UpdateCard reviving a lost card", s.InTx(t.Context(), func(tx store.Tx) error { return tx.UpdateCard(t.Context(), stale) }), store.ErrConflict)
	one = read(t, s, func(ctx context.Context, tx store.Tx) (authn.Card, error) { return tx.GetCard(ctx, c3.ID) })
	diff(t, "GetCard after a stale write", c3, one)
	c3.Status, c3.StatusChanged = authn.CardCollected, ts(3, 10, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateCard(ctx, c3) })
}

func session(id opgate.SessionID, op opgate.OperatorID, site opgate.SiteID, card opgate.CardID) authn.Session {
	return authn.Session{
		ID: id, OperatorID: op, SiteID: site, TerminalID: opgate.TerminalID("term-" + string(site)), CardID: card,
		AMR: []string{"hwk", "pin"}, CreatedAt: ts(2, 9, 0), LastSeenAt: ts(2, 9, 5), ExpiresAt: ts(2, 18, 0),
		RefreshHash: []byte("0123456789abcdef0123456789abcdef"),
	}
}

func testSessions(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	card := session("sess-1", "op-a", siteA.ID, "card-1")
	pwd := session("sess-2", "op-b", siteB.ID, "")
	pwd.AMR, pwd.PasswordChangeRequired = []string{"pwd"}, true
	ended := session("sess-3", "op-a", siteA.ID, "card-1")
	ended.AMR, ended.EndedAt, ended.EndReason = []string{"hwk", "pin", "mfa"}, ts(2, 12, 0), "logout"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateSession(ctx, card), tx.CreateSession(ctx, pwd), tx.CreateSession(ctx, ended))
	})
	for _, want := range []authn.Session{card, pwd, ended} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, want.ID) })
		diff(t, "GetSession("+string(want.ID)+")", want, got)
	}

	card.LastSeenAt, card.RefreshHash = ts(2, 9, 30), []byte("fedcba9876543210fedcba9876543210")
	pwd.PasswordChangeRequired, pwd.EndedAt, pwd.EndReason = false, ts(2, 10, 0), "password_changed"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateSession(ctx, card), tx.UpdateSession(ctx, pwd))
	})
	for _, want := range []authn.Session{card, pwd} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, want.ID) })
		diff(t, "GetSession("+string(want.ID)+") after UpdateSession", want, got)
	}
	// A writer holding a copy read before the session ended writes it
	// back: the session stays ended, with its first end.
	stale := pwd
	stale.EndedAt, stale.EndReason, stale.RefreshHash = time.Time{}, "", []byte("00000000000000000000000000000000")
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateSession(ctx, stale) })
	got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, pwd.ID) })
	if !got.EndedAt.Equal(pwd.EndedAt) || got.EndReason != pwd.EndReason {
		t.Errorf("an ended session came back: ended %v (%q), want %v (%q)", got.EndedAt, got.EndReason, pwd.EndedAt, pwd.EndReason)
	}
	ended2 := ended
	ended2.EndedAt, ended2.EndReason = ts(2, 13, 0), "refresh_token_reuse"
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.UpdateSession(ctx, ended2) })
	if got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, ended.ID) }); got.EndReason != "logout" {
		t.Errorf("a second end replaced the first: %q", got.EndReason)
	}
}

func testEndSessions(t *testing.T, open func(*testing.T) Harness) {
	live := []authn.Session{
		session("s-1", "op-a", siteA.ID, "card-1"),
		session("s-2", "op-a", siteB.ID, "card-2"),
		session("s-3", "op-b", siteA.ID, "card-3"),
		session("s-4", "op-b", siteB.ID, ""),
	}
	done := session("s-0", "op-a", siteA.ID, "card-1")
	done.EndedAt, done.EndReason = ts(2, 8, 0), "logout"

	for _, tc := range []struct {
		name  string
		scope authn.SessionScope
		want  []opgate.SessionID
	}{
		{"operator", authn.SessionScope{OperatorID: "op-a"}, []opgate.SessionID{"s-1", "s-2"}},
		{"card", authn.SessionScope{CardID: "card-1"}, []opgate.SessionID{"s-1"}},
		{"site", authn.SessionScope{SiteID: siteA.ID}, []opgate.SessionID{"s-1", "s-3"}},
		{"operator at site", authn.SessionScope{OperatorID: "op-a", SiteID: siteA.ID}, []opgate.SessionID{"s-1"}},
		{"all", authn.SessionScope{All: true}, []opgate.SessionID{"s-1", "s-2", "s-3", "s-4"}},
		{"all except one", authn.SessionScope{All: true, Except: "s-2"}, []opgate.SessionID{"s-1", "s-3", "s-4"}},
		{"operator except one", authn.SessionScope{OperatorID: "op-a", Except: "s-1"}, []opgate.SessionID{"s-2"}},
		{"unknown operator", authn.SessionScope{OperatorID: "op-nobody"}, nil},
		{"empty scope ends nothing", authn.SessionScope{}, nil},
		{"except alone ends nothing", authn.SessionScope{Except: "s-1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t).Store
			write(t, s, func(ctx context.Context, tx store.Tx) error {
				errs := []error{tx.CreateSession(ctx, done)}
				for _, v := range live {
					errs = append(errs, tx.CreateSession(ctx, v))
				}
				return errors.Join(errs...)
			})
			when, reason := ts(3, 12, 0), "emergency_stop"
			var got []opgate.SessionID
			write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
				got, err = tx.EndSessions(ctx, tc.scope, when, reason)
				return err
			})
			slices.Sort(got)
			diff(t, "EndSessions", tc.want, got)

			want := []authn.Session{done}
			for _, v := range live {
				if slices.Contains(tc.want, v.ID) {
					v.EndedAt, v.EndReason = when, reason
				}
				want = append(want, v)
			}
			all := make([]authn.Session, 0, len(want))
			for _, w := range want {
				all = append(all, read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, w.ID) }))
			}
			diff(t, "sessions after EndSessions", want, all)
		})
	}
}

func testEndedSessionsSince(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	early := session("s-early", "op-a", siteA.ID, "")
	early.EndedAt = ts(2, 9, 0)
	mid := session("s-mid", "op-a", siteA.ID, "")
	mid.EndedAt = ts(2, 10, 0)
	late := session("s-late", "op-b", siteB.ID, "")
	late.EndedAt = ts(2, 11, 0)
	alive := session("s-alive", "op-b", siteB.ID, "")
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateSession(ctx, late), tx.CreateSession(ctx, early), tx.CreateSession(ctx, alive), tx.CreateSession(ctx, mid))
	})
	// One more ended through EndSessions, the way most sessions end.
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.EndSessions(ctx, authn.SessionScope{OperatorID: "op-b", Except: "s-late"}, ts(2, 12, 0), "transfer")
		return err
	})
	for _, tc := range []struct {
		name  string
		since time.Time
		want  []opgate.SessionID
	}{
		{"from the start", time.Time{}.Add(time.Microsecond), []opgate.SessionID{"s-early", "s-mid", "s-late", "s-alive"}},
		{"at an end, inclusive", mid.EndedAt, []opgate.SessionID{"s-mid", "s-late", "s-alive"}},
		{"just after an end", mid.EndedAt.Add(time.Microsecond), []opgate.SessionID{"s-late", "s-alive"}},
		{"after every end", ts(2, 12, 1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := read(t, s, func(ctx context.Context, tx store.Tx) ([]opgate.SessionID, error) {
				return tx.EndedSessionsSince(ctx, tc.since)
			})
			diff(t, "EndedSessionsSince", tc.want, got)
		})
	}
}

func change(id opgate.ChangeID, op opgate.OperatorID, eff time.Time, status lifecycle.ChangeStatus) lifecycle.Change {
	return lifecycle.Change{
		ID: id, OperatorID: op, Kind: lifecycle.ChangeTransfer, ToSiteID: siteB.ID, FromSiteID: siteA.ID, Reason: "人事異動",
		EffectiveAt: eff, CreatedBy: "op-chief", CreatedAt: ts(1, 12, 0), Status: status,
	}
}

func testChanges(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	transfer := change("ch-1", "op-a", ts(10, 0, 0), lifecycle.ChangePending)
	retire := change("ch-2", "op-b", ts(11, 0, 0), lifecycle.ChangePending)
	retire.Kind, retire.ToSiteID, retire.Reason = lifecycle.ChangeRetire, "", "退職"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateChange(ctx, transfer), tx.CreateChange(ctx, retire))
	})
	for _, want := range []lifecycle.Change{transfer, retire} {
		got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Change, error) { return tx.GetChange(ctx, want.ID) })
		diff(t, "GetChange("+string(want.ID)+")", want, got)
	}
	transfer.Status, transfer.DoneAt = lifecycle.ChangeApplied, ts(10, 0, 1)
	retire.Status, retire.DoneAt, retire.Error = lifecycle.ChangeFailed, ts(11, 0, 1), "operator already retired"
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateChange(ctx, transfer), tx.UpdateChange(ctx, retire))
	})
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Change, error) {
		return tx.ListChanges(ctx, lifecycle.ChangeFilter{})
	})
	diff(t, "ListChanges after UpdateChange", []lifecycle.Change{transfer, retire}, got)
}

func testClaimDueChanges(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	// IDs run against due order, so that ordering by ID would show.
	all := []lifecycle.Change{
		change("ch-a", "op-a", ts(5, 3, 0), lifecycle.ChangePending),
		change("ch-b", "op-a", ts(5, 1, 0), lifecycle.ChangePending),
		change("ch-c", "op-b", ts(5, 2, 0), lifecycle.ChangePending),
		change("ch-d", "op-b", ts(5, 5, 0), lifecycle.ChangePending), // not yet due
		change("ch-e", "op-a", ts(5, 0, 30), lifecycle.ChangeApplied),
		change("ch-f", "op-b", ts(5, 0, 10), lifecycle.ChangeCancelled),
		change("ch-g", "op-b", ts(5, 0, 20), lifecycle.ChangeFailed),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, c := range all {
			errs = append(errs, tx.CreateChange(ctx, c))
		}
		return errors.Join(errs...)
	})
	for _, tc := range []struct {
		name  string
		now   time.Time
		limit int
		want  []opgate.ChangeID
	}{
		{"due ones in effective order", ts(5, 4, 0), 10, []opgate.ChangeID{"ch-b", "ch-c", "ch-a"}},
		{"limit", ts(5, 4, 0), 2, []opgate.ChangeID{"ch-b", "ch-c"}},
		{"due at exactly now", all[0].EffectiveAt, 10, []opgate.ChangeID{"ch-b", "ch-c", "ch-a"}},
		{"a microsecond early", all[0].EffectiveAt.Add(-time.Microsecond), 10, []opgate.ChangeID{"ch-b", "ch-c"}},
		{"nothing due", ts(5, 0, 59), 10, nil},
		{"everything due", ts(6, 0, 0), 0, []opgate.ChangeID{"ch-b", "ch-c", "ch-a", "ch-d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []lifecycle.Change
			write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
				got, err = tx.ClaimDueChanges(ctx, tc.now, tc.limit)
				return err
			})
			diff(t, "ClaimDueChanges", tc.want, ids(got, func(c lifecycle.Change) opgate.ChangeID { return c.ID }))
			for _, c := range got {
				i := slices.IndexFunc(all, func(w lifecycle.Change) bool { return w.ID == c.ID })
				diff(t, "claimed "+string(c.ID), all[i], c)
			}
		})
	}
}

func testPolicy(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	get := func() policy.Policy {
		return read(t, s, func(ctx context.Context, tx store.Tx) (policy.Policy, error) { return tx.GetPolicy(ctx) })
	}
	diff(t, "GetPolicy with none stored", policy.Default(), get())

	first := policy.Default()
	first.LoginMethods = []string{policy.MethodCard, policy.MethodCardPassword}
	first.Lockout.Threshold = 3
	first.Cards.AllowedAAGUIDs = []string{"ee882879-721c-4913-9775-3dfcce97072a"}
	second := first
	second.Session.IdleTimeout = 300 * time.Second
	second.RestrictedPurposeRequired = false
	for i, p := range []policy.Policy{first, second} {
		var stored policy.Policy
		write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
			stored, err = tx.PutPolicy(ctx, p, ts(3, 9, i), "op-admin")
			return err
		})
		p.Version = int64(i + 1)
		diff(t, fmt.Sprintf("PutPolicy #%d", i+1), p, stored)
		diff(t, fmt.Sprintf("GetPolicy after PutPolicy #%d", i+1), p, get())
	}
}

func testSigningKeys(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	list := func() []authn.StoredKey {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]authn.StoredKey, error) { return tx.ListSigningKeys(ctx) })
	}
	diff(t, "ListSigningKeys when empty", []authn.StoredKey(nil), list())
	older := authn.StoredKey{ID: "kid-2", PEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), CreatedAt: ts(1, 0, 0), NotAfter: ts(9, 0, 0)}
	newer := authn.StoredKey{ID: "kid-1", PEM: []byte("-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n"), CreatedAt: ts(8, 0, 0)}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.AddSigningKey(ctx, newer), tx.AddSigningKey(ctx, older))
	})
	diff(t, "ListSigningKeys, by creation", []authn.StoredKey{older, newer}, list())
	older.NotAfter, newer.NotAfter = time.Time{}, ts(20, 0, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.UpdateSigningKey(ctx, older), tx.UpdateSigningKey(ctx, newer))
	})
	diff(t, "ListSigningKeys after UpdateSigningKey", []authn.StoredKey{older, newer}, list())
}

func testMeta(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	get := func() (string, error) {
		var v string
		err := s.View(ctx, func(tx store.Tx) (err error) {
			v, err = tx.GetMeta(ctx, "bootstrap")
			return err
		})
		return v, err
	}
	_, err := get()
	wantErr(t, "GetMeta before PutMeta", err, store.ErrNotFound)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.PutMeta(ctx, "bootstrap", "2027-04-01T09:00:00Z op-admin")
	})
	err = s.InTx(ctx, func(tx store.Tx) error { return tx.PutMeta(ctx, "bootstrap", "again") })
	wantErr(t, "second PutMeta", err, store.ErrConflict)
	v, err := get()
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "GetMeta", "2027-04-01T09:00:00Z op-admin", v)
}

func testPasswords(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	ctx := t.Context()
	err := s.View(ctx, func(tx store.Tx) error { _, err := tx.GetPassword(ctx, "op-a"); return err })
	wantErr(t, "GetPassword before any", err, store.ErrNotFound)

	history := func(n int) []string {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]string, error) { return tx.PasswordHistory(ctx, "op-a", n) })
	}
	pw := func(i int, temporary bool) authn.PasswordRecord {
		return authn.PasswordRecord{
			OperatorID: "op-a", Hash: fmt.Sprintf("$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$hash%d", i),
			Temporary: temporary, SetAt: ts(1+i, 9, 0), ExpiresAt: ts(1+i, 9, 0).Add(90 * 24 * time.Hour),
		}
	}
	steps := []struct {
		name    string
		put     authn.PasswordRecord
		history []string
	}{
		{"temporary", pw(0, true), nil},
		{"first own", pw(1, false), []string{pw(0, true).Hash}},
		{"second own", pw(2, false), []string{pw(1, false).Hash, pw(0, true).Hash}},
	}
	for _, st := range steps {
		write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.PutPassword(ctx, st.put) })
		got := read(t, s, func(ctx context.Context, tx store.Tx) (authn.PasswordRecord, error) {
			return tx.GetPassword(ctx, "op-a")
		})
		diff(t, "GetPassword after "+st.name, st.put, got)
		diff(t, "PasswordHistory after "+st.name+", newest first", st.history, history(10))
	}
	diff(t, "PasswordHistory limited to 1", []string{pw(1, false).Hash}, history(1))
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]string, error) { return tx.PasswordHistory(ctx, "op-b", 10) })
	diff(t, "PasswordHistory of another operator", []string(nil), got)
}

// testEnrollments: an enrollment code is taken once (R2.5), however many
// try at once.
func testEnrollments(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	ctx := t.Context()
	enrollment := func(code string) authn.Enrollment {
		return authn.Enrollment{
			CodeHash: []byte("sha256:" + code), OperatorID: "op-a", CardSerial: "JP-000123", Label: "青いカード",
			CreatedBy: "op-chief", CreatedAt: ts(2, 9, 0), ExpiresAt: ts(2, 9, 15),
		}
	}
	take := func(code string, when time.Time) (authn.Enrollment, error) {
		var e authn.Enrollment
		err := s.InTx(ctx, func(tx store.Tx) (err error) {
			e, err = tx.TakeEnrollment(ctx, []byte("sha256:"+code), when)
			return err
		})
		return e, err
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateEnrollment(ctx, enrollment("one")), tx.CreateEnrollment(ctx, enrollment("race")))
	})
	err := s.InTx(ctx, func(tx store.Tx) error { return tx.CreateEnrollment(ctx, enrollment("one")) })
	wantErr(t, "CreateEnrollment with a used code", err, store.ErrConflict)

	got, err := take("one", ts(2, 9, 5))
	if err != nil {
		t.Fatalf("TakeEnrollment: %v", err)
	}
	want := enrollment("one")
	want.UsedAt = ts(2, 9, 5)
	diff(t, "TakeEnrollment", want, got)
	_, err = take("one", ts(2, 9, 6))
	wantErr(t, "second TakeEnrollment", err, store.ErrNotFound)
	_, err = take("unknown", ts(2, 9, 6))
	wantErr(t, "TakeEnrollment of an unknown code", err, store.ErrNotFound)

	const n = 16
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = take("race", ts(2, 9, 7))
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrNotFound):
			t.Errorf("concurrent TakeEnrollment: %v", err)
		}
	}
	diff(t, "concurrent takes that succeeded", 1, won)
}

// testStops: at most one emergency stop in force per scope.
func testStops(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	list := func() []authn.Stop {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]authn.Stop, error) { return tx.ListStops(ctx) })
	}
	everywhere := authn.Stop{Scope: opgate.AllSites, Reason: "不正アクセスの疑い", StoppedBy: "op-admin", StoppedAt: ts(3, 9, 0)}
	one := authn.Stop{Scope: siteA.ID, Reason: "端末盗難", StoppedBy: "op-chief", StoppedAt: ts(3, 8, 0)}
	diff(t, "ListStops when none", []authn.Stop(nil), list())
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.PutStop(ctx, one), tx.PutStop(ctx, everywhere))
	})
	diff(t, "ListStops, by scope", []authn.Stop{everywhere, one}, list())
	err := s.InTx(ctx, func(tx store.Tx) error {
		return tx.PutStop(ctx, authn.Stop{Scope: siteA.ID, Reason: "again", StoppedAt: ts(3, 10, 0)})
	})
	wantErr(t, "PutStop for a scope already stopped", err, store.ErrConflict)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.DeleteStop(ctx, siteA.ID) })
	diff(t, "ListStops after DeleteStop", []authn.Stop{everywhere}, list())
	err = s.InTx(ctx, func(tx store.Tx) error { return tx.DeleteStop(ctx, siteA.ID) })
	wantErr(t, "DeleteStop of a scope not stopped", err, store.ErrNotFound)
}

// ---- batches

// The batch methods do for many rows in one statement what their single
// counterparts do for one; an empty batch does nothing.

func testOperatorBatches(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	c := operator("op-c", "S-0003", siteA.ID, lifecycle.Active)
	write(t, s, func(ctx context.Context, tx store.Tx) error { return tx.CreateOperator(ctx, c) })
	a := operator("op-a", "S-0001", siteA.ID, lifecycle.Active)
	b := operator("op-b", "S-0002", siteB.ID, lifecycle.Active)

	var locked []lifecycle.Operator
	write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
		locked, err = tx.GetOperatorsForUpdate(ctx, []opgate.OperatorID{"op-c", "op-x", "op-a"})
		return err
	})
	diff(t, "GetOperatorsForUpdate: the ones that exist, by ID", []lifecycle.Operator{a, c}, locked)

	suspended := ts(4, 10, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		none, err := tx.GetOperatorsForUpdate(ctx, nil)
		diff(t, "GetOperatorsForUpdate(nil)", []lifecycle.Operator(nil), none)
		return errors.Join(err,
			tx.MoveOperators(ctx, []opgate.OperatorID{"op-a", "op-c"}, siteB.ID),
			tx.MoveOperators(ctx, nil, siteA.ID),
			tx.SetOperatorStatus(ctx, []opgate.OperatorID{"op-c", "op-b"}, lifecycle.Suspended, suspended),
			tx.SetOperatorStatus(ctx, nil, lifecycle.Retired, suspended),
		)
	})
	a.SiteID = siteB.ID // a move changes no status
	b.Status, b.StatusChanged = lifecycle.Suspended, suspended
	c.SiteID, c.Status, c.StatusChanged = siteB.ID, lifecycle.Suspended, suspended
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) {
		return tx.ListOperators(ctx, lifecycle.OperatorFilter{})
	})
	diff(t, "operators after MoveOperators and SetOperatorStatus", []lifecycle.Operator{a, b, c}, got)
}

func testDueOperators(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s) // op-a and op-b have no end date
	dated := func(id opgate.OperatorID, status lifecycle.Status, until time.Time) lifecycle.Operator {
		o := operator(id, "S-"+string(id), siteA.ID, status)
		o.EmploymentType, o.ValidUntil = lifecycle.Temporary, until
		return o
	}
	ops := []lifecycle.Operator{
		dated("op-1", lifecycle.Active, ts(10, 0, 0)),
		dated("op-2", lifecycle.Suspended, ts(9, 0, 0)),
		dated("op-3", lifecycle.Retired, ts(8, 0, 0)),
		dated("op-4", lifecycle.Expired, ts(8, 0, 0)),
		dated("op-5", lifecycle.Active, ts(20, 0, 0)),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, o := range ops {
			errs = append(errs, tx.CreateOperator(ctx, o))
		}
		return errors.Join(errs...)
	})
	for _, tc := range []struct {
		name  string
		now   time.Time
		limit int
		want  []opgate.OperatorID
	}{
		{"active and suspended, by end date", ts(15, 0, 0), 10, []opgate.OperatorID{"op-2", "op-1"}},
		{"limit", ts(15, 0, 0), 1, []opgate.OperatorID{"op-2"}},
		{"due at exactly now", ts(10, 0, 0), 10, []opgate.OperatorID{"op-2", "op-1"}},
		{"a microsecond early", ts(10, 0, 0).Add(-time.Microsecond), 10, []opgate.OperatorID{"op-2"}},
		{"none due", ts(8, 23, 0), 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []lifecycle.Operator
			write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
				got, err = tx.DueOperators(ctx, tc.now, tc.limit)
				return err
			})
			diff(t, "DueOperators", tc.want, ids(got, func(o lifecycle.Operator) opgate.OperatorID { return o.ID }))
		})
	}
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) {
		return tx.DueOperators(ctx, ts(15, 0, 0), 10)
	})
	diff(t, "DueOperators in View", []lifecycle.Operator{ops[1], ops[0]}, got)
}

func testEndGrants(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.CreateOperator(ctx, operator("op-c", "S-0003", siteA.ID, lifecycle.Active))
	})
	grant := func(id opgate.GrantID, op opgate.OperatorID, st authz.GrantStatus) authz.Grant {
		return authz.Grant{ID: id, OperatorID: op, RoleID: "counter_clerk", SiteID: siteA.ID, Status: st, GrantedBy: "op-chief", CreatedAt: ts(2, 0, 0), ValidFrom: ts(2, 0, 0)}
	}
	before := []authz.Grant{
		grant("g-1", "op-a", authz.Active),
		grant("g-2", "op-a", authz.PendingApproval),
		grant("g-3", "op-a", authz.Expired),
		grant("g-4", "op-b", authz.Active),
		grant("g-5", "op-c", authz.Active),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, g := range before {
			errs = append(errs, tx.CreateGrant(ctx, g))
		}
		return errors.Join(errs...)
	})
	when := ts(5, 9, 0)
	var got []lifecycle.Ended
	write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
		none, err := tx.EndGrants(ctx, nil, when, "op-chief", "nothing")
		diff(t, "EndGrants(nil)", []lifecycle.Ended(nil), none)
		if err != nil {
			return err
		}
		got, err = tx.EndGrants(ctx, []opgate.OperatorID{"op-b", "op-a"}, when, "op-chief", "退職")
		return err
	})
	diff(t, "EndGrants", []lifecycle.Ended{{OperatorID: "op-a", ID: "g-1"}, {OperatorID: "op-a", ID: "g-2"}, {OperatorID: "op-b", ID: "g-4"}}, got)
	var want []authz.Grant
	for _, g := range before {
		if g.ID == "g-1" || g.ID == "g-2" || g.ID == "g-4" {
			g.Status, g.EndedAt, g.EndedBy, g.EndReason = authz.Revoked, when, "op-chief", "退職"
		}
		want = append(want, g)
	}
	after := read(t, s, func(ctx context.Context, tx store.Tx) ([]authz.Grant, error) {
		return tx.ListGrants(ctx, authz.GrantFilter{})
	})
	diff(t, "grants after EndGrants", want, after)
}

func testExpireGrants(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	grant := func(id opgate.GrantID, st authz.GrantStatus, until time.Time) authz.Grant {
		return authz.Grant{ID: id, OperatorID: "op-a", RoleID: "counter_clerk", SiteID: siteA.ID, Status: st, GrantedBy: "op-chief", CreatedAt: ts(1, 0, 0), ValidFrom: ts(1, 0, 0), ValidUntil: until}
	}
	before := []authz.Grant{
		grant("g-1", authz.Active, ts(10, 0, 0)),
		grant("g-2", authz.Active, ts(9, 0, 0)),
		grant("g-3", authz.Active, time.Time{}), // no end
		grant("g-4", authz.Revoked, ts(8, 0, 0)),
		grant("g-5", authz.Active, ts(20, 0, 0)),
		grant("g-6", authz.PendingApproval, ts(8, 0, 0)),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, g := range before {
			errs = append(errs, tx.CreateGrant(ctx, g))
		}
		return errors.Join(errs...)
	})
	expire := func(now time.Time, n int) []authz.Grant {
		var got []authz.Grant
		write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
			got, err = tx.ExpireGrants(ctx, now, n)
			return err
		})
		return got
	}
	expired := func(g authz.Grant) authz.Grant {
		g.Status, g.EndedAt = authz.Expired, g.ValidUntil
		return g
	}
	diff(t, "ExpireGrants with limit 1", []authz.Grant{expired(before[1])}, expire(ts(15, 0, 0), 1))
	diff(t, "ExpireGrants of the rest", []authz.Grant{expired(before[0])}, expire(ts(15, 0, 0), 10))
	diff(t, "ExpireGrants again", []authz.Grant(nil), expire(ts(15, 0, 0), 10))
	after := read(t, s, func(ctx context.Context, tx store.Tx) ([]authz.Grant, error) {
		return tx.ListGrants(ctx, authz.GrantFilter{})
	})
	diff(t, "grants after ExpireGrants", []authz.Grant{expired(before[0]), expired(before[1]), before[2], before[3], before[4], before[5]}, after)
}

func testCollectCards(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	card := func(id opgate.CardID, op opgate.OperatorID, st authn.CardStatus) authn.Card {
		return authn.Card{ID: id, OperatorID: op, Status: st, CredentialID: []byte("cred-" + id), PublicKey: []byte{1}, AAGUID: make([]byte, 16), EnrolledAt: ts(1, 0, 0), StatusChanged: ts(1, 0, 0)}
	}
	before := []authn.Card{
		card("card-1", "op-a", authn.CardActive),
		card("card-2", "op-a", authn.CardLost),
		card("card-3", "op-a", authn.CardActive),
		card("card-4", "op-b", authn.CardActive),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, c := range before {
			errs = append(errs, tx.CreateCard(ctx, c))
		}
		return errors.Join(errs...)
	})
	when := ts(5, 9, 0)
	var got []lifecycle.Ended
	write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
		none, err := tx.CollectCards(ctx, nil, when)
		diff(t, "CollectCards(nil)", []lifecycle.Ended(nil), none)
		if err != nil {
			return err
		}
		got, err = tx.CollectCards(ctx, []opgate.OperatorID{"op-a"}, when)
		return err
	})
	diff(t, "CollectCards", []lifecycle.Ended{{OperatorID: "op-a", ID: "card-1"}, {OperatorID: "op-a", ID: "card-3"}}, got)
	var want []authn.Card
	for _, c := range before {
		if c.ID == "card-1" || c.ID == "card-3" {
			c.Status, c.StatusChanged = authn.CardCollected, when
		}
		want = append(want, c)
	}
	after := read(t, s, func(ctx context.Context, tx store.Tx) ([]authn.Card, error) {
		a, err := tx.ListCards(ctx, "op-a")
		b, err2 := tx.ListCards(ctx, "op-b")
		return append(a, b...), errors.Join(err, err2)
	})
	diff(t, "cards after CollectCards", want, after)
}

func testEndOperatorSessions(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	done := session("s-0", "op-a", siteA.ID, "")
	done.EndedAt, done.EndReason = ts(2, 8, 0), "logout"
	before := []authn.Session{
		done,
		session("s-1", "op-a", siteA.ID, "card-1"),
		session("s-2", "op-b", siteB.ID, ""),
		session("s-3", "op-a", siteB.ID, "card-2"),
		session("s-4", "op-c", siteA.ID, ""),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, v := range before {
			errs = append(errs, tx.CreateSession(ctx, v))
		}
		return errors.Join(errs...)
	})
	when := ts(5, 9, 0)
	var got []lifecycle.Ended
	write(t, s, func(ctx context.Context, tx store.Tx) (err error) {
		none, err := tx.EndOperatorSessions(ctx, nil, when, "nothing")
		diff(t, "EndOperatorSessions(nil)", []lifecycle.Ended(nil), none)
		if err != nil {
			return err
		}
		got, err = tx.EndOperatorSessions(ctx, []opgate.OperatorID{"op-b", "op-a"}, when, "transfer")
		return err
	})
	diff(t, "EndOperatorSessions", []lifecycle.Ended{{OperatorID: "op-a", ID: "s-1"}, {OperatorID: "op-a", ID: "s-3"}, {OperatorID: "op-b", ID: "s-2"}}, got)
	var want, after []authn.Session
	for _, v := range before {
		if v.ID == "s-1" || v.ID == "s-2" || v.ID == "s-3" {
			v.EndedAt, v.EndReason = when, "transfer"
		}
		want = append(want, v)
		after = append(after, read(t, s, func(ctx context.Context, tx store.Tx) (authn.Session, error) { return tx.GetSession(ctx, v.ID) }))
	}
	diff(t, "sessions after EndOperatorSessions", want, after)
}

func testFinishChanges(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	before := []lifecycle.Change{
		change("ch-1", "op-a", ts(5, 0, 0), lifecycle.ChangePending),
		change("ch-2", "op-b", ts(5, 1, 0), lifecycle.ChangePending),
		change("ch-3", "op-a", ts(5, 2, 0), lifecycle.ChangePending),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, c := range before {
			errs = append(errs, tx.CreateChange(ctx, c))
		}
		return errors.Join(errs...)
	})
	when := ts(5, 3, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(
			tx.FinishChanges(ctx, nil, lifecycle.ChangeFailed, when),
			tx.FinishChanges(ctx, []opgate.ChangeID{"ch-3", "ch-1"}, lifecycle.ChangeApplied, when),
		)
	})
	want := slices.Clone(before)
	want[0].Status, want[0].DoneAt = lifecycle.ChangeApplied, when
	want[2].Status, want[2].DoneAt = lifecycle.ChangeApplied, when
	got := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Change, error) {
		return tx.ListChanges(ctx, lifecycle.ChangeFilter{})
	})
	diff(t, "changes after FinishChanges", want, got)
}

// ---- errors

func testNotFound(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s) // a store with rows, so that "not found" is about the ID
	calls := []struct {
		name string
		call func(context.Context, store.Tx) error
	}{
		{"GetSite", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetSite(ctx, "site-x"); return err }},
		{"GetTerminal", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetTerminal(ctx, "term-x"); return err }},
		{"GetRole", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetRole(ctx, "role-x"); return err }},
		{"GetOperator", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetOperator(ctx, "op-x"); return err }},
		{"GetOperatorForUpdate", func(ctx context.Context, tx store.Tx) error {
			_, err := tx.GetOperatorForUpdate(ctx, "op-x")
			return err
		}},
		{"GetGrant", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetGrant(ctx, "g-x"); return err }},
		{"GetCard", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetCard(ctx, "card-x"); return err }},
		{"GetCardByCredential", func(ctx context.Context, tx store.Tx) error {
			_, err := tx.GetCardByCredential(ctx, []byte("cred-x"))
			return err
		}},
		{"GetSession", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetSession(ctx, "sess-x"); return err }},
		{"GetChange", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetChange(ctx, "ch-x"); return err }},
		{"GetMeta", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetMeta(ctx, "meta-x"); return err }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			err := s.InTx(ctx, func(tx store.Tx) error { return tc.call(ctx, tx) })
			wantErr(t, "in InTx", err, store.ErrNotFound)
			err = s.View(ctx, func(tx store.Tx) error { return tc.call(ctx, tx) })
			wantErr(t, "in View", err, store.ErrNotFound)
		})
	}
}

func testUpdateUnknown(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.CreateTerminal(ctx, lifecycle.Terminal{ID: "term-gone", SiteID: siteA.ID, CreatedAt: ts(1, 0, 0), RemovedAt: ts(1, 1, 0)})
	})
	calls := []struct {
		name string
		call func(context.Context, store.Tx) error
	}{
		{"UpdateOperator", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateOperator(ctx, operator("op-x", "S-9", siteA.ID, lifecycle.Active))
		}},
		{"UpdateGrant", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateGrant(ctx, authz.Grant{ID: "g-x", Status: authz.Revoked})
		}},
		{"UpdateCard", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateCard(ctx, authn.Card{ID: "card-x", Status: authn.CardLost})
		}},
		{"UpdateSession", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateSession(ctx, session("sess-x", "op-a", siteA.ID, ""))
		}},
		{"UpdateChange", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateChange(ctx, change("ch-x", "op-a", ts(5, 0, 0), lifecycle.ChangeApplied))
		}},
		{"UpdateSigningKey", func(ctx context.Context, tx store.Tx) error {
			return tx.UpdateSigningKey(ctx, authn.StoredKey{ID: "kid-x", NotAfter: ts(5, 0, 0)})
		}},
		{"RemoveTerminal of an unknown terminal", func(ctx context.Context, tx store.Tx) error {
			return tx.RemoveTerminal(ctx, "term-x", ts(5, 0, 0))
		}},
		{"RemoveTerminal of a removed terminal", func(ctx context.Context, tx store.Tx) error {
			return tx.RemoveTerminal(ctx, "term-gone", ts(5, 0, 0))
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			err := s.InTx(ctx, func(tx store.Tx) error { return tc.call(ctx, tx) })
			wantErr(t, tc.name, err, store.ErrNotFound)
		})
	}
}

// testConflict creates one of everything, then tries each again under the
// same key, and rows that refer to rows that do not exist.
func testConflict(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	term := lifecycle.Terminal{ID: "term-1", SiteID: siteA.ID, Name: "窓口1", CreatedAt: ts(1, 0, 0)}
	grant := authz.Grant{ID: "g-1", OperatorID: "op-a", RoleID: "counter_clerk", SiteID: siteA.ID, Status: authz.Active, CreatedAt: ts(1, 0, 0)}
	card := authn.Card{ID: "card-1", OperatorID: "op-a", CredentialID: []byte("cred-1"), PublicKey: []byte{1}, AAGUID: make([]byte, 16), EnrolledAt: ts(1, 0, 0), StatusChanged: ts(1, 0, 0)}
	sess := session("sess-1", "op-a", siteA.ID, "card-1")
	ch := change("ch-1", "op-a", ts(5, 0, 0), lifecycle.ChangePending)
	key := authn.StoredKey{ID: "kid-1", PEM: []byte("pem"), CreatedAt: ts(1, 0, 0)}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return errors.Join(tx.CreateTerminal(ctx, term), tx.CreateGrant(ctx, grant), tx.CreateCard(ctx, card),
			tx.CreateSession(ctx, sess), tx.CreateChange(ctx, ch), tx.AddSigningKey(ctx, key), tx.PutMeta(ctx, "bootstrap", "done"))
	})

	calls := []struct {
		name string
		call func(context.Context, store.Tx) error
	}{
		{"CreateSite", func(ctx context.Context, tx store.Tx) error {
			s := siteA
			s.Name = "別名"
			return tx.CreateSite(ctx, s)
		}},
		{"CreateTerminal", func(ctx context.Context, tx store.Tx) error {
			v := term
			v.SiteID = siteB.ID
			return tx.CreateTerminal(ctx, v)
		}},
		{"CreateOperator", func(ctx context.Context, tx store.Tx) error {
			return tx.CreateOperator(ctx, operator("op-a", "S-other", siteB.ID, lifecycle.Active))
		}},
		{"CreateGrant", func(ctx context.Context, tx store.Tx) error {
			v := grant
			v.RoleID = "auditor"
			return tx.CreateGrant(ctx, v)
		}},
		{"CreateCard with a used ID", func(ctx context.Context, tx store.Tx) error {
			v := card
			v.CredentialID = []byte("cred-other")
			return tx.CreateCard(ctx, v)
		}},
		{"CreateCard with a used credential", func(ctx context.Context, tx store.Tx) error {
			v := card
			v.ID = "card-other"
			return tx.CreateCard(ctx, v)
		}},
		{"CreateSession", func(ctx context.Context, tx store.Tx) error {
			return tx.CreateSession(ctx, session("sess-1", "op-b", siteB.ID, ""))
		}},
		{"CreateChange", func(ctx context.Context, tx store.Tx) error {
			return tx.CreateChange(ctx, change("ch-1", "op-b", ts(6, 0, 0), lifecycle.ChangePending))
		}},
		{"AddSigningKey", func(ctx context.Context, tx store.Tx) error {
			return tx.AddSigningKey(ctx, authn.StoredKey{ID: "kid-1", PEM: []byte("other"), CreatedAt: ts(2, 0, 0)})
		}},
		{"PutMeta", func(ctx context.Context, tx store.Tx) error { return tx.PutMeta(ctx, "bootstrap", "again") }},
		{"CreateTerminal at an unknown site", func(ctx context.Context, tx store.Tx) error {
			return tx.CreateTerminal(ctx, lifecycle.Terminal{ID: "term-2", SiteID: "site-x", CreatedAt: ts(1, 0, 0)})
		}},
		{"CreateOperator at an unknown site", func(ctx context.Context, tx store.Tx) error {
			return tx.CreateOperator(ctx, operator("op-new", "S-new", "site-x", lifecycle.Active))
		}},
		{"CreateGrant for an unknown operator", func(ctx context.Context, tx store.Tx) error {
			v := grant
			v.ID, v.OperatorID = "g-2", "op-x"
			return tx.CreateGrant(ctx, v)
		}},
		{"PutLock for an unknown operator", func(ctx context.Context, tx store.Tx) error {
			return tx.PutLock(ctx, lifecycle.Lock{OperatorID: "op-x", LocksInRow: 1})
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			err := s.InTx(ctx, func(tx store.Tx) error { return tc.call(ctx, tx) })
			wantErr(t, tc.name, err, store.ErrConflict)
		})
	}

	// Nothing was overwritten.
	type snapshot struct {
		Site     lifecycle.Site
		Terminal lifecycle.Terminal
		Operator lifecycle.Operator
		Grant    authz.Grant
		Card     authn.Card
		Session  authn.Session
		Change   lifecycle.Change
		Keys     []authn.StoredKey
		Meta     string
		Count    int
	}
	got := read(t, s, func(ctx context.Context, tx store.Tx) (v snapshot, err error) {
		var errs [10]error
		v.Site, errs[0] = tx.GetSite(ctx, siteA.ID)
		v.Terminal, errs[1] = tx.GetTerminal(ctx, term.ID)
		v.Operator, errs[2] = tx.GetOperator(ctx, "op-a")
		v.Grant, errs[3] = tx.GetGrant(ctx, grant.ID)
		v.Card, errs[4] = tx.GetCard(ctx, card.ID)
		v.Session, errs[5] = tx.GetSession(ctx, sess.ID)
		v.Change, errs[6] = tx.GetChange(ctx, ch.ID)
		v.Keys, errs[7] = tx.ListSigningKeys(ctx)
		v.Meta, errs[8] = tx.GetMeta(ctx, "bootstrap")
		v.Count, errs[9] = tx.CountOperators(ctx)
		return v, errors.Join(errs[:]...)
	})
	diff(t, "rows after the refused writes", snapshot{
		Site: siteA, Terminal: term, Operator: operator("op-a", "S-0001", siteA.ID, lifecycle.Active), Grant: grant, Card: card,
		Session: sess, Change: ch, Keys: []authn.StoredKey{key}, Meta: "done", Count: 2,
	}, got)
}

// testRollback: a transaction whose function fails leaves nothing behind,
// its history included, and the chain goes on from where it was.
func testRollback(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.AppendAudit(ctx, event(0))
		return err
	})
	before := scanAll(t, s, 0)
	headSeq, headHash, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}

	errBoom := errors.New("boom")
	err = s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.CreateSite(ctx, siteA); err != nil {
			return err
		}
		if err := tx.CreateOperator(ctx, operator("op-a", "S-1", siteA.ID, lifecycle.Active)); err != nil {
			return err
		}
		for i := 1; i <= 3; i++ {
			if _, err := tx.AppendAudit(ctx, event(i)); err != nil {
				return err
			}
		}
		if err := tx.PutMeta(ctx, "bootstrap", "done"); err != nil {
			return err
		}
		return fmt.Errorf("late failure: %w", errBoom)
	})
	wantErr(t, "InTx", err, errBoom)

	for _, tc := range []struct {
		name string
		call func(context.Context, store.Tx) error
	}{
		{"GetSite", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetSite(ctx, siteA.ID); return err }},
		{"GetOperator", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetOperator(ctx, "op-a"); return err }},
		{"GetMeta", func(ctx context.Context, tx store.Tx) error { _, err := tx.GetMeta(ctx, "bootstrap"); return err }},
	} {
		err := s.View(ctx, func(tx store.Tx) error { return tc.call(ctx, tx) })
		wantErr(t, tc.name+" after rollback", err, store.ErrNotFound)
	}
	events := read(t, s, func(ctx context.Context, tx store.Tx) ([]audit.Event, error) {
		return tx.ListAudit(ctx, audit.Filter{})
	})
	diff(t, "ListAudit after rollback", before, events)
	diff(t, "ScanAudit after rollback", before, scanAll(t, s, 0))
	seq, hash, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "AuditHead after rollback", []any{headSeq, headHash}, []any{seq, hash})

	// The chain goes on from where it was, without a gap.
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.AppendAudit(ctx, event(4))
		return err
	})
	after := scanAll(t, s, headSeq)
	diff(t, "event after the rollback", []audit.Event{event(4)}, withoutPlace(after))
	if len(after) == 1 {
		diff(t, "its seq and link", []any{headSeq + 1, headHash}, []any{after[0].Seq, after[0].PrevHash})
	}
	if err := verify(ctx, s); err != nil {
		t.Errorf("verify after rollback: %v", err)
	}
}

// testViewIsReadOnly: View refuses writes.
func testViewIsReadOnly(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	err := s.View(ctx, func(tx store.Tx) error { return tx.CreateSite(ctx, siteA) })
	if err == nil {
		t.Error("CreateSite in View succeeded")
	}
	err = s.View(ctx, func(tx store.Tx) error { _, err := tx.AppendAudit(ctx, event(0)); return err })
	if err == nil {
		t.Error("AppendAudit in View succeeded")
	}
	err = s.View(ctx, func(tx store.Tx) error { _, err := tx.GetSite(ctx, siteA.ID); return err })
	wantErr(t, "GetSite after CreateSite in View", err, store.ErrNotFound)
	if seq, _, err := s.AuditHead(ctx); err != nil || seq != 0 {
		t.Errorf("AuditHead = %d, %v; want 0", seq, err)
	}
}

// ---- lists

func testListOperators(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	all := []lifecycle.Operator{
		operator("op-01", "S01", siteA.ID, lifecycle.Active),
		operator("op-02", "S02", siteB.ID, lifecycle.Active),
		operator("op-03", "S03", siteA.ID, lifecycle.Suspended),
		operator("op-04", "S04", siteA.ID, lifecycle.Retired),
		operator("op-05", "S01", siteB.ID, lifecycle.Retired),
		operator("op-06", "S06", siteA.ID, lifecycle.Active),
		operator("op-07", "S07", siteA.ID, lifecycle.Active),
		operator("op-08", "S08", siteA.ID, lifecycle.Suspended),
		operator("op-09", "S09", siteA.ID, lifecycle.Expired),
	}
	// Past their end on day 3, before any sweep: shown as expired from then.
	all[6].ValidUntil, all[7].ValidUntil = ts(3, 0, 0), ts(3, 0, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		errs := []error{tx.CreateSite(ctx, siteA), tx.CreateSite(ctx, siteB)}
		for _, i := range []int{6, 2, 8, 0, 4, 1, 7, 3, 5} { // not in ID order
			errs = append(errs, tx.CreateOperator(ctx, all[i]))
		}
		return errors.Join(errs...)
	})
	list := func(t *testing.T, f lifecycle.OperatorFilter) []lifecycle.Operator {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Operator, error) { return tx.ListOperators(ctx, f) })
	}
	id := func(o lifecycle.Operator) opgate.OperatorID { return o.ID }
	for _, tc := range []struct {
		name   string
		filter lifecycle.OperatorFilter
		want   []opgate.OperatorID
	}{
		{"no filter", lifecycle.OperatorFilter{}, []opgate.OperatorID{"op-01", "op-02", "op-03", "op-04", "op-05", "op-06", "op-07", "op-08", "op-09"}},
		{"site", lifecycle.OperatorFilter{SiteID: siteA.ID}, []opgate.OperatorID{"op-01", "op-03", "op-04", "op-06", "op-07", "op-08", "op-09"}},
		{"status", lifecycle.OperatorFilter{Status: lifecycle.Active, At: ts(2, 0, 0)}, []opgate.OperatorID{"op-01", "op-02", "op-06", "op-07"}},
		{"site and status", lifecycle.OperatorFilter{SiteID: siteA.ID, Status: lifecycle.Active, At: ts(2, 0, 0)}, []opgate.OperatorID{"op-01", "op-06", "op-07"}},
		{"active, once an ID has ended", lifecycle.OperatorFilter{Status: lifecycle.Active, At: ts(3, 0, 0)}, []opgate.OperatorID{"op-01", "op-02", "op-06"}},
		{"suspended, once an ID has ended", lifecycle.OperatorFilter{Status: lifecycle.Suspended, At: ts(3, 0, 0)}, []opgate.OperatorID{"op-03"}},
		{"expired, before the ends", lifecycle.OperatorFilter{Status: lifecycle.Expired, At: ts(2, 0, 0)}, []opgate.OperatorID{"op-09"}},
		{"expired, once the IDs have ended", lifecycle.OperatorFilter{Status: lifecycle.Expired, At: ts(3, 0, 0)}, []opgate.OperatorID{"op-07", "op-08", "op-09"}},
		{"staff number", lifecycle.OperatorFilter{StaffNumber: "S01"}, []opgate.OperatorID{"op-01", "op-05"}},
		{"staff number and status", lifecycle.OperatorFilter{StaffNumber: "S01", Status: lifecycle.Retired}, []opgate.OperatorID{"op-05"}},
		{"after", lifecycle.OperatorFilter{After: "op-03"}, []opgate.OperatorID{"op-04", "op-05", "op-06", "op-07", "op-08", "op-09"}},
		{"limit", lifecycle.OperatorFilter{Limit: 3}, []opgate.OperatorID{"op-01", "op-02", "op-03"}},
		{"site after limit", lifecycle.OperatorFilter{SiteID: siteA.ID, After: "op-01", Limit: 2}, []opgate.OperatorID{"op-03", "op-04"}},
		{"unknown site", lifecycle.OperatorFilter{SiteID: "site-x"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := list(t, tc.filter)
			diff(t, "ListOperators", tc.want, ids(got, id))
		})
	}
	t.Run("rows", func(t *testing.T) {
		diff(t, "ListOperators", all, list(t, lifecycle.OperatorFilter{}))
	})
	t.Run("pages", func(t *testing.T) {
		got, n := pages(t, 2, func(after opgate.OperatorID, limit int) []lifecycle.Operator {
			return list(t, lifecycle.OperatorFilter{SiteID: siteA.ID, After: after, Limit: limit})
		}, id)
		diff(t, "pages of site-a", []opgate.OperatorID{"op-01", "op-03", "op-04", "op-06", "op-07", "op-08", "op-09"}, ids(got, id))
		diff(t, "number of pages", 4, n)
	})
}

func testListGrants(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	grant := func(id opgate.GrantID, op opgate.OperatorID, site opgate.SiteID, st authz.GrantStatus) authz.Grant {
		return authz.Grant{ID: id, OperatorID: op, RoleID: "counter_clerk", SiteID: site, Status: st, GrantedBy: "op-chief", CreatedAt: ts(2, 0, 0), ValidFrom: ts(2, 0, 0)}
	}
	all := []authz.Grant{
		grant("g-01", "op-a", siteA.ID, authz.Active),
		grant("g-02", "op-a", siteB.ID, authz.Revoked),
		grant("g-03", "op-b", siteB.ID, authz.Active),
		grant("g-04", "op-b", opgate.AllSites, authz.PendingApproval),
		grant("g-05", "op-a", siteA.ID, authz.Expired),
		grant("g-06", "op-b", siteA.ID, authz.Active),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, i := range []int{5, 1, 3, 0, 4, 2} {
			errs = append(errs, tx.CreateGrant(ctx, all[i]))
		}
		return errors.Join(errs...)
	})
	list := func(t *testing.T, f authz.GrantFilter) []authz.Grant {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]authz.Grant, error) { return tx.ListGrants(ctx, f) })
	}
	id := func(g authz.Grant) opgate.GrantID { return g.ID }
	for _, tc := range []struct {
		name   string
		filter authz.GrantFilter
		want   []opgate.GrantID
	}{
		{"no filter", authz.GrantFilter{}, []opgate.GrantID{"g-01", "g-02", "g-03", "g-04", "g-05", "g-06"}},
		{"operator", authz.GrantFilter{OperatorID: "op-a"}, []opgate.GrantID{"g-01", "g-02", "g-05"}},
		{"site", authz.GrantFilter{SiteID: siteA.ID}, []opgate.GrantID{"g-01", "g-05", "g-06"}},
		{"all sites", authz.GrantFilter{SiteID: opgate.AllSites}, []opgate.GrantID{"g-04"}},
		{"status", authz.GrantFilter{Status: authz.Active}, []opgate.GrantID{"g-01", "g-03", "g-06"}},
		{"operator and status", authz.GrantFilter{OperatorID: "op-b", Status: authz.Active}, []opgate.GrantID{"g-03", "g-06"}},
		{"operator site status", authz.GrantFilter{OperatorID: "op-a", SiteID: siteA.ID, Status: authz.Active}, []opgate.GrantID{"g-01"}},
		{"after", authz.GrantFilter{After: "g-04"}, []opgate.GrantID{"g-05", "g-06"}},
		{"limit", authz.GrantFilter{Limit: 2}, []opgate.GrantID{"g-01", "g-02"}},
		{"unknown operator", authz.GrantFilter{OperatorID: "op-x"}, nil},
		{"role and status", authz.GrantFilter{RoleID: "counter_clerk", Status: authz.Active}, []opgate.GrantID{"g-01", "g-03", "g-06"}},
		{"role held by nobody", authz.GrantFilter{RoleID: "auditor"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diff(t, "ListGrants", tc.want, ids(list(t, tc.filter), id))
		})
	}
	t.Run("rows", func(t *testing.T) {
		diff(t, "ListGrants", all, list(t, authz.GrantFilter{}))
	})
	t.Run("pages", func(t *testing.T) {
		got, n := pages(t, 2, func(after opgate.GrantID, limit int) []authz.Grant {
			return list(t, authz.GrantFilter{OperatorID: "op-b", After: after, Limit: limit})
		}, id)
		diff(t, "pages of op-b", []opgate.GrantID{"g-03", "g-04", "g-06"}, ids(got, id))
		diff(t, "number of pages", 2, n)
	})
}

func testListChanges(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	all := []lifecycle.Change{
		change("ch-01", "op-a", ts(5, 0, 0), lifecycle.ChangePending),
		change("ch-02", "op-b", ts(4, 0, 0), lifecycle.ChangeApplied),
		change("ch-03", "op-a", ts(3, 0, 0), lifecycle.ChangeCancelled),
		change("ch-04", "op-b", ts(6, 0, 0), lifecycle.ChangePending),
		change("ch-05", "op-a", ts(7, 0, 0), lifecycle.ChangePending),
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for _, i := range []int{4, 2, 0, 3, 1} {
			errs = append(errs, tx.CreateChange(ctx, all[i]))
		}
		return errors.Join(errs...)
	})
	list := func(t *testing.T, f lifecycle.ChangeFilter) []lifecycle.Change {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Change, error) { return tx.ListChanges(ctx, f) })
	}
	id := func(c lifecycle.Change) opgate.ChangeID { return c.ID }
	for _, tc := range []struct {
		name   string
		filter lifecycle.ChangeFilter
		want   []opgate.ChangeID
	}{
		{"no filter", lifecycle.ChangeFilter{}, []opgate.ChangeID{"ch-01", "ch-02", "ch-03", "ch-04", "ch-05"}},
		{"operator", lifecycle.ChangeFilter{OperatorID: "op-a"}, []opgate.ChangeID{"ch-01", "ch-03", "ch-05"}},
		{"status", lifecycle.ChangeFilter{Status: lifecycle.ChangePending}, []opgate.ChangeID{"ch-01", "ch-04", "ch-05"}},
		{"operator and status", lifecycle.ChangeFilter{OperatorID: "op-a", Status: lifecycle.ChangePending}, []opgate.ChangeID{"ch-01", "ch-05"}},
		{"after", lifecycle.ChangeFilter{After: "ch-03"}, []opgate.ChangeID{"ch-04", "ch-05"}},
		{"limit", lifecycle.ChangeFilter{Limit: 1}, []opgate.ChangeID{"ch-01"}},
		{"unknown operator", lifecycle.ChangeFilter{OperatorID: "op-x"}, nil},
		// Every change moves to site-b; op-a is at site-a.
		{"operator's site", lifecycle.ChangeFilter{Sites: []opgate.SiteID{"site-a"}}, []opgate.ChangeID{"ch-01", "ch-03", "ch-05"}},
		{"site moved to", lifecycle.ChangeFilter{Sites: []opgate.SiteID{"site-b"}}, []opgate.ChangeID{"ch-01", "ch-02", "ch-03", "ch-04", "ch-05"}},
		{"sites, status and page", lifecycle.ChangeFilter{Sites: []opgate.SiteID{"site-x", "site-a"}, Status: lifecycle.ChangePending, After: "ch-01", Limit: 1},
			[]opgate.ChangeID{"ch-05"}},
		{"no such site", lifecycle.ChangeFilter{Sites: []opgate.SiteID{"site-x"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diff(t, "ListChanges", tc.want, ids(list(t, tc.filter), id))
		})
	}
	t.Run("rows", func(t *testing.T) {
		diff(t, "ListChanges", all, list(t, lifecycle.ChangeFilter{}))
	})
	t.Run("pages", func(t *testing.T) {
		got, n := pages(t, 2, func(after opgate.ChangeID, limit int) []lifecycle.Change {
			return list(t, lifecycle.ChangeFilter{Status: lifecycle.ChangePending, After: after, Limit: limit})
		}, id)
		diff(t, "pages of pending", []opgate.ChangeID{"ch-01", "ch-04", "ch-05"}, ids(got, id))
		diff(t, "number of pages", 2, n)
	})
}

func testListAudit(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ev := func(minute int, typ audit.Type, actor, op opgate.OperatorID, site opgate.SiteID, resource string) audit.Event {
		return audit.Event{At: ts(2, 9, minute), Type: typ, ActorID: actor, OperatorID: op, SiteID: site, Resource: resource, Reason: "test"}
	}
	in := []audit.Event{
		ev(0, audit.OperatorIssued, "op-admin", "op-1", siteA.ID, "operator:op-1"),
		ev(5, audit.GrantRequested, "op-admin", "op-1", siteA.ID, "grant:g-1"),
		ev(10, audit.LoginSucceeded, "op-1", "op-1", siteA.ID, "session:s-1"),
		ev(15, audit.LoginFailed, "", "op-2", siteB.ID, "session:"),
		ev(20, audit.OperatorIssued, "op-admin", "op-2", siteB.ID, "operator:op-2"),
		ev(25, audit.GrantRevoked, "op-chief", "op-1", siteA.ID, "grant:g-1"),
		ev(30, audit.PolicyChanged, "op-admin", "", "", "policy"),
		// What someone did to themselves: the actor index leaves it to
		// the operator index, and a query by actor must still find it.
		ev(35, audit.PasswordChanged, "op-admin", "op-admin", "", "operator:op-admin"),
	}
	for _, e := range in {
		write(t, s, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.AppendAudit(ctx, e)
			return err
		})
	}
	list := func(t *testing.T, f audit.Filter) []audit.Event {
		return read(t, s, func(ctx context.Context, tx store.Tx) ([]audit.Event, error) { return tx.ListAudit(ctx, f) })
	}
	seq := func(e audit.Event) int64 { return e.Seq }
	for _, tc := range []struct {
		name   string
		filter audit.Filter
		want   []int64
	}{
		{"no filter", audit.Filter{}, []int64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"operator", audit.Filter{OperatorID: "op-1"}, []int64{1, 2, 3, 6}},
		{"actor", audit.Filter{ActorID: "op-admin"}, []int64{1, 2, 5, 7, 8}},
		{"actor, on themselves", audit.Filter{ActorID: "op-1"}, []int64{3}},
		{"actor after seq limit", audit.Filter{ActorID: "op-admin", AfterSeq: 5, Limit: 1}, []int64{7}},
		{"actor and type", audit.Filter{ActorID: "op-admin", Type: audit.PasswordChanged}, []int64{8}},
		{"operator, actor, on themselves", audit.Filter{OperatorID: "op-admin", ActorID: "op-admin"}, []int64{8}},
		{"type", audit.Filter{Type: audit.OperatorIssued}, []int64{1, 5}},
		{"resource", audit.Filter{Resource: "grant:g-1"}, []int64{2, 6}},
		{"site", audit.Filter{SiteID: siteB.ID}, []int64{4, 5}},
		{"from, inclusive", audit.Filter{From: ts(2, 9, 10)}, []int64{3, 4, 5, 6, 7, 8}},
		{"to, exclusive", audit.Filter{To: ts(2, 9, 10)}, []int64{1, 2}},
		{"from and to", audit.Filter{From: ts(2, 9, 5), To: ts(2, 9, 20)}, []int64{2, 3, 4}},
		{"after seq", audit.Filter{AfterSeq: 5}, []int64{6, 7, 8}},
		{"limit", audit.Filter{Limit: 3}, []int64{1, 2, 3}},
		{"operator and actor", audit.Filter{OperatorID: "op-1", ActorID: "op-admin"}, []int64{1, 2}},
		{"operator after seq limit", audit.Filter{OperatorID: "op-1", AfterSeq: 2, Limit: 1}, []int64{3}},
		{"nothing matches", audit.Filter{Type: audit.EmergencyStopped}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diff(t, "ListAudit", tc.want, ids(list(t, tc.filter), seq))
		})
	}
	t.Run("rows", func(t *testing.T) {
		got := list(t, audit.Filter{})
		diff(t, "ListAudit", scanAll(t, s, 0), got)
		diff(t, "ListAudit, but for the places in the chain", in, withoutPlace(got))
	})
	t.Run("pages", func(t *testing.T) {
		got, n := pages(t, 2, func(after int64, limit int) []audit.Event {
			return list(t, audit.Filter{OperatorID: "op-1", AfterSeq: after, Limit: limit})
		}, seq)
		diff(t, "pages of op-1", []int64{1, 2, 3, 6}, ids(got, seq))
		diff(t, "number of pages", 3, n)
		got, n = pages(t, 2, func(after int64, limit int) []audit.Event {
			return list(t, audit.Filter{ActorID: "op-admin", AfterSeq: after, Limit: limit})
		}, seq)
		diff(t, "pages of what op-admin did", []int64{1, 2, 5, 7, 8}, ids(got, seq))
		diff(t, "number of pages", 3, n)
	})
}

// ---- history

// testAuditChain appends across many transactions, several events in some,
// and checks what the store keeps and reports as its head. It reads the
// chain positions (Seq, PrevHash, Hash) from the store, not from
// AppendAudit, which may assign them only at commit.
func testAuditChain(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	if err := verify(ctx, s); err != nil {
		t.Fatalf("verify an empty history: %v", err)
	}
	anchor, err := s.AuditAnchor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "AuditAnchor of a new store", audit.Anchor{Seq: 0, Hash: audit.Genesis}, anchor)

	var in []audit.Event
	for i := range 25 {
		write(t, s, func(ctx context.Context, tx store.Tx) error {
			for range 1 + i%4 {
				n := len(in)
				e := event(n)
				if n%5 == 0 {
					e.Data = nil // events without data
				}
				if n%7 == 0 {
					e.Reason = "理由 with ünïcode"
				}
				if _, err := tx.AppendAudit(ctx, e); err != nil {
					return err
				}
				in = append(in, e)
			}
			return nil
		})
	}

	got := scanAll(t, s, 0)
	diff(t, "events kept, but for their place in the chain", in, withoutPlace(got))
	checkLinks(t, got)
	if t.Failed() {
		return
	}
	diff(t, "ScanAudit after seq 10", got[10:], scanAll(t, s, 10))
	diff(t, "ScanAudit after the head", []audit.Event(nil), scanAll(t, s, int64(len(got))))
	listed := read(t, s, func(ctx context.Context, tx store.Tx) ([]audit.Event, error) {
		return tx.ListAudit(ctx, audit.Filter{})
	})
	diff(t, "ListAudit", got, listed)
	seq, hash, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := got[len(got)-1]
	diff(t, "AuditHead", []any{last.Seq, last.Hash}, []any{seq, hash})
	if err := verify(ctx, s); err != nil {
		t.Errorf("verify: %v", err)
	}

	// A transaction reads the events it appended, in their places.
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		for i := range 2 {
			if _, err := tx.AppendAudit(ctx, event(100+i)); err != nil {
				return err
			}
		}
		own, err := tx.ListAudit(ctx, audit.Filter{AfterSeq: last.Seq})
		if err != nil {
			return err
		}
		diff(t, "ListAudit of the transaction's own events", []audit.Event{event(100), event(101)}, withoutPlace(own))
		diff(t, "their seqs", []int64{last.Seq + 1, last.Seq + 2}, ids(own, func(e audit.Event) int64 { return e.Seq }))
		return nil
	})
	if err := verify(ctx, s); err != nil {
		t.Errorf("verify: %v", err)
	}

	// ScanAudit stops at, and returns, the callback's error.
	errStop := errors.New("stop")
	calls := 0
	err = s.ScanAudit(ctx, 0, func(audit.Event) error { calls++; return errStop })
	wantErr(t, "ScanAudit with a failing callback", err, errStop)
	diff(t, "callbacks before the stop", 1, calls)
}

// withoutPlace strips what the store assigns, leaving what the caller gave.
func withoutPlace(es []audit.Event) []audit.Event {
	out := make([]audit.Event, 0, len(es))
	for _, e := range es {
		e.Seq, e.PrevHash, e.Hash = 0, nil, nil
		out = append(out, e)
	}
	return out
}

// checkLinks checks that events run 1, 2, … from the genesis, each linked
// to the one before.
func checkLinks(t *testing.T, es []audit.Event) {
	t.Helper()
	prev := audit.Anchor{Seq: 0, Hash: audit.Genesis}
	for _, e := range es {
		if e.Seq != prev.Seq+1 || string(e.PrevHash) != string(prev.Hash) {
			t.Errorf("event %d follows seq %d and links to %x, want seq %d and %x", e.Seq, prev.Seq, e.PrevHash, prev.Seq+1, prev.Hash)
			return
		}
		prev = audit.Anchor{Seq: e.Seq, Hash: e.Hash}
	}
}

// testAuditScanPages checks that ScanAudit, which reads in pages, neither
// drops nor repeats events at page boundaries.
func testAuditScanPages(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	const total, batch = 5003, 1000
	for i := 0; i < total; i += batch {
		write(t, s, func(ctx context.Context, tx store.Tx) error {
			for j := i; j < min(i+batch, total); j++ {
				if _, err := tx.AppendAudit(ctx, event(j)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	got := scanAll(t, s, 0)
	want := make([]int64, total)
	for i := range want {
		want[i] = int64(i + 1)
	}
	diff(t, "seqs scanned", want, ids(got, func(e audit.Event) int64 { return e.Seq }))
	if err := verify(t.Context(), s); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// testAuditConcurrentAppend: writers appending at once in their own
// transactions still make one gap-free chain.
func testAuditConcurrentAppend(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := t.Context()
	const writers, each = 16, 50
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				e := event(w*each + i)
				e.Resource = fmt.Sprintf("writer:%02d/%02d", w, i)
				if err := s.InTx(ctx, func(tx store.Tx) error {
					_, err := tx.AppendAudit(ctx, e)
					return err
				}); err != nil {
					t.Errorf("writer %d, event %d: %v", w, i, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	got := scanAll(t, s, 0)
	var seqs []int64
	var resources []string
	for _, e := range got {
		seqs = append(seqs, e.Seq)
		resources = append(resources, e.Resource)
	}
	var wantSeqs []int64
	var wantResources []string
	for w := range writers {
		for i := range each {
			wantSeqs = append(wantSeqs, int64(len(wantSeqs)+1))
			wantResources = append(wantResources, fmt.Sprintf("writer:%02d/%02d", w, i))
		}
	}
	diff(t, "seqs", wantSeqs, seqs)
	slices.Sort(resources)
	diff(t, "events kept", wantResources, resources)
	if err := verify(ctx, s); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// testAuditAppendOnly: the database itself refuses to change history
// (R4.2), whoever asks.
func testAuditAppendOnly(t *testing.T, open func(*testing.T) Harness) {
	h := open(t)
	write(t, h.Store, func(ctx context.Context, tx store.Tx) error {
		for i := range 3 {
			if _, err := tx.AppendAudit(ctx, event(i)); err != nil {
				return err
			}
		}
		return nil
	})
	before := scanAll(t, h.Store, 0)
	for _, q := range []string{
		`UPDATE audit_events SET reason = 'tampered' WHERE seq = 2`,
		`UPDATE audit_events SET seq = seq + 100`,
		`DELETE FROM audit_events WHERE seq = 3`,
		`DELETE FROM audit_events`,
	} {
		if err := h.Exec(t, q); err == nil {
			t.Errorf("%s: succeeded, want it refused", q)
		}
	}
	diff(t, "history after the refused statements", before, scanAll(t, h.Store, 0))
	if err := verify(t.Context(), h.Store); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// testAuditTamper lifts the append-only guard, as an administrator of the
// database could, changes history, and checks that verification names the
// first event that no longer holds.
func testAuditTamper(t *testing.T, open func(*testing.T) Harness) {
	const events = 8
	for _, tc := range []struct {
		name   string
		tamper []string
		want   int64 // first bad seq
	}{
		{"changed reason", []string{`UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 4`}, 4},
		{"changed data", []string{`UPDATE audit_events SET data = '{}' WHERE seq = 6`}, 6},
		{"deleted event", []string{`DELETE FROM audit_events WHERE seq = 4`}, 4},
		{"deleted first event", []string{`DELETE FROM audit_events WHERE seq = 1`}, 1},
		{"swapped seqs", []string{
			`UPDATE audit_events SET seq = -1 WHERE seq = 3`,
			`UPDATE audit_events SET seq = 3 WHERE seq = 6`,
			`UPDATE audit_events SET seq = 6 WHERE seq = -1`,
		}, 3},
		{"cut tail", []string{`DELETE FROM audit_events WHERE seq = 8`}, 8},
		{"head moved back with the tail", []string{
			`DELETE FROM audit_events WHERE seq = 8`,
			`UPDATE audit_head SET seq = 7`,
		}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := open(t)
			ctx := t.Context()
			for i := range events {
				write(t, h.Store, func(ctx context.Context, tx store.Tx) error {
					_, err := tx.AppendAudit(ctx, event(i))
					return err
				})
			}
			if err := verify(ctx, h.Store); err != nil {
				t.Fatalf("verify before tampering: %v", err)
			}
			for _, q := range append(slices.Clone(h.Unguard), tc.tamper...) {
				if err := h.Exec(t, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			err := verify(ctx, h.Store)
			var be *audit.BrokenError
			if !errors.As(err, &be) {
				t.Fatalf("verify after tampering: %v, want a *audit.BrokenError", err)
			}
			diff(t, "first bad seq", tc.want, be.Seq)
		})
	}
}

// ---- concurrency

// testClaimConcurrent: while one transaction holds the changes it claimed,
// another claiming the same due rows never receives them. PostgreSQL skips
// the locked rows; SQLite, with one writer, makes the second wait until the
// first commits. Either way, each change is applied exactly once.
func testClaimConcurrent(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	ctx := t.Context()
	const due = 6
	now := ts(5, 12, 0)
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		var errs []error
		for i := range due {
			errs = append(errs, tx.CreateChange(ctx, change(opgate.ChangeID(fmt.Sprintf("ch-%d", i)), "op-a", ts(5, 0, i), lifecycle.ChangePending)))
		}
		return errors.Join(errs...)
	})

	// claim claims up to limit changes and applies them in the same
	// transaction; it returns the IDs of the attempt that committed.
	claim := func(limit int, hold func()) ([]opgate.ChangeID, error) {
		var got []opgate.ChangeID
		err := s.InTx(ctx, func(tx store.Tx) error {
			got = nil
			cs, err := tx.ClaimDueChanges(ctx, now, limit)
			if err != nil {
				return err
			}
			for _, c := range cs {
				c.Status, c.DoneAt = lifecycle.ChangeApplied, now
				if err := tx.UpdateChange(ctx, c); err != nil {
					return err
				}
				got = append(got, c.ID)
			}
			if hold != nil {
				hold()
			}
			return nil
		})
		return got, err
	}

	claimed, release := make(chan struct{}), make(chan struct{})
	var first, second []opgate.ChangeID
	var firstErr, secondErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		first, firstErr = claim(due/2, func() {
			close(claimed)
			<-release
		})
	})
	select {
	case <-claimed:
	case <-time.After(30 * time.Second):
		close(release)
		wg.Wait()
		t.Fatalf("first claim did not happen: %v", firstErr)
	}
	secondDone := make(chan struct{})
	wg.Go(func() {
		defer close(secondDone)
		second, secondErr = claim(due, nil)
	})
	// Where the engine lets the second claim run beside the first, let it
	// finish while the first still holds its rows; where it makes it wait,
	// release the first after a while.
	how := "waited for the first to commit"
	select {
	case <-secondDone:
		how = "ran while the first held its rows"
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if err := errors.Join(firstErr, secondErr); err != nil {
		t.Fatal(err)
	}

	t.Logf("first claimed %v; second claimed %v and %s", first, second, how)
	if len(first) != due/2 {
		t.Errorf("first claim got %v, want %d changes", first, due/2)
	}
	both := append(slices.Clone(first), second...)
	slices.Sort(both)
	var want []opgate.ChangeID
	for i := range due {
		want = append(want, opgate.ChangeID(fmt.Sprintf("ch-%d", i)))
	}
	diff(t, "changes applied, each once (first "+fmt.Sprint(first)+", second "+fmt.Sprint(second)+")", want, both)
	left, err := claim(due, nil)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "changes left to claim", []opgate.ChangeID(nil), left)
	pending := read(t, s, func(ctx context.Context, tx store.Tx) ([]lifecycle.Change, error) {
		return tx.ListChanges(ctx, lifecycle.ChangeFilter{Status: lifecycle.ChangePending})
	})
	diff(t, "pending changes", []lifecycle.Change(nil), pending)
}

// testForUpdateLosesNoUpdate: transactions that lock the operator before
// reading and writing its lock state never overwrite one another's counts,
// which is what keeps concurrent failed logins from slipping past the
// lockout threshold (R2.4).
func testForUpdateLosesNoUpdate(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	ctx := t.Context()
	const n = 50
	start := make(chan struct{})
	var wg sync.WaitGroup
	failure := func(i int) time.Time { return ts(2, 9, 0).Add(time.Duration(i) * time.Second) }
	for i := range n {
		wg.Go(func() {
			<-start
			err := s.InTx(ctx, func(tx store.Tx) error {
				if _, err := tx.GetOperatorForUpdate(ctx, "op-a"); err != nil {
					return err
				}
				l, err := tx.GetLock(ctx, "op-a")
				if err != nil {
					return err
				}
				l.Recent = append(l.Recent, failure(i))
				l.LocksInRow++
				return tx.PutLock(ctx, l)
			})
			if err != nil {
				t.Errorf("increment: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	got := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Lock, error) { return tx.GetLock(ctx, "op-a") })
	// The failures are kept in commit order, which the race decides.
	slices.SortFunc(got.Recent, time.Time.Compare)
	want := lifecycle.Lock{OperatorID: "op-a", LocksInRow: n}
	for i := range n {
		want.Recent = append(want.Recent, failure(i))
	}
	diff(t, "lock after concurrent updates", want, got)
}

// ---- benchmarks

// Bench runs the benchmarks every store reports. open is called once per
// benchmark and must return a store on an empty database of its own.
//
//   - AuditAppend/16-writers: 16 goroutines each running transactions of
//     one AppendAudit, the shape of a busy office's logins; reports events/s
//     and commit-µs, the mean time from AppendAudit's return to InTx's:
//     waiting for the chain head, taking its place and COMMIT.
//   - AuditAppend/1-writer: the same with one goroutine, the latency of one
//     append transaction alone; when 16 writers do not beat it, the chain
//     head serialises the writers.
//   - AuditVerify/100k-events: a full verification walk (AuditAnchor,
//     ScanAudit, audit.Verifier, AuditHead) over 100,000 events; reports
//     events/s.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("AuditAppend", func(b *testing.B) {
		s := open(b)
		b.Run("16-writers", func(b *testing.B) { benchAppend(b, s, 16) })
		b.Run("1-writer", func(b *testing.B) { benchAppend(b, s, 1) })
	})
	b.Run("AuditVerify", func(b *testing.B) {
		const events = 100_000
		s := open(b)
		fill(b, s, events)
		// What `opgate audit verify` runs (parts walked at once), and one
		// sequential walk as the baseline of the same run.
		b.Run("100k-events", func(b *testing.B) {
			benchVerify(b, s, events, func(ctx context.Context, s store.Store) error {
				res, err := audit.VerifyChain(ctx, s)
				if err == nil && !res.OK {
					err = fmt.Errorf("broken at %d: %s", res.FirstBadSeq, res.Problem)
				}
				return err
			})
		})
		b.Run("100k-events-sequential", func(b *testing.B) { benchVerify(b, s, events, verify) })
	})
}

func benchAppend(b *testing.B, s store.Store, writers int) {
	ctx := b.Context()
	var next, commitNS atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				e := event(int(i))
				var appended time.Time
				err := s.InTx(ctx, func(tx store.Tx) error {
					_, err := tx.AppendAudit(ctx, e)
					appended = clock.Real{}.Now()
					return err
				})
				commitNS.Add(int64(clock.Since(appended)))
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(commitNS.Load())/float64(b.N)/1e3, "commit-µs")
}

// fill appends n events in transactions of a thousand.
func fill(b *testing.B, s store.Store, n int) {
	ctx := b.Context()
	const batch = 1000
	for i := 0; i < n; i += batch {
		err := s.InTx(ctx, func(tx store.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				if _, err := tx.AppendAudit(ctx, event(j)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchVerify(b *testing.B, s store.Store, events int, verify func(context.Context, store.Store) error) {
	ctx := b.Context()
	b.ResetTimer()
	for range b.N {
		if err := verify(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// ---- versions of rights

// testAuthzVersions holds the database to moving an operator's version on
// every write that changes what a decision reads of it — through the
// store or around it — and to moving nothing else.
func testAuthzVersions(t *testing.T, open func(*testing.T) Harness) {
	h := open(t)
	s := h.Store
	seed(t, s)
	versions := func(op opgate.OperatorID) authz.Versions {
		t.Helper()
		return read(t, s, func(ctx context.Context, tx store.Tx) (authz.Versions, error) { return tx.AuthzVersions(ctx, op) })
	}
	if v := versions("op-nobody"); v.Found {
		t.Errorf("AuthzVersions of an unknown operator: %+v, want not found", v)
	}
	a, b := versions("op-a"), versions("op-b")
	if !a.Found || !b.Found {
		t.Fatalf("AuthzVersions: %+v %+v, want found", a, b)
	}
	// epoch is the store's authz epoch, and whether it keeps one.
	type epochRead struct {
		n  int64
		ok bool
	}
	epoch := func() epochRead {
		t.Helper()
		return read(t, s, func(ctx context.Context, tx store.Tx) (epochRead, error) {
			n, ok, err := tx.AuthzEpoch(ctx)
			return epochRead{n, ok}, err
		})
	}
	// step runs fn and reports which versions moved; the epoch must move
	// exactly when one of them does.
	step := func(what string, fn func(ctx context.Context, tx store.Tx) error, wantA, wantB, wantRoles bool) {
		t.Helper()
		e0 := epoch()
		write(t, s, fn)
		if e1 := epoch(); e0.ok && (e1.n != e0.n) != (wantA || wantB || wantRoles) {
			t.Errorf("%s: the authz epoch moved from %d to %d, want moved = %v", what, e0.n, e1.n, wantA || wantB || wantRoles)
		}
		na, nb := versions("op-a"), versions("op-b")
		if moved := na.Operator != a.Operator; moved != wantA {
			t.Errorf("%s: op-a's version moved = %v, want %v", what, moved, wantA)
		}
		if moved := nb.Operator != b.Operator; moved != wantB {
			t.Errorf("%s: op-b's version moved = %v, want %v", what, moved, wantB)
		}
		if moved := na.Roles != a.Roles || nb.Roles != na.Roles; moved != wantRoles {
			t.Errorf("%s: roles version moved = %v, want %v", what, moved, wantRoles)
		}
		a, b = na, nb
	}
	g := authz.Grant{ID: "g-1", OperatorID: "op-a", RoleID: "counter_clerk", SiteID: siteA.ID, Status: authz.Active, GrantedBy: "op-chief", CreatedAt: ts(2, 0, 0), ValidFrom: ts(2, 0, 0)}
	step("CreateGrant", func(ctx context.Context, tx store.Tx) error { return tx.CreateGrant(ctx, g) }, true, false, false)
	g.ValidUntil = ts(9, 0, 0)
	step("UpdateGrant", func(ctx context.Context, tx store.Tx) error { return tx.UpdateGrant(ctx, g) }, true, false, false)
	step("CreateGrant for op-b", func(ctx context.Context, tx store.Tx) error {
		return tx.CreateGrant(ctx, authz.Grant{ID: "g-2", OperatorID: "op-b", RoleID: "counter_clerk", SiteID: siteB.ID, Status: authz.Active, CreatedAt: ts(2, 0, 0), ValidFrom: ts(2, 0, 0)})
	}, false, true, false)
	step("ExpireGrants", func(ctx context.Context, tx store.Tx) error {
		_, err := tx.ExpireGrants(ctx, ts(10, 0, 0), 10)
		return err
	}, true, false, false)
	// op-a has nothing left to end: a statement that changes none of its
	// rows leaves its version alone.
	step("EndGrants", func(ctx context.Context, tx store.Tx) error {
		_, err := tx.EndGrants(ctx, []opgate.OperatorID{"op-a", "op-b"}, ts(11, 0, 0), "op-chief", "異動")
		return err
	}, false, true, false)
	step("ExpireGrants with nothing due", func(ctx context.Context, tx store.Tx) error {
		_, err := tx.ExpireGrants(ctx, ts(12, 0, 0), 10)
		return err
	}, false, false, false)

	o := read(t, s, func(ctx context.Context, tx store.Tx) (lifecycle.Operator, error) { return tx.GetOperator(ctx, "op-a") })
	o.LastLoginAt, o.Name = ts(12, 9, 0), "職員 改名"
	step("UpdateOperator of the last login and name", func(ctx context.Context, tx store.Tx) error { return tx.UpdateOperator(ctx, o) }, false, false, false)
	o.Status = lifecycle.Suspended
	step("UpdateOperator suspending", func(ctx context.Context, tx store.Tx) error { return tx.UpdateOperator(ctx, o) }, true, false, false)
	o.ValidUntil = ts(30, 0, 0)
	step("UpdateOperator of valid_until", func(ctx context.Context, tx store.Tx) error { return tx.UpdateOperator(ctx, o) }, true, false, false)
	step("MoveOperators", func(ctx context.Context, tx store.Tx) error {
		return tx.MoveOperators(ctx, []opgate.OperatorID{"op-b"}, siteA.ID)
	}, false, true, false)
	step("SetOperatorStatus", func(ctx context.Context, tx store.Tx) error {
		return tx.SetOperatorStatus(ctx, []opgate.OperatorID{"op-a", "op-b"}, lifecycle.Retired, ts(14, 0, 0))
	}, true, true, false)
	step("PutRole", func(ctx context.Context, tx store.Tx) error {
		return tx.PutRole(ctx, roles.Role{ID: "viewer", Name: "照会", Permissions: []opgate.Permission{roles.ResidentRead}})
	}, false, false, true)
	step("PutRole again", func(ctx context.Context, tx store.Tx) error {
		return tx.PutRole(ctx, roles.Role{ID: "viewer", Name: "照会", Permissions: []opgate.Permission{roles.ResidentRead, roles.CertificateIssue}})
	}, false, false, true)

	// Around the store: someone with database access.
	e0 := epoch()
	if err := h.Exec(t, `DELETE FROM grants WHERE grant_id = 'g-2'`); err != nil {
		t.Fatalf("delete a grant directly: %v", err)
	}
	if nb := versions("op-b"); nb.Operator == b.Operator {
		t.Errorf("a grant deleted directly left op-b's version at %d", nb.Operator)
	}
	if err := h.Exec(t, `UPDATE roles SET permissions = '["audit.read"]' WHERE role_id = 'viewer'`); err != nil {
		t.Fatalf("update a role directly: %v", err)
	}
	if na := versions("op-a"); na.Roles == a.Roles {
		t.Errorf("a role updated directly left the roles version at %d", na.Roles)
	}
	if e1 := epoch(); e0.ok && e1.n == e0.n {
		t.Errorf("changes made directly left the authz epoch at %d", e1.n)
	}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.CreateOperator(ctx, operator("op-gone", "S-0999", siteA.ID, lifecycle.Active))
	})
	e0 = epoch()
	if err := h.Exec(t, `DELETE FROM operators WHERE operator_id = 'op-gone'`); err != nil {
		t.Fatalf("delete an operator directly: %v", err)
	}
	if e1 := epoch(); e0.ok && e1.n == e0.n {
		t.Errorf("an operator deleted directly left the authz epoch at %d", e1.n)
	}

	// A rolled-back change leaves the version where it was. Inside the
	// transaction, an epoch read before a write is not read again from
	// memory after it.
	a = versions("op-a")
	e0 = epoch()
	errRollback := errors.New("rollback")
	err := s.InTx(t.Context(), func(tx store.Tx) error {
		before, _, err := tx.AuthzEpoch(t.Context())
		if err != nil {
			return err
		}
		if err := tx.CreateGrant(t.Context(), authz.Grant{ID: "g-3", OperatorID: "op-a", RoleID: "viewer", SiteID: siteA.ID, Status: authz.Active, CreatedAt: ts(15, 0, 0)}); err != nil {
			return err
		}
		if v, err := tx.AuthzVersions(t.Context(), "op-a"); err != nil || v.Operator == a.Operator {
			t.Errorf("inside the transaction: %+v, %v; want a moved version", v, err)
		}
		if after, ok, err := tx.AuthzEpoch(t.Context()); err != nil || ok && after == before {
			t.Errorf("inside the transaction the epoch read %d before a grant and %d after (%v)", before, after, err)
		}
		return errRollback
	})
	wantErr(t, "InTx", err, errRollback)
	if na := versions("op-a"); na.Operator != a.Operator {
		t.Errorf("after a rollback op-a's version is %d, want %d", na.Operator, a.Operator)
	}
	if e1 := epoch(); e1 != e0 {
		t.Errorf("after a rollback the authz epoch is %+v, want %+v", e1, e0)
	}
}

// testLoadAuthz: the bulk read returns every operator with the version a
// single read gives, every active grant and nothing else, and every role.
func testLoadAuthz(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	seed(t, s)
	grant := func(id opgate.GrantID, op opgate.OperatorID, st authz.GrantStatus, site opgate.SiteID, from, until time.Time) authz.Grant {
		return authz.Grant{ID: id, OperatorID: op, RoleID: "counter_clerk", SiteID: site, Status: st, GrantedBy: "op-chief", CreatedAt: ts(1, 0, 0), ValidFrom: from, ValidUntil: until}
	}
	gs := []authz.Grant{
		grant("g-1", "op-a", authz.Active, siteA.ID, ts(1, 0, 0), time.Time{}),
		grant("g-2", "op-a", authz.Active, opgate.AllSites, ts(2, 0, 0), ts(9, 0, 0)),
		grant("g-3", "op-a", authz.Revoked, siteA.ID, ts(1, 0, 0), time.Time{}),
		grant("g-4", "op-b", authz.PendingApproval, siteB.ID, time.Time{}, time.Time{}),
		grant("g-5", "op-b", authz.Expired, siteB.ID, ts(1, 0, 0), ts(2, 0, 0)),
		grant("g-6", "op-b", authz.Active, siteB.ID, ts(3, 0, 0), time.Time{}),
	}
	op := operator("op-c", "S-0003", siteA.ID, lifecycle.Suspended)
	op.ValidUntil = ts(20, 0, 0)
	role := roles.Role{ID: "viewer", Name: "照会", Permissions: []opgate.Permission{roles.ResidentRead}}
	write(t, s, func(ctx context.Context, tx store.Tx) error {
		errs := []error{tx.CreateOperator(ctx, op), tx.PutRole(ctx, role)}
		for _, g := range gs {
			errs = append(errs, tx.CreateGrant(ctx, g))
		}
		return errors.Join(errs...)
	})
	st := read(t, s, func(ctx context.Context, tx store.Tx) (authz.State, error) { return tx.LoadAuthz(ctx) })
	var wantOps []authz.OperatorState
	for _, o := range []lifecycle.Operator{operator("op-a", "", siteA.ID, lifecycle.Active), operator("op-b", "", siteB.ID, lifecycle.Active), op} {
		v := read(t, s, func(ctx context.Context, tx store.Tx) (authz.Versions, error) { return tx.AuthzVersions(ctx, o.ID) })
		wantOps = append(wantOps, authz.OperatorState{ID: o.ID, Status: o.Status, ValidUntil: o.ValidUntil, Version: v.Operator})
		if v.Roles != st.RolesVersion {
			t.Errorf("roles version: LoadAuthz %d, AuthzVersions %d", st.RolesVersion, v.Roles)
		}
	}
	byID := func(a, b authz.OperatorState) int { return strings.Compare(string(a.ID), string(b.ID)) }
	slices.SortFunc(st.Operators, byID)
	diff(t, "LoadAuthz operators", wantOps, st.Operators)
	var wantGrants []authz.Grant
	for _, g := range gs {
		if g.Status == authz.Active {
			wantGrants = append(wantGrants, authz.Grant{ID: g.ID, OperatorID: g.OperatorID, RoleID: g.RoleID, SiteID: g.SiteID, Status: g.Status, ValidFrom: g.ValidFrom, ValidUntil: g.ValidUntil})
		}
	}
	slices.SortFunc(st.Grants, func(a, b authz.Grant) int { return strings.Compare(string(a.ID), string(b.ID)) })
	diff(t, "LoadAuthz grants", wantGrants, st.Grants)
	diff(t, "LoadAuthz roles", []roles.Role{role}, st.Roles)
}
