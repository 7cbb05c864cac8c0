package web

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// adminPages are the security administrator's and auditor's views.
func adminPages() []consolePage {
	return []consolePage{
		{"GET", "/admin/policy", "nav.policy", []string{"policy.manage"}, (*Web).policyPage},
		{"POST", "/admin/policy", "", nil, (*Web).policySave},
		{"GET", "/admin/roles", "nav.roles", []string{"role.manage", "grant.manage", "audit.read"}, (*Web).rolesPage},
		{"GET", "/admin/terminals", "nav.terminals", []string{"terminal.manage"}, (*Web).terminalsPage},
		{"POST", "/admin/terminals", "", nil, (*Web).terminalAdd},
		{"POST", "/admin/terminals/{id}/delete", "", nil, (*Web).terminalDelete},
		{"GET", "/admin/emergency", "nav.emergency", []string{"emergency.stop"}, (*Web).emergencyPage},
		{"POST", "/admin/emergency", "", nil, (*Web).emergencyAction},
		{"GET", "/admin/audit", "nav.audit", []string{"audit.read"}, (*Web).auditPage},
	}
}

type change struct {
	Field, Old, New string
}

type policyData struct {
	Document string
	Changes  []change
	Preview  bool
}

func (w *Web) policyPage(p *page) error {
	res := p.call("GET", "/v1/policy", nil)
	if !res.ok() {
		return res.err()
	}
	return p.show("policy", "policy.title", policyData{Document: pretty(res.Body)})
}

// policySave shows the change field by field first; only the confirmed
// document is PUT (issue 6: the change shown before saving).
func (w *Web) policySave(p *page) error {
	doc := p.r.PostFormValue("document")
	cur := p.call("GET", "/v1/policy", nil)
	if !cur.ok() {
		return cur.err()
	}
	if !json.Valid([]byte(doc)) {
		// Whether previewed or confirmed: a document that is not JSON is
		// the editor's mistake (400), not the server's.
		p.rw.WriteHeader(400)
		p.renderWith("policy", "policy.title", policyData{Document: doc}, "", p.T("policy.malformed"))
		return nil
	}
	if p.r.PostFormValue("confirm") != "yes" {
		var next any
		_ = json.Unmarshal([]byte(doc), &next)
		var old any
		_ = json.Unmarshal(cur.Body, &old)
		changes := diff("", old, next)
		return p.show("policy", "policy.title", policyData{Document: pretty([]byte(doc)), Changes: changes, Preview: true})
	}
	res := p.call("PUT", "/v1/policy", json.RawMessage(doc))
	if !res.ok() {
		p.rw.WriteHeader(res.Status)
		p.renderWith("policy", "policy.title", policyData{Document: doc}, "", p.message(res.err()))
		return nil
	}
	return p.redirect("/admin/policy?m=done")
}

func pretty(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") != nil {
		return string(b)
	}
	return buf.String()
}

// diff lists the leaves that differ between two JSON documents, by path;
// the version is the store's and left out.
func diff(path string, a, b any) []change {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		var names []string
		for k := range keys {
			if path == "" && k == "version" {
				continue
			}
			names = append(names, k)
		}
		sort.Strings(names)
		var out []change
		for _, k := range names {
			p := k
			if path != "" {
				p = path + "." + k
			}
			out = append(out, diff(p, am[k], bm[k])...)
		}
		return out
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if bytes.Equal(ja, jb) {
		return nil
	}
	show := func(v any, j []byte) string {
		if v == nil {
			return "—"
		}
		return string(j)
	}
	return []change{{Field: path, Old: show(a, ja), New: show(b, jb)}}
}

type permissionView struct {
	Permission  string `json:"permission"`
	Description string `json:"description"`
	HighRisk    bool   `json:"high_risk"`
}

type rolesData struct {
	Roles       []roleView
	Permissions []permissionView
	Matrix      [][]bool // Matrix[permission][role]
}

func (w *Web) rolesPage(p *page) error {
	var rs list[roleView]
	if err := p.get("/v1/roles?limit=1000", &rs); err != nil {
		return err
	}
	var ps list[permissionView]
	if err := p.get("/v1/permissions?limit=1000", &ps); err != nil {
		return err
	}
	d := rolesData{Roles: rs.Items, Permissions: ps.Items}
	for _, perm := range ps.Items {
		row := make([]bool, len(rs.Items))
		for i, r := range rs.Items {
			row[i] = slices.Contains(r.Permissions, perm.Permission)
		}
		d.Matrix = append(d.Matrix, row)
	}
	return p.show("roles", "roles.title", d)
}

