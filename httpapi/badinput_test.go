package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/internal/servertest"
)

// rig is a started server with helpers whose failures are reported on the
// test that calls them, so that subtests may share one server.
type rig struct {
	*servertest.Server
	adminTok   string
	adminSince time.Time
}

func startRig(t *testing.T, b servertest.Backend) *rig {
	t.Helper()
	s := servertest.Start(t, b)
	return &rig{Server: s, adminTok: s.Admin, adminSince: s.Clock.Now()}
}

// forEachBackend runs fn on a fresh server of every backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, r *rig)) {
	t.Helper()
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, startRig(t, b))
		})
	}
}

// call sends a request; body is nil, a string or []byte (sent as is), or a
// value sent as JSON.
func (r *rig) call(t testing.TB, method, path, token string, body any) servertest.Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, r.HTTP.URL+path, rd)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.HTTP.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: out}
}

// must sends a request and fails the test unless the status is want.
func (r *rig) must(t testing.TB, want int, method, path, token string, body any) servertest.Response {
	t.Helper()
	resp := r.call(t, method, path, token, body)
	if resp.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.Status, want, resp.Body)
	}
	return resp
}

// token starts a session for op, as a login would.
func (r *rig) token(t testing.TB, op string, site opgate.SiteID, terminal opgate.TerminalID) string {
	t.Helper()
	iss, err := r.App.Sessions.Start(context.Background(), authn.Start{OperatorID: opgate.OperatorID(op), SiteID: site,
		TerminalID: terminal, AMR: []string{"hwk", "user"}})
	if err != nil {
		t.Fatalf("start session: %v", err)
	}
	return iss.AccessToken
}

// admin is a token of the bootstrap administrator that is live at the fake
// clock's current time (access tokens last minutes; tests move the clock
// by days).
func (r *rig) admin(t testing.TB) string {
	t.Helper()
	now := r.Clock.Now()
	if now.Before(r.adminSince) || now.Sub(r.adminSince) > time.Minute {
		r.adminTok, r.adminSince = r.token(t, string(r.Boot.OperatorID), "honcho", "admin-console"), now
	}
	return r.adminTok
}

func (r *rig) adminID() string { return string(r.Boot.OperatorID) }

func (r *rig) site(t testing.TB, id string) {
	t.Helper()
	r.must(t, 201, "POST", "/v1/sites", r.admin(t), map[string]any{"site_id": id, "name": "支所 " + id, "municipality_code": "132152"})
}

// issue issues a regular operator (extra overrides or adds fields) and
// returns its ID.
func (r *rig) issue(t testing.TB, site, staff string, extra map[string]any) string {
	t.Helper()
	body := map[string]any{"staff_number": staff, "name": "職員 " + staff, "site_id": site, "employment_type": "regular"}
	for k, v := range extra {
		body[k] = v
	}
	m := r.must(t, 201, "POST", "/v1/operators", r.admin(t), body).Map(t)
	return m["operator_id"].(string)
}

// grant gives op a role at site as the administrator and returns the grant.
func (r *rig) grant(t testing.TB, op, role, site string, extra map[string]any) map[string]any {
	t.Helper()
	body := map[string]any{"role_id": role, "site_id": site, "reason": "配属"}
	for k, v := range extra {
		body[k] = v
	}
	return r.must(t, 201, "POST", "/v1/operators/"+op+"/grants", r.admin(t), body).Map(t)
}

// history lists the types of an operator's events, oldest first.
func (r *rig) history(t testing.TB, op string) []map[string]any {
	t.Helper()
	m := r.must(t, 200, "GET", "/v1/operators/"+op+"/history?limit=1000", r.admin(t), nil).Map(t)
	var out []map[string]any
	for _, e := range m["items"].([]any) {
		out = append(out, e.(map[string]any))
	}
	return out
}

func typesOf(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e["type"].(string))
	}
	return out
}

// problemDoc is an RFC 9457 answer with the contract's fields.
type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

