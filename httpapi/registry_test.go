package httpapi_test

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRegistry covers sites, terminals, the permission catalog, roles,
// grants and the reach of a section chief, on one server per backend.
func TestRegistry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		r.site(t, "kita")
		for _, c := range []struct {
			name string
			fn   func(*testing.T, *rig)
		}{
			{"sites", testSites}, {"terminals", testTerminals}, {"permission catalog", testPermissionCatalog},
			{"roles", testRoles}, {"grants", testGrants}, {"section chief scope", testSectionChiefScope},
			{"employment rules", testEmploymentRules},
		} {
			t.Run(c.name, func(t *testing.T) { c.fn(t, r) })
		}
	})
}

func stringsOf(v any) []string {
	out := []string{}
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	sort.Strings(out)
	return out
}

func itemsOf(m map[string]any) []map[string]any {
	var out []map[string]any
	for _, it := range m["items"].([]any) {
		out = append(out, it.(map[string]any))
	}
	return out
}

func testSites(t *testing.T, r *rig) {
	got := r.must(t, 201, "POST", "/v1/sites", r.admin(t), map[string]any{"site_id": "higashi", "name": "東支所", "municipality_code": "132152"}).Map(t)
	if got["site_id"] != "higashi" || got["name"] != "東支所" || got["municipality_code"] != "132152" {
		t.Errorf("created site %v", got)
	}
	checkProblem(t, r.call(t, "POST", "/v1/sites", r.admin(t), map[string]any{"site_id": "higashi", "name": "二重", "municipality_code": "132152"}), 409, "conflict")

	for _, c := range []struct {
		name string
		body map[string]any
		want []string
	}{
		{"letters in the code", map[string]any{"site_id": "minami", "name": "南", "municipality_code": "13215A"}, []string{"municipality_code"}},
		{"short code", map[string]any{"site_id": "minami", "name": "南", "municipality_code": "13215"}, []string{"municipality_code"}},
		{"long code", map[string]any{"site_id": "minami", "name": "南", "municipality_code": "1321520"}, []string{"municipality_code"}},
		{"fullwidth digits", map[string]any{"site_id": "minami", "name": "南", "municipality_code": "１３２１５２"}, []string{"municipality_code"}},
		{"every field bad", map[string]any{"site_id": "Minami!", "name": "", "municipality_code": ""}, []string{"municipality_code", "name", "site_id"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := checkProblem(t, r.call(t, "POST", "/v1/sites", r.admin(t), c.body), 400, "validation_failed")
			got := p.fields()
			sort.Strings(got)
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("errors[] fields (-want +got):\n%s", d)
			}
		})
	}
	var ids []string
	for _, s := range itemsOf(r.must(t, 200, "GET", "/v1/sites", r.admin(t), nil).Map(t)) {
		ids = append(ids, s["site_id"].(string))
	}
	for _, want := range []string{"honcho", "kita", "higashi"} {
		if !slices.Contains(ids, want) {
			t.Errorf("sites %v lack %s", ids, want)
		}
	}
}

func testTerminals(t *testing.T, r *rig) {
	p := checkProblem(t, r.call(t, "POST", "/v1/terminals", r.admin(t), map[string]any{"terminal_id": "nishi-01", "site_id": "nishi", "name": "窓口1"}),
		400, "validation_failed")
	if !slices.Contains(p.fields(), "site_id") {
		t.Errorf("errors[] %v do not name site_id", p.fields())
	}
	r.site(t, "nishi")
	got := r.must(t, 201, "POST", "/v1/terminals", r.admin(t), map[string]any{"terminal_id": "nishi-01", "site_id": "nishi", "name": "窓口1"}).Map(t)
	if got["terminal_id"] != "nishi-01" || got["site_id"] != "nishi" {
		t.Errorf("created terminal %v", got)
	}
	list := itemsOf(r.must(t, 200, "GET", "/v1/terminals?site_id=nishi", r.admin(t), nil).Map(t))
	if len(list) != 1 || list[0]["terminal_id"] != "nishi-01" {
		t.Errorf("terminals of nishi: %v", list)
	}
	r.must(t, 204, "DELETE", "/v1/terminals/nishi-01", r.admin(t), nil)
	checkProblem(t, r.call(t, "DELETE", "/v1/terminals/nishi-01", r.admin(t), nil), 404, "not_found")
	if list := itemsOf(r.must(t, 200, "GET", "/v1/terminals?site_id=nishi", r.admin(t), nil).Map(t)); len(list) != 0 {
		t.Errorf("a removed terminal is still listed: %v", list)
	}
}

