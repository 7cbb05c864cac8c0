package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// consolePage is one page of the console. Each page is one row here: its
// route, the catalog key of its navigation label (empty: not in the
// navigation) and the permissions that show it. The API decides every
// action whatever the navigation shows.
type consolePage struct {
	method, path string
	nav          string
	perms        []string
	fn           func(*Web, *page) error
}

func (cp consolePage) handle(w *Web) func(*page) error {
	return func(p *page) error { return cp.fn(w, p) }
}

// consolePages lists the console; admin.go and reports.go add their
// pages the same way. (A function, since the pages render the navigation
// built from this very list.)
func consolePages() []consolePage {
	return slices.Concat([]consolePage{
		{"GET", "/console", "nav.home", nil, (*Web).home},
		{"GET", "/console/operators", "nav.operators", []string{"operator.manage"}, (*Web).operators},
		{"POST", "/console/operators", "", nil, (*Web).issueOperator},
		{"GET", "/console/operators/{id}", "", nil, (*Web).operator},
		{"POST", "/console/operators/{id}/{action}", "", nil, (*Web).operatorAction},
		{"POST", "/console/operators/{id}/cards/{card}/{action}", "", nil, (*Web).cardAction},
		{"GET", "/console/approvals", "nav.approvals", []string{"grant.manage", "grant.approve"}, (*Web).approvals},
		{"POST", "/console/grants/{id}/{action}", "", nil, (*Web).grantAction},
	}, reportPages(), adminPages())
}

// operatorView is the API's operator.
type operatorView struct {
	OperatorID        string      `json:"operator_id"`
	StaffNumber       string      `json:"staff_number"`
	Name              string      `json:"name"`
	SiteID            string      `json:"site_id"`
	EmploymentType    string      `json:"employment_type"`
	Status            string      `json:"status"`
	ValidUntil        *string     `json:"valid_until"`
	LockedUntil       *string     `json:"locked_until"`
	LockPermanent     bool        `json:"lock_permanent"`
	PasswordExpiresAt *string     `json:"password_expires_at"`
	LastLoginAt       *string     `json:"last_login_at"`
	Cards             []cardView  `json:"cards"`
	Grants            []grantView `json:"grants"`
}

type cardView struct {
	CardID     string  `json:"card_id"`
	CardSerial string  `json:"card_serial"`
	Label      string  `json:"label"`
	Status     string  `json:"status"`
	EnrolledAt *string `json:"enrolled_at"`
}

type grantView struct {
	GrantID    string  `json:"grant_id"`
	OperatorID string  `json:"operator_id"`
	RoleID     string  `json:"role_id"`
	SiteID     string  `json:"site_id"`
	Status     string  `json:"status"`
	GrantedBy  string  `json:"granted_by"`
	ApprovedBy *string `json:"approved_by"`
	Reason     string  `json:"reason"`
	ValidFrom  *string `json:"valid_from"`
	ValidUntil *string `json:"valid_until"`
}

type siteView struct {
	SiteID string `json:"site_id"`
	Name   string `json:"name"`
}

type roleView struct {
	RoleID        string   `json:"role_id"`
	Name          string   `json:"name"`
	Permissions   []string `json:"permissions"`
	ConflictsWith []string `json:"conflicts_with"`
	HighRisk      bool     `json:"high_risk"`
}

// list is the API's list answer.
type list[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// get reads one API resource into v.
func (p *page) get(path string, v any) error {
	res := p.call("GET", path, nil)
	if !res.ok() {
		return res.err()
	}
	return res.decode(v)
}

// act performs a change and redirects to back, or shows the refusal on
// the page back names.
func (p *page) act(method, path string, body any, back string) error {
	res := p.call(method, path, body)
	if !res.ok() {
		return p.again(back, res.err())
	}
	m := "done"
	if res.Status == http.StatusAccepted {
		m = "scheduled"
	}
	return p.redirect(withQuery(back, "m", m))
}

// again shows the page at back with the refusal's message, so that the
// person sees what was refused beside what they were doing.
func (p *page) again(back string, err error) error {
	msg := p.message(err)
	u, perr := url.Parse(back)
	if perr != nil {
		return err
	}
	r2 := p.r.Clone(p.r.Context())
	r2.Method, r2.URL, r2.Form, r2.PostForm = "GET", u, nil, nil
	for _, cp := range p.w.table {
		if cp.method != "GET" {
			continue
		}
		if vals, ok := matchPath(cp.path, u.Path); ok {
			for k, v := range vals {
				r2.SetPathValue(k, v)
			}
			q := &page{w: p.w, rw: &statusFirst{ResponseWriter: p.rw, status: statusOf(err)}, r: r2, lang: p.lang, pr: p.pr,
				csrf: p.csrf, token: p.token, me: p.me, perms: p.perms, errMsg: msg}
			return cp.fn(p.w, q)
		}
	}
	return err
}

// statusFirst writes the refusal's status before the page.
type statusFirst struct {
	http.ResponseWriter
	status int
	done   bool
}

func (s *statusFirst) WriteHeader(code int) {
	if !s.done {
		s.done = true
		s.ResponseWriter.WriteHeader(s.status)
	}
}

func (s *statusFirst) Write(b []byte) (int, error) {
	s.WriteHeader(s.status)
	return s.ResponseWriter.Write(b)
}

func statusOf(err error) int {
	if pr, ok := err.(*problem); ok {
		return pr.Status
	}
	return http.StatusInternalServerError
}

// matchPath matches a pattern with {name} segments.
func matchPath(pattern, path string) (map[string]string, bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return nil, false
	}
	vals := map[string]string{}
	for i, s := range ps {
		if strings.HasPrefix(s, "{") {
			vals[strings.Trim(s, "{}")] = xs[i]
		} else if s != xs[i] {
			return nil, false
		}
	}
	return vals, true
}