func (p problemDoc) fields() []string {
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

// checkProblem holds an answer to the problem format: the status, the
// media type, the members every problem carries and the contract's code
// (unless code is empty).
func checkProblem(t testing.TB, resp servertest.Response, status int, code string) problemDoc {
	t.Helper()
	if resp.Status != status {
		t.Fatalf("status %d, want %d: %s", resp.Status, status, resp.Body)
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", resp.Header.Get("Content-Type"))
	}
	var raw map[string]any
	if err := json.Unmarshal(resp.Body, &raw); err != nil {
		t.Fatalf("problem is not a JSON object: %v: %s", err, resp.Body)
	}
	for _, k := range []string{"type", "title", "status", "code"} {
		if v, ok := raw[k]; !ok || v == "" {
			t.Errorf("problem lacks %q: %s", k, resp.Body)
		}
	}
	var p problemDoc
	if err := json.Unmarshal(resp.Body, &p); err != nil {
		t.Fatalf("problem: %v: %s", err, resp.Body)
	}
	if p.Status != status {
		t.Errorf("problem status %d, want %d", p.Status, status)
	}
	if code != "" && p.Code != code {
		t.Errorf("code %q, want %q: %s", p.Code, code, resp.Body)
	}
	return p
}

// echo is put in request bodies; no answer may carry it back.
const echo = "ZZECHO"

// badFixture is what the bad-input tables point at.
type badFixture struct {
	op, clerkOp, chiefOp string // an active operator at honcho, a clerk at honcho, a chief of kita
	grantID              string // X's active counter_clerk grant
	changeID             string // X's pending retirement
	clerk, chief         string // tokens
}

func setupBadFixture(t *testing.T, r *rig) badFixture {
	t.Helper()
	var f badFixture
	r.site(t, "kita")
	r.must(t, 201, "POST", "/v1/terminals", r.admin(t), map[string]any{"terminal_id": "honcho-01", "site_id": "honcho", "name": "窓口1"})
	r.must(t, 201, "POST", "/v1/terminals", r.admin(t), map[string]any{"terminal_id": "kita-01", "site_id": "kita", "name": "窓口1"})
	f.op = r.issue(t, "honcho", "1001", nil)
	f.grantID = r.grant(t, f.op, "counter_clerk", "honcho", nil)["grant_id"].(string)
	f.clerkOp = r.issue(t, "honcho", "1002", nil)
	r.grant(t, f.clerkOp, "counter_clerk", "honcho", nil)
	f.chiefOp = r.issue(t, "kita", "1003", nil)
	r.grant(t, f.chiefOp, "section_chief", "kita", nil)
	f.clerk = r.token(t, f.clerkOp, "honcho", "honcho-01")
	f.chief = r.token(t, f.chiefOp, "kita", "kita-01")
	ch := r.must(t, 202, "POST", "/v1/operators/"+f.op+"/retire", r.admin(t),
		map[string]any{"reason": "定年", "effective_at": r.Clock.Now().Add(30 * 24 * time.Hour).Format(time.RFC3339)}).Map(t)
	f.changeID = ch["change_id"].(string)
	return f
}

// TestBadInput holds every route that reads a body or names a resource to
// the contract's answers for broken, unknown and refused requests.
func TestBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		f := setupBadFixture(t, r)
		t.Run("bodies", func(t *testing.T) { testBadInput(t, r, f) })
		t.Run("unknown IDs", func(t *testing.T) { testUnknownIDs(t, r, f) })
		t.Run("permission before content", func(t *testing.T) { testPermissionBeforeContent(t, r, f) })
		t.Run("wrong state", func(t *testing.T) { testWrongState(t, r, f) })
		t.Run("every body route", func(t *testing.T) { testEveryBodyRoute(t, r) })
	})
}

// testEveryBodyRoute sends broken bodies to every registered route that
// may read one, including routes the tables above do not know: whatever
// the route, the answer is a 4xx problem that does not echo the body.
func testEveryBodyRoute(t *testing.T, r *rig) {
	bodies := map[string]string{
		"malformed":     `{"reason": "` + echo,
		"trailing data": `{} {"reason": "` + echo + `"}`,
		"unknown field": `{"zz_unknown": "` + echo + `"}`,
		"over 1 MiB":    oversized(),
	}
	ids := strings.NewReplacer("{id}", "OP-ZZZZZZZZ", "{card_id}", "C-ZZZZZZZZ", "{item_id}", "I-ZZZZZZZZ")
	for _, rt := range r.App.API.Routes() {
		if rt.Method != "POST" && rt.Method != "PUT" || rt.Path == "/v1/logout" { // logout reads no body
			continue
		}
		for name, body := range bodies {
			t.Run(rt.Method+" "+rt.Path+"/"+name, func(t *testing.T) {
				resp := r.call(t, rt.Method, ids.Replace(rt.Path), r.admin(t), body)
				if resp.Status < 400 || resp.Status > 499 {
					t.Fatalf("status %d: %s", resp.Status, resp.Body)
				}
				checkProblem(t, resp, resp.Status, "")
				if name == "over 1 MiB" && resp.Status != 413 && resp.Status != 401 && resp.Status != 403 {
					t.Errorf("an oversized body answers %d, want 413", resp.Status)
				}
				if bytes.Contains(resp.Body, []byte(echo)) {
					t.Errorf("the answer echoes the body: %s", resp.Body)
				}
			})
		}
	}
	// None of it ended the caller's session.
	r.must(t, 200, "GET", "/v1/me", r.admin(t), nil)
}