// builtInRoles are the contract's built-in roles and their permissions.
var builtInRoles = map[string][]string{
	"counter_clerk":  {"certificate.issue", "resident.read", "resident.update"},
	"counter_viewer": {"resident.read"},
	"section_chief":  {"grant.manage", "operator.manage", "report.read", "review.perform", "terminal.manage"},
	"security_admin": {"audit.read", "emergency.stop", "grant.approve", "grant.manage", "operator.manage", "policy.manage",
		"report.read", "review.perform", "role.manage", "site.manage", "terminal.manage"},
	"auditor": {"audit.read", "report.read"},
}

// catalog is every permission API.md names, and whether it is high risk.
var catalog = map[string]bool{
	"resident.read": false, "resident.update": false, "resident.read_restricted": true, "resident.bulk_export": true,
	"certificate.issue": false, "card.issue": false, "operator.manage": false, "grant.manage": false, "grant.approve": false,
	"review.perform": false, "terminal.manage": false, "site.manage": false, "role.manage": true, "policy.manage": true,
	"audit.read": false, "report.read": false, "emergency.stop": false,
}

func testPermissionCatalog(t *testing.T, r *rig) {
	got := map[string]bool{}
	for _, e := range itemsOf(r.must(t, 200, "GET", "/v1/permissions", r.admin(t), nil).Map(t)) {
		if d, _ := e["description"].(string); d == "" {
			t.Errorf("%v has no description", e["permission"])
		}
		got[e["permission"].(string)] = e["high_risk"].(bool)
	}
	if d := cmp.Diff(catalog, got); d != "" {
		t.Errorf("catalog (-want +got):\n%s", d)
	}
}

func testRoles(t *testing.T, r *rig) {
	roles := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, ro := range itemsOf(r.must(t, 200, "GET", "/v1/roles", r.admin(t), nil).Map(t)) {
			out[ro["role_id"].(string)] = ro
		}
		return out
	}
	all := roles()
	got := map[string][]string{}
	for id := range builtInRoles {
		if ro, ok := all[id]; ok {
			got[id] = stringsOf(ro["permissions"])
		}
	}
	if d := cmp.Diff(builtInRoles, got); d != "" {
		t.Errorf("built-in roles (-want +got):\n%s", d)
	}
	for _, p := range got["security_admin"] {
		if p == "card.issue" || strings.HasPrefix(p, "resident.") || strings.HasPrefix(p, "certificate.") {
			t.Errorf("security_admin holds counter duty %s", p)
		}
	}
	if c := stringsOf(all["auditor"]["conflicts_with"]); !slices.Contains(c, "security_admin") {
		t.Errorf("auditor conflicts with %v, want security_admin", c)
	}
	for id, want := range map[string]bool{"security_admin": true, "auditor": false, "counter_clerk": false, "section_chief": false} {
		if all[id]["high_risk"] != want {
			t.Errorf("%s high_risk = %v, want %v", id, all[id]["high_risk"], want)
		}
	}

	created := r.must(t, 201, "POST", "/v1/roles", r.admin(t), map[string]any{"role_id": "exporter", "name": "一括出力",
		"permissions": []string{"resident.bulk_export", "resident.read"}, "conflicts_with": []string{"auditor"}}).Map(t)
	if created["high_risk"] != true || !slices.Equal(stringsOf(created["permissions"]), []string{"resident.bulk_export", "resident.read"}) {
		t.Errorf("created role %v", created)
	}
	updated := r.must(t, 200, "PUT", "/v1/roles/exporter", r.admin(t), map[string]any{"name": "照会のみ", "permissions": []string{"resident.read"}}).Map(t)
	if updated["high_risk"] != false || updated["name"] != "照会のみ" || len(stringsOf(updated["conflicts_with"])) != 0 {
		t.Errorf("updated role %v", updated)
	}
	if got := stringsOf(roles()["exporter"]["permissions"]); !slices.Equal(got, []string{"resident.read"}) {
		t.Errorf("listed after update: %v", got)
	}
	p := checkProblem(t, r.call(t, "POST", "/v1/roles", r.admin(t), map[string]any{"role_id": "odd", "name": "x", "permissions": []string{"resident.fly"}}),
		400, "validation_failed")
	if !slices.Contains(p.fields(), "permissions") {
		t.Errorf("errors[] %v do not name permissions", p.fields())
	}
	checkProblem(t, r.call(t, "PUT", "/v1/roles/exporter", r.admin(t), map[string]any{"role_id": "other", "name": "x", "permissions": []string{"resident.read"}}),
		400, "validation_failed")
	// Built-in roles are editable.
	r.must(t, 200, "PUT", "/v1/roles/counter_viewer", r.admin(t), map[string]any{"name": "照会担当", "permissions": []string{"resident.read"}})
}

