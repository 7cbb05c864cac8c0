package httpapi_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/store"
)

// operatorIDPattern is OP- and 8 characters of Crockford's base32.
var operatorIDPattern = regexp.MustCompile(`^OP-[0-9A-HJKMNP-TV-Z]{8}$`)

// TestOperatorLifecycle carries operators through retirement, suspension,
// unlocking, changes dated ahead and expiry, on one server per backend.
func TestOperatorLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		r.site(t, "kita")
		for _, c := range []struct {
			name string
			fn   func(*testing.T, *rig)
		}{
			{"retire", testRetire}, {"suspend and reinstate", testSuspendReinstate}, {"unlock", testUnlock},
			{"scheduled changes", testScheduledChanges}, {"expiry", testExpiry}, {"a chief's changes", testChiefsChanges}, {"stale transfers", testStaleTransfers},
		} {
			t.Run(c.name, func(t *testing.T) { c.fn(t, r) })
		}
	})
}

// testStaleTransfers: a dated transfer moves the operator from where they
// were when it was decided, and nothing else: a duplicate finds them
// already there, one overtaken by another move finds them elsewhere. Each
// fails, and the rights the new site gave meanwhile stay.
func testStaleTransfers(t *testing.T, r *rig) {
	r.site(t, "minami")
	start := r.Clock.Now()
	at := func(h int) string { return start.Add(time.Duration(h) * time.Hour).Format(time.RFC3339) }
	dup := r.issue(t, "honcho", "6501", nil)
	moved := r.issue(t, "honcho", "6502", nil)
	first := r.must(t, 202, "POST", "/v1/operators/"+dup+"/transfer", r.admin(t), map[string]any{"to_site_id": "kita", "reason": "4月異動", "effective_at": at(1)}).Map(t)["change_id"].(string)
	again := r.must(t, 202, "POST", "/v1/operators/"+dup+"/transfer", r.admin(t), map[string]any{"to_site_id": "kita", "reason": "4月異動 (再送)", "effective_at": at(2)}).Map(t)["change_id"].(string)
	stale := r.must(t, 202, "POST", "/v1/operators/"+moved+"/transfer", r.admin(t), map[string]any{"to_site_id": "kita", "reason": "4月異動", "effective_at": at(2)}).Map(t)["change_id"].(string)
	// A sound transfer to the same site, due in the same sweep: judged on
	// its own, whatever the others' fate.
	good := r.issue(t, "honcho", "6503", nil)
	fine := r.must(t, 202, "POST", "/v1/operators/"+good+"/transfer", r.admin(t), map[string]any{"to_site_id": "kita", "reason": "4月異動", "effective_at": at(2)}).Map(t)["change_id"].(string)
	r.must(t, 200, "POST", "/v1/operators/"+moved+"/transfer", r.admin(t), map[string]any{"to_site_id": "minami", "reason": "急な異動"})

	r.Clock.Set(start.Add(time.Hour + time.Second))
	r.App.Sweep(t.Context(), start)
	// kita's chief gives the newcomer a role; minami's has given one too.
	g := r.grant(t, dup, "counter_clerk", "kita", nil)["grant_id"].(string)
	gm := r.grant(t, moved, "counter_clerk", "minami", nil)["grant_id"].(string)

	r.Clock.Set(start.Add(2*time.Hour + time.Second))
	r.App.Sweep(t.Context(), start)
	status := map[string]string{}
	for _, c := range r.walkList(t, "/v1/scheduled-changes", r.admin(t), nil, 100) {
		status[c["change_id"].(string)] = c["status"].(string)
	}
	if d := cmp.Diff(map[string]string{first: "applied", again: "failed", stale: "failed", fine: "applied"},
		map[string]string{first: status[first], again: status[again], stale: status[stale], fine: status[fine]}); d != "" {
		t.Errorf("changes (-want +got):\n%s", d)
	}
	if o := r.operator(t, good); o["site_id"] != "kita" {
		t.Errorf("the sound transfer left %s at %v", good, o["site_id"])
	}
	for op, want := range map[string]struct{ site, grant string }{dup: {"kita", g}, moved: {"minami", gm}} {
		o := r.operator(t, op)
		if o["site_id"] != want.site {
			t.Errorf("%s at %v, want %s", op, o["site_id"], want.site)
		}
		if d := cmp.Diff([]string{"active"}, statuses(o["grants"])); d != "" {
			t.Errorf("%s's grants (-want +got):\n%s", op, d)
		}
	}
}