type terminalView struct {
	TerminalID string `json:"terminal_id"`
	SiteID     string `json:"site_id"`
	Name       string `json:"name"`
}

func (w *Web) terminalsPage(p *page) error {
	var ts list[terminalView]
	if err := p.get("/v1/terminals?limit=1000", &ts); err != nil {
		return err
	}
	sites, err := p.sitesFor("terminal.manage")
	if err != nil {
		return err
	}
	return p.show("terminals", "terminals.title", map[string]any{"Terminals": ts.Items, "Sites": sites, "This": cookie(p.r, cookieTerminal)})
}

func (w *Web) terminalAdd(p *page) error {
	f := p.r.PostForm
	return p.act("POST", "/v1/terminals", map[string]string{"terminal_id": f.Get("terminal_id"), "site_id": f.Get("site_id"), "name": f.Get("name")}, "/admin/terminals")
}

func (w *Web) terminalDelete(p *page) error {
	return p.act("DELETE", "/v1/terminals/"+url.PathEscape(p.r.PathValue("id")), nil, "/admin/terminals")
}

type stopView struct {
	Scope     string  `json:"scope"`
	SiteID    *string `json:"site_id"`
	Reason    string  `json:"reason"`
	StoppedBy string  `json:"stopped_by"`
	StoppedAt string  `json:"stopped_at"`
}

func (w *Web) emergencyPage(p *page) error {
	var ss list[siteView]
	if err := p.get("/v1/sites?limit=1000", &ss); err != nil {
		return err
	}
	var stops list[stopView]
	if err := p.get("/v1/emergency", &stops); err != nil {
		return err
	}
	return p.show("emergency", "emergency.title", map[string]any{"Sites": ss.Items, "Stops": stops.Items})
}

func (w *Web) emergencyAction(p *page) error {
	f := p.r.PostForm
	action := "stop"
	if f.Get("action") == "resume" {
		action = "resume"
	}
	body := map[string]any{"scope": f.Get("scope"), "reason": f.Get("reason")}
	if f.Get("scope") == "site" {
		body["site_id"] = f.Get("site_id")
	}
	return p.act("POST", "/v1/emergency/"+action, body, "/admin/emergency")
}

type eventView struct {
	Seq        int64           `json:"seq"`
	At         *string         `json:"at"`
	Type       string          `json:"type"`
	ActorID    *string         `json:"actor_id"`
	OperatorID *string         `json:"operator_id"`
	SiteID     *string         `json:"site_id"`
	TerminalID *string         `json:"terminal_id"`
	Resource   string          `json:"resource"`
	Reason     string          `json:"reason"`
	Data       json.RawMessage `json:"data"`
}

type verifyView struct {
	OK          bool   `json:"ok"`
	Events      int64  `json:"events"`
	HeadHash    string `json:"head_hash"`
	FirstBadSeq *int64 `json:"first_bad_seq"`
}

type auditData struct {
	Filter map[string]string
	Events []eventView
	Next   string
	Verify verifyView
}

var auditFilters = []string{"operator_id", "actor_id", "type", "resource_id", "from", "to"}

func (w *Web) auditPage(p *page) error {
	q := p.r.URL.Query()
	d := auditData{Filter: map[string]string{}}
	v := url.Values{"limit": {"200"}}
	for _, k := range auditFilters {
		if x := q.Get(k); x != "" {
			d.Filter[k] = x
			if k == "from" || k == "to" {
				x, _ = p.date(x)
			}
			v.Set(k, x)
		}
	}
	if c := q.Get("cursor"); c != "" {
		v.Set("cursor", c)
	}
	var evs list[eventView]
	if err := p.get("/v1/audit/events?"+v.Encode(), &evs); err != nil {
		return err
	}
	d.Events = evs.Items
	if evs.NextCursor != nil {
		next := url.Values{"cursor": {*evs.NextCursor}}
		for k, x := range d.Filter {
			next.Set(k, x)
		}
		d.Next = "/admin/audit?" + next.Encode()
	}
	if err := p.get("/v1/audit/verify", &d.Verify); err != nil {
		return err
	}
	return p.show("audit", "audit.title", d)
}

// DataText shows an event's data compactly.
func (e eventView) DataText() string {
	if len(e.Data) == 0 || string(e.Data) == "{}" {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, e.Data) != nil {
		return ""
	}
	s := buf.String()
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}