// bodyRoute is a route that reads a JSON body.
type bodyRoute struct {
	method, path string
	valid        map[string]any // a body that decodes
	wrongType    string         // a field given a value of the wrong JSON type
	wrongValue   any
	required     string // a field that may not be left out ("" when none is)
	timeField    string // an RFC 3339 field, if the route has one
	optional     bool   // an empty body is allowed
	unknownPath  string // the same route on an ID that does not exist ("" for collections)
}

func bodyRoutes(f badFixture) []bodyRoute {
	op := "/v1/operators/" + f.op
	const noOp = "/v1/operators/OP-ZZZZZZZZ"
	return []bodyRoute{
		{method: "PUT", path: "/v1/policy", valid: map[string]any{"lockout": map[string]any{"threshold": 5}},
			wrongType: "lockout.threshold", wrongValue: []any{echo}},
		{method: "POST", path: "/v1/sites", valid: map[string]any{"site_id": "minami", "name": "南支所", "municipality_code": "132152"},
			wrongType: "name", wrongValue: []any{echo}, required: "name"},
		{method: "POST", path: "/v1/terminals", valid: map[string]any{"terminal_id": "honcho-99", "site_id": "honcho", "name": "窓口99"},
			wrongType: "site_id", wrongValue: map[string]any{echo: 1}, required: "name"},
		{method: "POST", path: "/v1/roles", valid: map[string]any{"role_id": "viewer2", "name": "照会2", "permissions": []string{"resident.read"}},
			wrongType: "permissions", wrongValue: echo, required: "permissions"},
		{method: "PUT", path: "/v1/roles/counter_viewer", valid: map[string]any{"name": "照会", "permissions": []string{"resident.read"}},
			wrongType: "conflicts_with", wrongValue: echo, required: "name", unknownPath: "/v1/roles/no-such-role"},
		{method: "POST", path: "/v1/operators", valid: map[string]any{"staff_number": "3001", "name": "新人", "site_id": "honcho", "employment_type": "regular"},
			wrongType: "staff_number", wrongValue: 3001, required: "employment_type", timeField: "valid_until"},
		{method: "POST", path: op + "/transfer", valid: map[string]any{"to_site_id": "kita", "reason": "異動"},
			wrongType: "to_site_id", wrongValue: []any{echo}, required: "to_site_id", timeField: "effective_at", unknownPath: noOp + "/transfer"},
		{method: "POST", path: op + "/retire", valid: map[string]any{"reason": "退職"},
			wrongType: "reason", wrongValue: 1, required: "reason", timeField: "effective_at", unknownPath: noOp + "/retire"},
		{method: "POST", path: op + "/suspend", valid: map[string]any{"reason": "休職"},
			wrongType: "reason", wrongValue: true, required: "reason", unknownPath: noOp + "/suspend"},
		{method: "POST", path: op + "/reinstate", valid: map[string]any{"reason": "復職"},
			wrongType: "reason", wrongValue: []any{echo}, required: "reason", unknownPath: noOp + "/reinstate"},
		{method: "POST", path: op + "/unlock", valid: map[string]any{"reason": "本人確認済"},
			wrongType: "reason", wrongValue: 12, required: "reason", unknownPath: noOp + "/unlock"},
		{method: "DELETE", path: "/v1/scheduled-changes/" + f.changeID, valid: map[string]any{"reason": "取消"},
			wrongType: "reason", wrongValue: 1, optional: true, unknownPath: "/v1/scheduled-changes/CH-ZZZZZZZZZZZZ"},
		{method: "POST", path: op + "/grants", valid: map[string]any{"role_id": "counter_viewer", "site_id": "honcho", "reason": "応援"},
			wrongType: "role_id", wrongValue: map[string]any{echo: true}, required: "role_id", timeField: "valid_until", unknownPath: noOp + "/grants"},
		{method: "POST", path: "/v1/grants/" + f.grantID + "/approve", valid: map[string]any{"reason": "承認"},
			wrongType: "reason", wrongValue: 1, optional: true, unknownPath: "/v1/grants/G-ZZZZZZZZZZZZZZZZ/approve"},
		{method: "POST", path: "/v1/grants/" + f.grantID + "/revoke", valid: map[string]any{"reason": "取消"},
			wrongType: "reason", wrongValue: false, required: "reason", unknownPath: "/v1/grants/G-ZZZZZZZZZZZZZZZZ/revoke"},
	}
}