// testChiefsChanges: a chief of kita sees, page after page, every change
// of kita's staff and every move to kita, however many of other sites'
// changes sort among them, and nothing else.
func testChiefsChanges(t *testing.T, r *rig) {
	effective := r.Clock.Now().Add(72 * time.Hour)
	for i := range 6 {
		op := r.issue(t, "honcho", fmt.Sprintf("631%d", i), nil)
		r.must(t, 202, "POST", "/v1/operators/"+op+"/retire", r.admin(t),
			map[string]any{"reason": "退職予定", "effective_at": effective.Format(time.RFC3339)})
	}
	kitaOp := r.issue(t, "kita", "6320", nil)
	r.must(t, 202, "POST", "/v1/operators/"+kitaOp+"/retire", r.admin(t),
		map[string]any{"reason": "退職予定", "effective_at": effective.Format(time.RFC3339)})
	chief := r.issue(t, "kita", "6321", nil)
	r.grant(t, chief, "section_chief", "kita", nil)
	var want []string
	for _, c := range r.walkList(t, "/v1/scheduled-changes", r.admin(t), nil, 100) {
		if c["to_site_id"] == "kita" || r.operator(t, c["operator_id"].(string))["site_id"] == "kita" {
			want = append(want, c["change_id"].(string))
		}
	}
	var got []string
	for _, c := range r.walkList(t, "/v1/scheduled-changes", r.token(t, chief, "kita", "kita-01"), nil, 1) {
		got = append(got, c["change_id"].(string))
	}
	if len(want) < 2 || !slices.Equal(got, want) {
		t.Errorf("kita's chief sees changes %v, want %v", got, want)
	}
}

// addCard stores an active card for op, as an enrollment would.
func (r *rig) addCard(t testing.TB, op, serial string) string {
	t.Helper()
	now := r.Clock.Now()
	id := "C-" + serial
	err := r.App.Store.InTx(context.Background(), func(tx store.Tx) error {
		return tx.CreateCard(context.Background(), authn.Card{ID: opgate.CardID(id), OperatorID: opgate.OperatorID(op), Serial: serial,
			Label: "職員証", Status: authn.CardActive, CredentialID: []byte("cred-" + serial), PublicKey: []byte{1, 2, 3},
			AAGUID: make([]byte, 16), EnrolledAt: now, EnrolledBy: r.Boot.OperatorID, StatusChanged: now})
	})
	if err != nil {
		t.Fatalf("create card: %v", err)
	}
	return id
}

func (r *rig) operator(t testing.TB, id string) map[string]any {
	t.Helper()
	return r.must(t, 200, "GET", "/v1/operators/"+id, r.admin(t), nil).Map(t)
}

func statuses(list any) []string {
	out := []string{}
	for _, x := range list.([]any) {
		out = append(out, x.(map[string]any)["status"].(string))
	}
	sort.Strings(out)
	return out
}