func testGrants(t *testing.T, r *rig) {
	x := r.issue(t, "honcho", "2001", nil)

	t.Run("self grant", func(t *testing.T) {
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+r.adminID()+"/grants", r.admin(t),
			map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "x"}), 403, "self_grant")
	})
	t.Run("separation of duties", func(t *testing.T) {
		admin2 := r.issue(t, "honcho", "2002", nil)
		if g := r.grant(t, admin2, "security_admin", "honcho", nil); g["status"] != "pending_approval" {
			t.Fatalf("security_admin grant %v", g)
		}
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+admin2+"/grants", r.admin(t),
			map[string]any{"role_id": "auditor", "site_id": "honcho", "reason": "x"}), 409, "sod_conflict")
		aud := r.issue(t, "honcho", "2003", nil)
		if g := r.grant(t, aud, "auditor", "honcho", nil); g["status"] != "active" {
			t.Fatalf("auditor grant %v", g)
		}
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+aud+"/grants", r.admin(t),
			map[string]any{"role_id": "security_admin", "site_id": "honcho", "reason": "x"}), 409, "sod_conflict")
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+aud+"/grants", r.admin(t),
			map[string]any{"role_id": "security_admin", "site_id": "*", "reason": "x"}), 409, "sod_conflict")
	})
	t.Run("home site only", func(t *testing.T) {
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+x+"/grants", r.admin(t),
			map[string]any{"role_id": "counter_clerk", "site_id": "kita", "reason": "応援"}), 409, "conflict")
	})
	t.Run("retired operator", func(t *testing.T) {
		gone := r.issue(t, "honcho", "2004", nil)
		r.must(t, 200, "POST", "/v1/operators/"+gone+"/retire", r.admin(t), map[string]any{"reason": "退職"})
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+gone+"/grants", r.admin(t),
			map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "x"}), 409, "conflict")
	})
	t.Run("every site", func(t *testing.T) {
		for _, role := range []string{"counter_clerk", "section_chief", "counter_viewer"} {
			checkProblem(t, r.call(t, "POST", "/v1/operators/"+x+"/grants", r.admin(t),
				map[string]any{"role_id": role, "site_id": "*", "reason": "x"}), 409, "conflict")
		}
		aud := r.issue(t, "kita", "2005", nil)
		if g := r.grant(t, aud, "auditor", "*", nil); g["status"] != "active" || g["site_id"] != "*" {
			t.Errorf("auditor at every site: %v", g)
		}
		sa := r.issue(t, "kita", "2006", nil)
		if g := r.grant(t, sa, "security_admin", "*", nil); g["status"] != "pending_approval" || g["site_id"] != "*" {
			t.Errorf("security_admin at every site: %v", g)
		}
		// Only a holder of grant.manage at every site grants there.
		chief := r.issue(t, "honcho", "2007", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		checkProblem(t, r.call(t, "POST", "/v1/operators/"+x+"/grants", r.token(t, chief, "honcho", "admin-console"),
			map[string]any{"role_id": "auditor", "site_id": "*", "reason": "x"}), 403, "forbidden")
	})
	t.Run("high risk needs a second person", func(t *testing.T) {
		r.must(t, 201, "POST", "/v1/roles", r.admin(t), map[string]any{"role_id": "restricted_reader", "name": "支援措置照会",
			"permissions": []string{"resident.read", "resident.read_restricted"}})
		y := r.issue(t, "honcho", "2101", nil)
		g := r.grant(t, y, "restricted_reader", "honcho", nil)
		if g["status"] != "pending_approval" || g["approved_by"] != nil {
			t.Fatalf("high-risk grant %v", g)
		}
		id := g["grant_id"].(string)
		perms := r.must(t, 200, "GET", "/v1/operators/"+y+"/permissions", r.admin(t), nil).Map(t)
		if n := len(perms["permissions"].([]any)); n != 0 {
			t.Errorf("a pending grant counts: %v", perms)
		}
		// The requester may not approve their own request; nor may the
		// grantee.
		checkProblem(t, r.call(t, "POST", "/v1/grants/"+id+"/approve", r.admin(t), map[string]any{"reason": "承認"}), 403, "self_grant")
		checkProblem(t, r.call(t, "POST", "/v1/grants/"+id+"/approve", r.token(t, y, "honcho", "admin-console"), map[string]any{"reason": "承認"}), 403, "forbidden")
		chief := r.issue(t, "honcho", "2102", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		approved := r.must(t, 200, "POST", "/v1/grants/"+id+"/approve", r.token(t, chief, "honcho", "admin-console"), map[string]any{"reason": "承認"}).Map(t)
		if approved["status"] != "active" || approved["approved_by"] != chief || approved["granted_by"] != r.adminID() {
			t.Errorf("approved grant %v", approved)
		}
		perms = r.must(t, 200, "GET", "/v1/operators/"+y+"/permissions", r.admin(t), nil).Map(t)
		if !hasPerm(perms, "resident.read_restricted", "honcho") {
			t.Errorf("an approved grant does not count: %v", perms)
		}
		var types []string
		for _, e := range r.history(t, y) {
			if e["resource"] == "grant:"+id {
				types = append(types, e["type"].(string))
			}
		}
		if d := cmp.Diff([]string{"grant.requested", "grant.approved"}, types); d != "" {
			t.Errorf("grant events (-want +got):\n%s", d)
		}
	})
	t.Run("valid_until", func(t *testing.T) {
		z := r.issue(t, "honcho", "2201", nil)
		until := r.Clock.Now().Add(2 * time.Hour)
		g := r.grant(t, z, "counter_clerk", "honcho", map[string]any{"valid_until": until.Format(time.RFC3339)})
		id := g["grant_id"].(string)
		at := func(q string) map[string]any {
			return r.must(t, 200, "GET", "/v1/operators/"+z+"/permissions"+q, r.admin(t), nil).Map(t)
		}
		if p := at(""); !hasPerm(p, "resident.read", "honcho") {
			t.Errorf("before valid_until: %v", p)
		}
		if p := at("?at=" + until.Add(-time.Microsecond).Format(time.RFC3339Nano)); !hasPerm(p, "resident.read", "honcho") {
			t.Errorf("a microsecond before valid_until: %v", p)
		}
		if p := at("?at=" + until.Format(time.RFC3339Nano)); len(p["permissions"].([]any)) != 0 {
			t.Errorf("at valid_until: %v", p)
		}
		r.Clock.Set(until)
		if p := at(""); len(p["permissions"].([]any)) != 0 || len(p["grants"].([]any)) != 0 {
			t.Errorf("at valid_until, before the sweep: %v", p)
		}
		r.App.Sweep(t.Context(), until.Add(-time.Hour))
		list := itemsOf(r.must(t, 200, "GET", "/v1/grants?operator_id="+z, r.admin(t), nil).Map(t))
		if len(list) != 1 || list[0]["status"] != "expired" {
			t.Errorf("after the sweep: %v", list)
		}
		evs := itemsOf(r.must(t, 200, "GET", "/v1/audit/events?type=grant.expired&resource_id=grant:"+id, r.admin(t), nil).Map(t))
		if len(evs) != 1 || evs[0]["operator_id"] != z {
			t.Errorf("grant.expired events: %v", evs)
		}
		// A second sweep finds nothing more to do.
		r.App.Sweep(t.Context(), until.Add(-time.Hour))
		evs = itemsOf(r.must(t, 200, "GET", "/v1/audit/events?type=grant.expired&resource_id=grant:"+id, r.admin(t), nil).Map(t))
		if len(evs) != 1 {
			t.Errorf("grant.expired events after a second sweep: %d", len(evs))
		}
	})
}

func hasPerm(perms map[string]any, perm, site string) bool {
	for _, p := range perms["permissions"].([]any) {
		m := p.(map[string]any)
		if m["permission"] == perm && m["site_id"] == site {
			return true
		}
	}
	return false
}

func testSectionChiefScope(t *testing.T, r *rig) {
	r.site(t, "minami")
	r.must(t, 201, "POST", "/v1/terminals", r.admin(t), map[string]any{"terminal_id": "minami-01", "site_id": "minami", "name": "窓口1"})
	chiefID := r.issue(t, "minami", "3001", nil)
	r.grant(t, chiefID, "section_chief", "minami", nil)
	chief := r.token(t, chiefID, "minami", "minami-01")
	honchoOp := r.issue(t, "honcho", "3002", nil)
	minamiOp := r.issue(t, "minami", "3003", nil)

	for _, c := range []struct {
		name, method, path string
		body               any
	}{
		{"list honcho", "GET", "/v1/operators?site_id=honcho", nil},
		{"list every site", "GET", "/v1/operators", nil},
		{"get honcho operator", "GET", "/v1/operators/" + honchoOp, nil},
		{"history of honcho operator", "GET", "/v1/operators/" + honchoOp + "/history", nil},
		{"issue at honcho", "POST", "/v1/operators", map[string]any{"staff_number": "3100", "name": "x", "site_id": "honcho", "employment_type": "regular"}},
		{"suspend honcho operator", "POST", "/v1/operators/" + honchoOp + "/suspend", map[string]any{"reason": "休職"}},
		{"retire honcho operator", "POST", "/v1/operators/" + honchoOp + "/retire", map[string]any{"reason": "退職"}},
		{"grant at honcho", "POST", "/v1/operators/" + honchoOp + "/grants", map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "x"}},
		{"grant to honcho operator at minami", "POST", "/v1/operators/" + honchoOp + "/grants", map[string]any{"role_id": "counter_clerk", "site_id": "minami", "reason": "x"}},
		{"terminal at honcho", "POST", "/v1/terminals", map[string]any{"terminal_id": "honcho-19", "site_id": "honcho", "name": "x"}},
		{"delete honcho terminal", "DELETE", "/v1/terminals/admin-console", nil},
		{"create a site", "POST", "/v1/sites", map[string]any{"site_id": "tobu", "name": "東部", "municipality_code": "132152"}},
		{"policy", "PUT", "/v1/policy", map[string]any{}},
	} {
		t.Run("refused/"+c.name, func(t *testing.T) {
			checkProblem(t, r.call(t, c.method, c.path, chief, c.body), 403, "forbidden")
		})
	}
	t.Run("allowed at minami", func(t *testing.T) {
		list := itemsOf(r.must(t, 200, "GET", "/v1/operators?site_id=minami", chief, nil).Map(t))
		var ids []string
		for _, o := range list {
			ids = append(ids, o["operator_id"].(string))
		}
		sort.Strings(ids)
		want := []string{chiefID, minamiOp}
		sort.Strings(want)
		if d := cmp.Diff(want, ids); d != "" {
			t.Errorf("operators of minami (-want +got):\n%s", d)
		}
		// The search stays inside what the caller may see.
		found := itemsOf(r.must(t, 200, "GET", "/v1/operators?site_id=minami&q="+minamiOp[:5], chief, nil).Map(t))
		if len(found) == 0 || len(found) > 2 {
			t.Errorf("search by ID prefix at minami: %v", found)
		}
		for _, o := range found {
			if o["site_id"] != "minami" {
				t.Errorf("search found an operator of %v", o["site_id"])
			}
		}
		checkProblem(t, r.call(t, "GET", "/v1/operators?q="+strings.Repeat("x", 101), chief, nil), 400, "validation_failed")
		r.must(t, 200, "GET", "/v1/operators/"+minamiOp, chief, nil)
		r.must(t, 200, "GET", "/v1/operators/"+minamiOp+"/history", chief, nil)
		newOp := r.must(t, 201, "POST", "/v1/operators", chief, map[string]any{"staff_number": "3101", "name": "北 新人", "site_id": "minami", "employment_type": "regular"}).Map(t)
		if newOp["issued_by"] != chiefID {
			t.Errorf("issued_by %v, want %s", newOp["issued_by"], chiefID)
		}
		g := r.must(t, 201, "POST", "/v1/operators/"+minamiOp+"/grants", chief, map[string]any{"role_id": "counter_clerk", "site_id": "minami", "reason": "配属"}).Map(t)
		if g["status"] != "active" || g["granted_by"] != chiefID {
			t.Errorf("grant by the chief: %v", g)
		}
		r.must(t, 200, "POST", "/v1/operators/"+minamiOp+"/suspend", chief, map[string]any{"reason": "休職"})
		r.must(t, 200, "POST", "/v1/operators/"+minamiOp+"/reinstate", chief, map[string]any{"reason": "復職"})
		r.must(t, 201, "POST", "/v1/terminals", chief, map[string]any{"terminal_id": "minami-02", "site_id": "minami", "name": "窓口2"})
		for _, gr := range itemsOf(r.must(t, 200, "GET", "/v1/grants", chief, nil).Map(t)) {
			if gr["site_id"] != "minami" {
				t.Errorf("the chief of minami lists a grant at %v", gr["site_id"])
			}
		}
	})
}