// pathRoutes are the routes that name a resource in the path without a
// body; %s is the ID.
var pathRoutes = []struct{ method, path string }{
	{"DELETE", "/v1/terminals/%s"},
	{"GET", "/v1/operators/%s"},
	{"GET", "/v1/operators/%s/history"},
	{"GET", "/v1/operators/%s/permissions"},
}

func with(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func without(m map[string]any, k string) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		if kk != k {
			out[kk] = vv
		}
	}
	return out
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oversized is a well-formed body just over the 1 MiB limit.
func oversized() string {
	return `{"reason":"` + strings.Repeat(echo, (1<<20)/len(echo)+256) + `"}`
}

// testBadInput sends every route that reads a body each kind of broken
// body, and expects a validation problem that names the field, never an
// internal error, and never the body echoed back.
func testBadInput(t *testing.T, r *rig, f badFixture) {
	for _, rt := range bodyRoutes(f) {
		valid := mustJSON(t, rt.valid)
		type badCase struct {
			name      string
			body      string
			status    int
			code      string
			wantField string
		}
		cases := []badCase{
			{name: "malformed", body: `{"reason": "` + echo, status: 400, code: "validation_failed"},
			{name: "not an object", body: `"` + echo + `"`, status: 400, code: "validation_failed"},
			{name: "unknown field", body: mustJSON(t, with(rt.valid, "zz_unknown", echo)), status: 400, code: "validation_failed", wantField: "zz_unknown"},
			{name: "wrong type", body: mustJSON(t, with(rt.valid, lastSegment(rt.wrongType), rt.wrongValue)), status: 400, code: "validation_failed", wantField: rt.wrongType},
			{name: "over 1 MiB", body: oversized(), status: 413},
			{name: "trailing data", body: valid + ` {"reason":"` + echo + `"}`, status: 400, code: "validation_failed"},
			{name: "trailing garbage", body: valid + `}` + echo, status: 400, code: "validation_failed"},
		}
		if rt.wrongType == "lockout.threshold" {
			cases[3].body = `{"lockout": {"threshold": ["` + echo + `"]}}`
		}
		// A key only a case-insensitive reader would take, or one given
		// twice (the last would win): two readers of the body could see
		// different requests.
		keys := slices.Sorted(maps.Keys(rt.valid))
		key := keys[0]
		dup := `{"` + key + `": ` + mustJSON(t, rt.valid[key]) + `, ` + valid[1:]
		cases = append(cases,
			badCase{name: "key in another case", body: mustJSON(t, with(without(rt.valid, key), strings.ToUpper(key), rt.valid[key])),
				status: 400, code: "validation_failed", wantField: strings.ToUpper(key)},
			badCase{name: "key given twice", body: dup, status: 400, code: "validation_failed", wantField: key})
		if rt.required != "" {
			cases = append(cases, badCase{name: "missing " + rt.required, body: mustJSON(t, without(rt.valid, rt.required)),
				status: 400, code: "validation_failed", wantField: rt.required})
		}
		if rt.timeField != "" {
			cases = append(cases, badCase{name: "bad time", body: mustJSON(t, with(rt.valid, rt.timeField, echo+"-2027-13-45")),
				status: 400, code: "validation_failed", wantField: rt.timeField})
		}
		if !rt.optional {
			cases = append(cases, badCase{name: "empty body", body: "", status: 400, code: "validation_failed"},
				badCase{name: "whitespace body", body: " \n\t", status: 400, code: "validation_failed"},
				badCase{name: "null body", body: "null", status: 400, code: "validation_failed"})
		}
		for _, c := range cases {
			t.Run(rt.method+" "+rt.path+"/"+c.name, func(t *testing.T) {
				resp := r.call(t, rt.method, rt.path, r.admin(t), c.body)
				p := checkProblem(t, resp, c.status, c.code)
				if c.status == 400 && len(p.Errors) == 0 {
					t.Errorf("validation problem without errors[]: %s", resp.Body)
				}
				if c.wantField != "" && !slices.Contains(p.fields(), c.wantField) {
					t.Errorf("errors name %q, want %q: %s", p.fields(), c.wantField, resp.Body)
				}
				if bytes.Contains(resp.Body, []byte(echo)) {
					t.Errorf("the answer echoes the body: %s", resp.Body)
				}
			})
		}
		if rt.optional {
			// An action whose fields are all optional takes an empty
			// body; on an unknown ID that gets as far as "not found".
			t.Run(rt.method+" "+rt.path+"/empty body allowed", func(t *testing.T) {
				checkProblem(t, r.call(t, rt.method, rt.unknownPath, r.admin(t), nil), 404, "not_found")
			})
		}
	}
	t.Run("long unknown field name", func(t *testing.T) {
		body := `{"` + strings.Repeat("k", 64<<10) + `": 1, "reason": "x"}`
		resp := r.call(t, "POST", "/v1/operators/"+f.op+"/suspend", r.admin(t), body)
		checkProblem(t, resp, 400, "validation_failed")
		if len(resp.Body) > 4096 {
			t.Errorf("a 64 KiB field name comes back in a %d-byte answer", len(resp.Body))
		}
	})
	t.Run("NUL in a string", func(t *testing.T) {
		resp := r.call(t, "POST", "/v1/operators", r.admin(t),
			`{"staff_number": "30\u000002", "name": "新人", "site_id": "honcho", "employment_type": "regular"}`)
		checkProblem(t, resp, 400, "validation_failed")
	})
}