func testRetire(t *testing.T, r *rig) {
	x := r.issue(t, "honcho", "6001", nil)
	if !operatorIDPattern.MatchString(x) {
		t.Errorf("operator ID %q does not match %s", x, operatorIDPattern)
	}
	r.grant(t, x, "counter_clerk", "honcho", nil)
	if g := r.grant(t, x, "security_admin", "honcho", nil); g["status"] != "pending_approval" {
		t.Fatalf("grant %v", g)
	}
	r.addCard(t, x, "SN-6001-A")
	r.addCard(t, x, "SN-6001-B")
	tok1 := r.token(t, x, "honcho", "admin-console")
	tok2 := r.token(t, x, "honcho", "admin-console")
	r.must(t, 200, "GET", "/v1/me", tok1, nil)
	r.must(t, 200, "GET", "/v1/me", tok2, nil)
	r.Clock.Advance(time.Second)
	at := r.Clock.Now()

	got := r.must(t, 200, "POST", "/v1/operators/"+x+"/retire", r.admin(t), map[string]any{"reason": "定年退職"}).Map(t)
	if got["status"] != "retired" || got["operator_id"] != x {
		t.Errorf("retired: %v", got)
	}
	for name, tok := range map[string]string{"first": tok1, "second": tok2} {
		if resp := r.call(t, "GET", "/v1/me", tok, nil); resp.Status != 401 {
			t.Errorf("%s session after retirement: %d", name, resp.Status)
		}
	}
	op := r.operator(t, x)
	if d := cmp.Diff([]string{"revoked", "revoked"}, statuses(op["grants"])); d != "" {
		t.Errorf("grants (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"collected", "collected"}, statuses(op["cards"])); d != "" {
		t.Errorf("cards (-want +got):\n%s", d)
	}
	perms := r.must(t, 200, "GET", "/v1/operators/"+x+"/permissions", r.admin(t), nil).Map(t)
	if len(perms["permissions"].([]any)) != 0 {
		t.Errorf("a retired operator keeps %v", perms["permissions"])
	}

	// Every right's end and the retirement are one transaction: events
	// of one instant, in one unbroken run of the chain.
	var run []map[string]any
	for _, e := range r.history(t, x) {
		if e["at"] == at.Format(time.RFC3339Nano) {
			run = append(run, e)
		}
	}
	types := typesOf(run)
	sort.Strings(types)
	want := []string{"card.collected", "card.collected", "grant.revoked", "grant.revoked", "operator.retired", "session.ended", "session.ended"}
	if d := cmp.Diff(want, types); d != "" {
		t.Errorf("events of the retirement (-want +got):\n%s", d)
	}
	for i := 1; i < len(run); i++ {
		if run[i]["seq"].(float64) != run[i-1]["seq"].(float64)+1 {
			t.Errorf("the retirement's events are not contiguous: seq %v then %v", run[i-1]["seq"], run[i]["seq"])
		}
	}
	if len(run) > 0 && run[len(run)-1]["type"] != "operator.retired" {
		t.Errorf("the last event is %v", run[len(run)-1]["type"])
	}
	if v := r.must(t, 200, "GET", "/v1/audit/verify", r.admin(t), nil).Map(t); v["ok"] != true {
		t.Errorf("verify: %v", v)
	}

	// The staff number may be issued again; the new ID is new.
	again := r.issue(t, "honcho", "6001", nil)
	if again == x || !operatorIDPattern.MatchString(again) {
		t.Errorf("reissued ID %q (retired one %q)", again, x)
	}
	if o := r.operator(t, x); o["status"] != "retired" {
		t.Errorf("the retired operator became %v", o["status"])
	}
	// But not while it is held.
	checkProblem(t, r.call(t, "POST", "/v1/operators", r.admin(t), map[string]any{"staff_number": "6001", "name": "x", "site_id": "honcho", "employment_type": "regular"}), 409, "conflict")
}

func testSuspendReinstate(t *testing.T, r *rig) {
	s := r.issue(t, "honcho", "6101", nil)
	r.grant(t, s, "section_chief", "honcho", nil)
	before := r.token(t, s, "honcho", "admin-console")
	r.must(t, 200, "GET", "/v1/operators?site_id=honcho", before, nil)

	got := r.must(t, 200, "POST", "/v1/operators/"+s+"/suspend", r.admin(t), map[string]any{"reason": "育児休業"}).Map(t)
	if got["status"] != "suspended" {
		t.Errorf("suspended: %v", got)
	}
	checkProblem(t, r.call(t, "GET", "/v1/me", before, nil), 401, "unauthenticated")
	op := r.operator(t, s)
	if d := cmp.Diff([]string{"active"}, statuses(op["grants"])); d != "" {
		t.Errorf("grants while suspended (-want +got):\n%s", d)
	}
	perms := r.must(t, 200, "GET", "/v1/operators/"+s+"/permissions", r.admin(t), nil).Map(t)
	if !hasPerm(perms, "operator.manage", "honcho") {
		t.Errorf("the grants of a suspended operator are not listed: %v", perms)
	}
	// A session the suspended operator somehow holds is refused by
	// every admin check.
	during := r.token(t, s, "honcho", "admin-console")
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/operators?site_id=honcho", nil},
		{"GET", "/v1/operators/" + r.adminID(), nil},
		{"POST", "/v1/operators", map[string]any{"staff_number": "6199", "name": "x", "site_id": "honcho", "employment_type": "regular"}},
		{"GET", "/v1/grants", nil},
		{"POST", "/v1/terminals", map[string]any{"terminal_id": "honcho-77", "site_id": "honcho", "name": "x"}},
	} {
		checkProblem(t, r.call(t, c.method, c.path, during, c.body), 403, "forbidden")
	}
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+s+"/suspend", r.admin(t), map[string]any{"reason": "二重"}), 409, "conflict")

	got = r.must(t, 200, "POST", "/v1/operators/"+s+"/reinstate", r.admin(t), map[string]any{"reason": "復職"}).Map(t)
	if got["status"] != "active" {
		t.Errorf("reinstated: %v", got)
	}
	after := r.token(t, s, "honcho", "admin-console")
	r.must(t, 200, "GET", "/v1/operators?site_id=honcho", after, nil)
	types := typesOf(r.history(t, s))
	for _, want := range []string{"operator.suspended", "session.ended", "operator.reinstated"} {
		if !slices.Contains(types, want) {
			t.Errorf("history %v lacks %s", types, want)
		}
	}
	// Nobody changes their own status.
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+r.adminID()+"/suspend", r.admin(t), map[string]any{"reason": "x"}), 409, "conflict")
}