func testEmploymentRules(t *testing.T, r *rig) {
	for _, typ := range []string{"part_time", "temporary", "dispatched", "contractor"} {
		t.Run(typ+" without valid_until", func(t *testing.T) {
			p := checkProblem(t, r.call(t, "POST", "/v1/operators", r.admin(t),
				map[string]any{"staff_number": "5-" + typ, "name": "x", "site_id": "honcho", "employment_type": typ}), 400, "validation_failed")
			if !slices.Contains(p.fields(), "valid_until") {
				t.Errorf("errors[] %v do not name valid_until", p.fields())
			}
		})
	}
	p := checkProblem(t, r.call(t, "POST", "/v1/operators", r.admin(t),
		map[string]any{"staff_number": "5000", "name": "x", "site_id": "honcho", "employment_type": "intern"}), 400, "validation_failed")
	if !slices.Contains(p.fields(), "employment_type") {
		t.Errorf("errors[] %v do not name employment_type", p.fields())
	}
	until := r.Clock.Now().Add(180 * 24 * time.Hour).Format(time.RFC3339)
	c := r.issue(t, "honcho", "5001", map[string]any{"employment_type": "contractor", "valid_until": until})
	checkProblem(t, r.call(t, "POST", "/v1/operators/"+c+"/grants", r.admin(t),
		map[string]any{"role_id": "section_chief", "site_id": "honcho", "reason": "x"}), 409, "conflict")
	// Counter duties are fine, and never outlive the operator.
	g := r.grant(t, c, "counter_clerk", "honcho", nil)
	if g["valid_until"] != until {
		t.Errorf("a contractor's open-ended grant ends %v, want %s", g["valid_until"], until)
	}
	// valid_until must lie ahead.
	checkProblem(t, r.call(t, "POST", "/v1/operators", r.admin(t), map[string]any{"staff_number": "5002", "name": "x", "site_id": "honcho",
		"employment_type": "temporary", "valid_until": r.Clock.Now().Add(-time.Hour).Format(time.RFC3339)}), 400, "validation_failed")
}