func lastSegment(field string) string {
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		return field[i+1:]
	}
	return field
}

// testUnknownIDs sends every route that names a resource an ID that does
// not exist, as the administrator who may act at every site: 404.
func testUnknownIDs(t *testing.T, r *rig, f badFixture) {
	for _, rt := range bodyRoutes(f) {
		if rt.unknownPath == "" {
			continue
		}
		t.Run(rt.method+" "+rt.unknownPath, func(t *testing.T) {
			checkProblem(t, r.call(t, rt.method, rt.unknownPath, r.admin(t), rt.valid), 404, "not_found")
		})
	}
	ids := map[string]string{
		"unknown":      "OP-ZZZZZZZZ",
		"invalid utf8": "%FF%FE",
		"NUL":          "OP-%00ZZ",
		"slash":        "a%2Fb",
		"long":         strings.Repeat("x", 3000),
	}
	for _, rt := range pathRoutes {
		for name, id := range ids {
			path := strings.Replace(rt.path, "%s", id, 1)
			t.Run(rt.method+" "+rt.path+"/"+name, func(t *testing.T) {
				checkProblem(t, r.call(t, rt.method, path, r.admin(t), nil), 404, "not_found")
			})
		}
	}
	for name, id := range ids {
		t.Run("suspend/"+name, func(t *testing.T) {
			checkProblem(t, r.call(t, "POST", "/v1/operators/"+id+"/suspend", r.admin(t), map[string]any{"reason": "休職"}), 404, "not_found")
		})
	}
}