func testUnlock(t *testing.T, r *rig) {
	u := r.issue(t, "honcho", "6201", nil)
	got := r.must(t, 200, "POST", "/v1/operators/"+u+"/unlock", r.admin(t), map[string]any{"reason": "本人確認済"}).Map(t)
	if got["status"] != "active" || got["locked_until"] != nil {
		t.Errorf("unlocked: %v", got)
	}
	if types := typesOf(r.history(t, u)); !slices.Contains(types, "operator.unlocked") {
		t.Errorf("history %v lacks operator.unlocked", types)
	}
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+u+"/unlock", r.admin(t), map[string]any{"reason": " "}), 400, "validation_failed")
}

func testScheduledChanges(t *testing.T, r *rig) {
	start := r.Clock.Now()
	effective := start.Add(72 * time.Hour)
	tr := r.issue(t, "honcho", "6301", nil)
	r.grant(t, tr, "counter_clerk", "honcho", nil)
	ret := r.issue(t, "honcho", "6302", nil)

	sched := r.must(t, 202, "POST", "/v1/operators/"+tr+"/transfer", r.admin(t),
		map[string]any{"to_site_id": "kita", "reason": "4月異動", "effective_at": effective.Format(time.RFC3339)}).Map(t)
	changeID, _ := sched["change_id"].(string)
	if changeID == "" || sched["effective_at"] != effective.Format(time.RFC3339Nano) {
		t.Fatalf("scheduled: %v", sched)
	}
	cancelled := r.must(t, 202, "POST", "/v1/operators/"+ret+"/retire", r.admin(t),
		map[string]any{"reason": "退職予定", "effective_at": effective.Format(time.RFC3339)}).Map(t)["change_id"].(string)

	changes := map[string]map[string]any{}
	for _, c := range itemsOf(r.must(t, 200, "GET", "/v1/scheduled-changes", r.admin(t), nil).Map(t)) {
		changes[c["change_id"].(string)] = c
	}
	if c := changes[changeID]; c == nil || c["status"] != "pending" || c["operator_id"] != tr || c["to_site_id"] != "kita" || c["kind"] != "transfer" {
		t.Errorf("listed change: %v", c)
	}
	if c := changes[cancelled]; c == nil || c["kind"] != "retire" {
		t.Errorf("listed change: %v", c)
	}
	r.must(t, 204, "DELETE", "/v1/scheduled-changes/"+cancelled, r.admin(t), map[string]any{"reason": "撤回"})
	checkProblem(t, r.call(t, "DELETE", "/v1/scheduled-changes/"+cancelled, r.admin(t), nil), 409, "conflict")

	// Nothing happens before effective_at.
	r.Clock.Set(effective.Add(-time.Second))
	r.App.Sweep(t.Context(), start)
	if o := r.operator(t, tr); o["site_id"] != "honcho" || !slices.Equal(statuses(o["grants"]), []string{"active"}) {
		t.Errorf("before effective_at: site %v, grants %v", o["site_id"], statuses(o["grants"]))
	}

	r.Clock.Set(effective)
	sweepAt := r.Clock.Now()
	r.App.Sweep(t.Context(), start)
	check := func(when string) {
		t.Helper()
		o := r.operator(t, tr)
		if o["site_id"] != "kita" || o["status"] != "active" || !slices.Equal(statuses(o["grants"]), []string{"revoked"}) {
			t.Errorf("%s: site %v, status %v, grants %v", when, o["site_id"], o["status"], statuses(o["grants"]))
		}
		var n int
		for _, e := range r.history(t, tr) {
			if e["type"] == "operator.transferred" {
				n++
				if e["at"] != sweepAt.Format(time.RFC3339Nano) {
					t.Errorf("transferred at %v, want %v", e["at"], sweepAt)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d operator.transferred events, want 1", when, n)
		}
		if o := r.operator(t, ret); o["status"] != "active" {
			t.Errorf("%s: the cancelled retirement applied: %v", when, o["status"])
		}
		byID := map[string]string{}
		for _, c := range itemsOf(r.must(t, 200, "GET", "/v1/scheduled-changes", r.admin(t), nil).Map(t)) {
			byID[c["change_id"].(string)] = c["status"].(string)
		}
		if d := cmp.Diff(map[string]string{changeID: "applied", cancelled: "cancelled"}, byID); d != "" {
			t.Errorf("%s: changes (-want +got):\n%s", when, d)
		}
	}
	check("after the sweep")
	before := len(r.history(t, tr))
	r.Clock.Advance(time.Hour)
	r.App.Sweep(t.Context(), start)
	check("after a second sweep")
	if n := len(r.history(t, tr)); n != before {
		t.Errorf("a second sweep wrote %d events", n-before)
	}
	checkProblem(t, r.call(t, "DELETE", "/v1/scheduled-changes/"+changeID, r.admin(t), nil), 409, "conflict")

	// A change dated now or earlier applies at once.
	now := r.must(t, 200, "POST", "/v1/operators/"+ret+"/transfer", r.admin(t),
		map[string]any{"to_site_id": "kita", "reason": "即日", "effective_at": r.Clock.Now().Format(time.RFC3339Nano)}).Map(t)
	if now["site_id"] != "kita" {
		t.Errorf("transfer dated now: %v", now)
	}
}

func testExpiry(t *testing.T, r *rig) {
	until := r.Clock.Now().Add(48 * time.Hour)
	e := r.issue(t, "honcho", "6401", map[string]any{"employment_type": "temporary", "valid_until": until.Format(time.RFC3339)})
	keep := r.issue(t, "honcho", "6402", nil)
	r.grant(t, e, "counter_clerk", "honcho", nil)
	r.grant(t, keep, "counter_clerk", "honcho", nil)
	r.addCard(t, e, "SN-6401")

	r.Clock.Set(until.Add(-time.Minute))
	tok := r.token(t, e, "honcho", "admin-console")
	r.must(t, 200, "GET", "/v1/me", tok, nil)
	r.Clock.Set(until.Add(time.Second))
	// Past its end the ID shows as expired at once, as the ledger shows it,
	// before the sweep that ends its rights and records it has run.
	if o := r.operator(t, e); o["status"] != "expired" {
		t.Errorf("before the sweep: status %v, want expired", o["status"])
	}
	r.App.Sweep(t.Context(), until.Add(-time.Hour))

	o := r.operator(t, e)
	if o["status"] != "expired" {
		t.Errorf("status %v, want expired", o["status"])
	}
	if d := cmp.Diff([]string{"revoked"}, statuses(o["grants"])); d != "" {
		t.Errorf("grants (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"collected"}, statuses(o["cards"])); d != "" {
		t.Errorf("cards (-want +got):\n%s", d)
	}
	checkProblem(t, r.call(t, "GET", "/v1/me", tok, nil), 401, "unauthenticated")
	types := typesOf(r.history(t, e))
	for _, want := range []string{"operator.expired", "session.ended", "grant.revoked", "card.collected"} {
		if !slices.Contains(types, want) {
			t.Errorf("history %v lacks %s", types, want)
		}
	}
	if o := r.operator(t, keep); o["status"] != "active" || !slices.Equal(statuses(o["grants"]), []string{"active"}) {
		t.Errorf("a regular operator was touched: %v %v", o["status"], statuses(o["grants"]))
	}
	// An expired operator gets nothing new.
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+e+"/grants", r.admin(t), map[string]any{"role_id": "counter_viewer", "site_id": "honcho", "reason": "x"}), 409, "conflict")
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+e+"/transfer", r.admin(t), map[string]any{"to_site_id": "kita", "reason": "x"}), 409, "conflict")
	r.App.Sweep(t.Context(), until.Add(-time.Hour))
	if n := len(r.history(t, e)); n != len(types) {
		t.Errorf("a second sweep wrote %d events", n-len(types))
	}
}