func withQuery(path, k, v string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + k + "=" + url.QueryEscape(v)
}

// show renders a console page with the notice of a redirect and the
// refusal of a form.
func (p *page) show(name, titleKey string, data any) error {
	p.renderWith(name, titleKey, data, p.notice(), p.errMsg)
	return nil
}

func (w *Web) home(p *page) error {
	var notice string
	if d := p.r.URL.Query().Get("pwdays"); d != "" {
		notice = p.T("password.expiring", d)
	}
	if n := p.notice(); n != "" {
		notice = n
	}
	p.renderWith("home", "home.title", nil, notice, "")
	return nil
}

// sitesFor lists the sites where the operator holds perm (every site for
// a holder at "*").
func (p *page) sitesFor(perm string) ([]siteView, error) {
	var all list[siteView]
	if err := p.get("/v1/sites?limit=1000", &all); err != nil {
		return nil, err
	}
	held := p.perms[perm]
	if slices.Contains(held, "*") {
		return all.Items, nil
	}
	var out []siteView
	for _, s := range all.Items {
		if slices.Contains(held, s.SiteID) {
			out = append(out, s)
		}
	}
	return out, nil
}

type operatorsData struct {
	Sites     []siteView
	Site      string
	Status    string
	Query     string
	Operators []operatorView
	Next      string
	Types     []string
	Statuses  []string
}

var employmentTypes = []string{"regular", "part_time", "temporary", "dispatched", "contractor"}
var statuses = []string{"active", "suspended", "locked", "expired", "retired"}

func (w *Web) operators(p *page) error {
	sites, err := p.sitesFor("operator.manage")
	if err != nil {
		return err
	}
	q := p.r.URL.Query()
	d := operatorsData{Sites: sites, Site: q.Get("site_id"), Status: q.Get("status"), Query: strings.TrimSpace(q.Get("q")),
		Types: employmentTypes, Statuses: statuses}
	if d.Site == "" {
		d.Site = p.me.Session.SiteID
		if len(sites) > 0 && !slices.ContainsFunc(sites, func(s siteView) bool { return s.SiteID == d.Site }) {
			d.Site = sites[0].SiteID
		}
	}
	v := url.Values{"site_id": {d.Site}, "limit": {"200"}}
	if d.Status != "" {
		v.Set("status", d.Status)
	}
	if d.Query != "" {
		v.Set("q", d.Query)
	}
	if c := q.Get("cursor"); c != "" {
		v.Set("cursor", c)
	}
	var ops list[operatorView]
	if err := p.get("/v1/operators?"+v.Encode(), &ops); err != nil {
		return err
	}
	d.Operators = ops.Items
	if ops.NextCursor != nil {
		d.Next = *ops.NextCursor
	}
	return p.show("operators", "operators.title", d)
}

func (w *Web) issueOperator(p *page) error {
	f := p.r.PostForm
	body := map[string]any{"staff_number": f.Get("staff_number"), "name": f.Get("name"), "site_id": f.Get("site_id"),
		"employment_type": f.Get("employment_type")}
	if t, ok := p.date(f.Get("valid_until")); ok {
		body["valid_until"] = t
	}
	back := "/console/operators?site_id=" + url.QueryEscape(f.Get("site_id"))
	res := p.call("POST", "/v1/operators", body)
	if !res.ok() {
		return p.again(back, res.err())
	}
	var o operatorView
	if err := res.decode(&o); err != nil {
		return err
	}
	return p.redirect("/console/operators/" + url.PathEscape(o.OperatorID) + "?m=done")
}