// testWrongState refuses actions the target's state does not allow with
// 409 conflict.
func testWrongState(t *testing.T, r *rig, f badFixture) {
	retired := r.issue(t, "honcho", "4001", nil)
	oldGrant := r.grant(t, retired, "counter_viewer", "honcho", nil)["grant_id"].(string)
	r.must(t, 200, "POST", "/v1/operators/"+retired+"/retire", r.admin(t), map[string]any{"reason": "退職"})
	// A chief of honcho, another person than the administrator who
	// made X's grant, may approve at honcho.
	hchief := r.issue(t, "honcho", "4002", nil)
	r.grant(t, hchief, "section_chief", "honcho", nil)
	hchiefTok := r.token(t, hchief, "honcho", "honcho-01")
	cancelled := r.must(t, 202, "POST", "/v1/operators/"+f.clerkOp+"/transfer", r.admin(t),
		map[string]any{"to_site_id": "kita", "reason": "異動", "effective_at": r.Clock.Now().Add(48 * time.Hour).Format(time.RFC3339)}).Map(t)["change_id"].(string)
	r.must(t, 204, "DELETE", "/v1/scheduled-changes/"+cancelled, r.admin(t), nil)

	cases := []struct {
		name, method, path, token string
		body                      any
		code                      string
	}{
		{"reinstate an active operator", "POST", "/v1/operators/" + f.op + "/reinstate", "", map[string]any{"reason": "復職"}, "conflict"},
		{"transfer a retired operator", "POST", "/v1/operators/" + retired + "/transfer", "", map[string]any{"to_site_id": "kita", "reason": "異動"}, "conflict"},
		{"transfer a retired operator ahead", "POST", "/v1/operators/" + retired + "/transfer", "",
			map[string]any{"to_site_id": "kita", "reason": "異動", "effective_at": r.Clock.Now().Add(time.Hour).Format(time.RFC3339)}, "conflict"},
		{"retire a retired operator", "POST", "/v1/operators/" + retired + "/retire", "", map[string]any{"reason": "退職"}, "conflict"},
		{"suspend a retired operator", "POST", "/v1/operators/" + retired + "/suspend", "", map[string]any{"reason": "休職"}, "conflict"},
		{"reinstate a retired operator", "POST", "/v1/operators/" + retired + "/reinstate", "", map[string]any{"reason": "復職"}, "conflict"},
		{"grant to a retired operator", "POST", "/v1/operators/" + retired + "/grants", "", map[string]any{"role_id": "counter_viewer", "site_id": "honcho", "reason": "x"}, "conflict"},
		{"transfer to the same site", "POST", "/v1/operators/" + f.op + "/transfer", "", map[string]any{"to_site_id": "honcho", "reason": "異動"}, "conflict"},
		{"approve an active grant", "POST", "/v1/grants/" + f.grantID + "/approve", hchiefTok, map[string]any{"reason": "承認"}, "conflict"},
		{"revoke a revoked grant", "POST", "/v1/grants/" + oldGrant + "/revoke", "", map[string]any{"reason": "取消"}, "conflict"},
		{"cancel a cancelled change", "DELETE", "/v1/scheduled-changes/" + cancelled, "", nil, "conflict"},
		{"duplicate site", "POST", "/v1/sites", "", map[string]any{"site_id": "kita", "name": "北", "municipality_code": "132152"}, "conflict"},
		{"duplicate terminal", "POST", "/v1/terminals", "", map[string]any{"terminal_id": "honcho-01", "site_id": "honcho", "name": "x"}, "conflict"},
		{"duplicate role", "POST", "/v1/roles", "", map[string]any{"role_id": "counter_clerk", "name": "x", "permissions": []string{"resident.read"}}, "conflict"},
		{"duplicate staff number", "POST", "/v1/operators", "", map[string]any{"staff_number": "1001", "name": "x", "site_id": "honcho", "employment_type": "regular"}, "conflict"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.token
			if tok == "" {
				tok = r.admin(t)
			}
			checkProblem(t, r.call(t, c.method, c.path, tok, c.body), 409, c.code)
		})
	}
}

// testPermissionBeforeContent: a caller without the route's permission
// gets 403 whatever the body, and the same answer for a target that exists
// and one that does not.
func testPermissionBeforeContent(t *testing.T, r *rig, f badFixture) {
	bodies := map[string]string{"malformed": `{"reason": "` + echo, "unknown field": `{"zz": 1}`, "empty": "", "over 1 MiB": oversized()}
	for _, rt := range bodyRoutes(f) {
		for name, body := range bodies {
			t.Run("clerk/"+rt.method+" "+rt.path+"/"+name, func(t *testing.T) {
				resp := r.call(t, rt.method, rt.path, f.clerk, body)
				checkProblem(t, resp, 403, "forbidden")
				if bytes.Contains(resp.Body, []byte(echo)) {
					t.Errorf("the answer echoes the body: %s", resp.Body)
				}
			})
		}
	}

	// The same question about an existing and a missing target must
	// get the same answer, but for the request ID.
	same := func(t *testing.T, a, b servertest.Response) {
		t.Helper()
		norm := func(r servertest.Response) map[string]any {
			var m map[string]any
			_ = json.Unmarshal(r.Body, &m)
			delete(m, "request_id")
			m["http_status"] = r.Status
			return m
		}
		if d := cmp.Diff(norm(a), norm(b)); d != "" {
			t.Errorf("existing and missing targets are told apart (-existing +missing):\n%s", d)
		}
	}
	honchoOp := f.op
	type probe struct {
		name         string
		method, path string // %s is the ID
		body         any
		exists, none string
	}
	probes := []probe{
		{"get operator", "GET", "/v1/operators/%s", nil, honchoOp, "OP-ZZZZZZZZ"},
		{"history", "GET", "/v1/operators/%s/history", nil, honchoOp, "OP-ZZZZZZZZ"},
		{"permissions", "GET", "/v1/operators/%s/permissions", nil, honchoOp, "OP-ZZZZZZZZ"},
		{"suspend", "POST", "/v1/operators/%s/suspend", map[string]any{"reason": "休職"}, honchoOp, "OP-ZZZZZZZZ"},
		{"reinstate", "POST", "/v1/operators/%s/reinstate", map[string]any{"reason": "復職"}, honchoOp, "OP-ZZZZZZZZ"},
		{"retire", "POST", "/v1/operators/%s/retire", map[string]any{"reason": "退職"}, honchoOp, "OP-ZZZZZZZZ"},
		{"unlock", "POST", "/v1/operators/%s/unlock", map[string]any{"reason": "解除"}, honchoOp, "OP-ZZZZZZZZ"},
		{"transfer within honcho", "POST", "/v1/operators/%s/transfer", map[string]any{"to_site_id": "honcho", "reason": "異動"}, honchoOp, "OP-ZZZZZZZZ"},
		{"grant at honcho", "POST", "/v1/operators/%s/grants", map[string]any{"role_id": "counter_viewer", "site_id": "honcho", "reason": "x"}, honchoOp, "OP-ZZZZZZZZ"},
		{"grant at kita", "POST", "/v1/operators/%s/grants", map[string]any{"role_id": "counter_viewer", "site_id": "kita", "reason": "x"}, honchoOp, "OP-ZZZZZZZZ"},
		{"approve", "POST", "/v1/grants/%s/approve", map[string]any{"reason": "x"}, f.grantID, "G-ZZZZZZZZZZZZZZZZ"},
		{"revoke", "POST", "/v1/grants/%s/revoke", map[string]any{"reason": "x"}, f.grantID, "G-ZZZZZZZZZZZZZZZZ"},
		{"cancel change", "DELETE", "/v1/scheduled-changes/%s", nil, f.changeID, "CH-ZZZZZZZZZZZZ"},
		{"delete terminal", "DELETE", "/v1/terminals/%s", nil, "honcho-01", "no-such-terminal"},
	}
	for who, tok := range map[string]string{"clerk": f.clerk, "chief of kita": f.chief} {
		for _, p := range probes {
			t.Run(who+"/"+p.name, func(t *testing.T) {
				a := r.call(t, p.method, strings.Replace(p.path, "%s", p.exists, 1), tok, p.body)
				b := r.call(t, p.method, strings.Replace(p.path, "%s", p.none, 1), tok, p.body)
				checkProblem(t, a, 403, "forbidden")
				checkProblem(t, b, 403, "forbidden")
				same(t, a, b)
			})
		}
	}
	// Nothing above changed the targets.
	got := r.must(t, 200, "GET", "/v1/operators/"+honchoOp, r.admin(t), nil).Map(t)
	if got["status"] != "active" || got["site_id"] != "honcho" {
		t.Errorf("operator changed by refused calls: %v", got)
	}
}