// date reads an <input type=date> as the start of that day in the
// server's zone, in RFC 3339.
func (p *page) date(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	t, err := time.ParseInLocation("2006-01-02", s, time.Local)
	if err != nil {
		return s, true // the API names the field
	}
	return t.UTC().Format(time.RFC3339), true
}

type operatorData struct {
	Op         operatorView
	Roles      []roleView
	Sites      []siteView
	Enrollment map[string]any
	TempPW     string
}

func (w *Web) operator(p *page) error {
	id := p.r.PathValue("id")
	var d operatorData
	if err := p.get("/v1/operators/"+url.PathEscape(id), &d.Op); err != nil {
		return err
	}
	var rs list[roleView]
	if err := p.get("/v1/roles?limit=1000", &rs); err != nil {
		return err
	}
	var ss list[siteView]
	if err := p.get("/v1/sites?limit=1000", &ss); err != nil {
		return err
	}
	d.Roles, d.Sites = rs.Items, ss.Items
	return p.show("operator", "operator.title", d)
}

// operatorAction performs one of the operator page's forms.
func (w *Web) operatorAction(p *page) error {
	id := p.r.PathValue("id")
	f := p.r.PostForm
	base := "/v1/operators/" + url.PathEscape(id)
	back := "/console/operators/" + url.PathEscape(id)
	reason := map[string]any{"reason": f.Get("reason")}
	dated := func() map[string]any {
		b := map[string]any{"reason": f.Get("reason")}
		if t, ok := p.date(f.Get("effective_at")); ok {
			b["effective_at"] = t
		}
		return b
	}
	switch p.r.PathValue("action") {
	case "grant":
		b := map[string]any{"role_id": f.Get("role_id"), "site_id": f.Get("site_id"), "reason": f.Get("reason")}
		if t, ok := p.date(f.Get("valid_until")); ok {
			b["valid_until"] = t
		}
		return p.act("POST", base+"/grants", b, back)
	case "transfer":
		b := dated()
		b["to_site_id"] = f.Get("to_site_id")
		return p.act("POST", base+"/transfer", b, back)
	case "retire":
		return p.act("POST", base+"/retire", dated(), back)
	case "suspend", "reinstate", "unlock":
		return p.act("POST", base+"/"+p.r.PathValue("action"), reason, back)
	case "enroll":
		res := p.call("POST", base+"/cards/enrollments", map[string]any{"card_serial": f.Get("card_serial"), "label": f.Get("label")})
		if !res.ok() {
			return p.again(back, res.err())
		}
		var e map[string]any
		if err := res.decode(&e); err != nil {
			return err
		}
		if s, ok := e["expires_at"].(string); ok {
			e["expires_at"] = p.Time(&s)
		}
		p.render("enrollcode", "enrollcode.title", e)
		return nil
	case "reset-password":
		res := p.call("POST", base+"/password/reset", nil)
		if !res.ok() {
			return p.again(back, res.err())
		}
		var out struct {
			TemporaryPassword string `json:"temporary_password"`
		}
		if err := res.decode(&out); err != nil {
			return err
		}
		p.render("temppw", "temppw.title", map[string]string{"OperatorID": id, "Password": out.TemporaryPassword})
		return nil
	}
	return &problem{Status: 404, Code: "not_found"}
}

func (w *Web) cardAction(p *page) error {
	id, card := p.r.PathValue("id"), p.r.PathValue("card")
	path := "/v1/operators/" + url.PathEscape(id) + "/cards/" + url.PathEscape(card)
	back := "/console/operators/" + url.PathEscape(id)
	f := p.r.PostForm
	switch p.r.PathValue("action") {
	case "report-lost":
		return p.act("POST", path+"/report-lost", map[string]any{"kind": f.Get("kind"), "reason": f.Get("reason")}, back)
	case "return":
		return p.act("POST", path+"/return", map[string]any{"reason": f.Get("reason")}, back)
	}
	return &problem{Status: 404, Code: "not_found"}
}

type approvalsData struct {
	Grants []grantView
	Me     string
}

func (w *Web) approvals(p *page) error {
	var gs list[grantView]
	if err := p.get("/v1/grants?status=pending_approval&limit=1000", &gs); err != nil {
		return err
	}
	return p.show("approvals", "approvals.title", approvalsData{Grants: gs.Items, Me: p.me.Operator.OperatorID})
}

func (w *Web) grantAction(p *page) error {
	id := p.r.PathValue("id")
	back := p.r.PostFormValue("back")
	if !strings.HasPrefix(back, "/console/") {
		back = "/console/approvals"
	}
	switch a := p.r.PathValue("action"); a {
	case "approve", "revoke":
		return p.act("POST", "/v1/grants/"+url.PathEscape(id)+"/"+a, map[string]any{"reason": p.r.PostFormValue("reason")}, back)
	}
	return &problem{Status: 404, Code: "not_found"}
}