// TestAuthenticationAndRouting: every route but the public ones wants a
// live bearer token and says nothing about why one was refused; unknown
// methods and paths answer in the problem format too.
func TestAuthenticationAndRouting(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		// The routes API.md lets a caller use without a session.
		public := map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/openapi.json": true, "/.well-known/jwks.json": true,
			"/v1/login/card/begin": true, "/v1/login/card/finish": true, "/v1/login/password": true, "/v1/session/refresh": true,
			"/v1/enroll/begin": true, "/v1/enroll/finish": true, "/v1/introspect": true}
		admin := r.admin(t)
		ended := r.token(t, r.adminID(), "honcho", "admin-console")
		r.must(t, 204, "POST", "/v1/logout", ended, nil)
		expired := r.token(t, r.adminID(), "honcho", "admin-console")
		// The admin's claims under another token's signature.
		other := r.token(t, r.adminID(), "honcho", "admin-console")
		forged := admin[:strings.LastIndexByte(admin, '.')] + other[strings.LastIndexByte(other, '.'):]
		r.Clock.Advance(6 * time.Minute) // past the access token's 5 minutes
		tokens := map[string]string{
			"no token":         "",
			"garbage":          "garbage",
			"three dots":       "a.b.c",
			"expired":          expired,
			"logged out":       ended,
			"forged signature": forged,
			"admin, truncated": admin[:len(admin)-4],
		}
		// Every route is tried without a token and with garbage; a few
		// with every kind of bad token.
		everyKind := map[string]bool{"/v1/me": true, "/v1/operators/{id}/suspend": true, "/v1/policy": true}
		for _, rt := range r.App.API.Routes() {
			if public[rt.Path] {
				continue
			}
			path := strings.NewReplacer("{id}", "x", "{card_id}", "x", "{item_id}", "x").Replace(rt.Path)
			for name, tok := range tokens {
				if !everyKind[rt.Path] && name != "no token" && name != "garbage" {
					continue
				}
				t.Run(rt.Method+" "+rt.Path+"/"+name, func(t *testing.T) {
					resp := r.call(t, rt.Method, path, tok, `{"reason": "`+echo)
					p := checkProblem(t, resp, 401, "unauthenticated")
					if p.Detail != "" || len(p.Errors) != 0 {
						t.Errorf("a refused token is explained: %s", resp.Body)
					}
				})
			}
		}
		t.Run("scheme", func(t *testing.T) {
			tok := r.admin(t)
			for _, h := range []string{"Basic " + tok, "Bearer", "Bearer ", tok, "Token " + tok} {
				req, _ := http.NewRequest("GET", r.HTTP.URL+"/v1/me", nil)
				req.Header.Set("Authorization", h)
				resp, err := r.HTTP.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				checkProblem(t, servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, 401, "unauthenticated")
			}
			// The scheme is case-insensitive (RFC 9110, 11.1).
			req, _ := http.NewRequest("GET", r.HTTP.URL+"/v1/me", nil)
			req.Header.Set("Authorization", "bearer "+tok)
			resp, err := r.HTTP.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("lower-case scheme: status %d", resp.StatusCode)
			}
		})
		for _, c := range []struct{ method, path, allow string }{
			{"DELETE", "/v1/sites", "GET, POST"},
			{"PATCH", "/v1/operators/OP-ZZZZZZZZ", "GET"},
			{"GET", "/v1/logout", "POST"},
			{"POST", "/v1/permissions", "GET"},
			{"PUT", "/v1/grants/x/approve", "POST"},
			{"POST", "/healthz", "GET"},
			{"PATCH", "/v1/policy", "GET, PUT"},
		} {
			t.Run("405 "+c.method+" "+c.path, func(t *testing.T) {
				resp := r.call(t, c.method, c.path, r.admin(t), nil)
				checkProblem(t, resp, 405, "")
				// RFC 9110 §15.5.6: a 405 names the methods that would do.
				got := strings.Split(resp.Header.Get("Allow"), ", ")
				sort.Strings(got)
				if strings.Join(got, ", ") != c.allow {
					t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), c.allow)
				}
			})
		}
		// Cursors and filters that name nothing are refused, not read as
		// the first page or an empty one.
		op := r.issue(t, "honcho", "7301", nil)
		for _, path := range []string{
			"/v1/operators?limit=1&cursor=AA", // a NUL byte
			"/v1/operators?limit=1&cursor=_w", // not UTF-8
			"/v1/grants?cursor=AA",
			"/v1/scheduled-changes?cursor=AA",
			"/v1/reviews?cursor=AA",
			"/v1/operators/" + op + "/history?limit=1&cursor=Z2FyYmFnZQ", // "garbage"
			"/v1/scheduled-changes?status=garbage",
		} {
			t.Run("400 "+path, func(t *testing.T) {
				checkProblem(t, r.call(t, "GET", path, r.admin(t), nil), 400, "validation_failed")
			})
		}
		for _, path := range []string{"/v1/nope", "/v2/sites", "/v1/operators/OP-ZZZZZZZZ/nope", "/", "/v1/grants/x"} {
			for name, tok := range map[string]string{"admin": r.admin(t), "no token": ""} {
				t.Run("404 "+path+"/"+name, func(t *testing.T) {
					checkProblem(t, r.call(t, "GET", path, tok, nil), 404, "not_found")
				})
			}
		}
	})
}
