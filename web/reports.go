package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// reportPages are the review campaign and the reports (REQUIREMENTS R5),
// on API.md's /v1/reviews and /v1/reports/*. A report page shows the
// report's items as a table and offers its CSV and XLSX.
func reportPages() []consolePage {
	return []consolePage{
		{"GET", "/console/reviews", "nav.reviews", []string{"review.perform"}, (*Web).reviewsPage},
		{"POST", "/console/reviews", "", nil, (*Web).reviewStart},
		{"GET", "/console/reviews/{id}", "", nil, (*Web).reviewPage},
		{"POST", "/console/reviews/{id}/items/{item}", "", nil, (*Web).reviewDecide},
		{"POST", "/console/reviews/{id}/close", "", nil, (*Web).reviewClose},
		{"GET", "/console/reviews/{id}/download", "", nil, (*Web).reviewDownload},
		{"GET", "/console/ledger", "nav.ledger", []string{"report.read"}, report("ledger", "/v1/reports/ledger", "site_id")},
		{"GET", "/console/ledger/download", "", nil, reportDownload("/v1/reports/ledger", "site_id")},
		{"GET", "/console/dormant", "nav.dormant", []string{"report.read"}, report("dormant", "/v1/reports/dormant", "site_id")},
		{"GET", "/admin/checklist", "nav.checklist", []string{"report.read@*"}, report("checklist", "/v1/reports/checklist")},
		{"GET", "/admin/anomalies", "nav.anomalies", []string{"report.read@*"}, report("anomalies", "/v1/reports/anomalies", "from", "to")},
		{"GET", "/admin/disclosure", "nav.disclosure", []string{"report.read@*"},
			report("disclosure", "/v1/reports/disclosure", "resource_type", "resource_id", "from", "to")},
	}
}

// table is a report's items as rows, columns in the API's order.
type table struct {
	Columns []string
	Rows    [][]string
}

type reportData struct {
	Name     string
	Params   []string
	Values   map[string]string
	Table    table
	Download string
}

// report builds the page of a report whose query takes params.
func report(name, api string, params ...string) func(*Web, *page) error {
	return func(w *Web, p *page) error {
		d := reportData{Name: name, Params: params, Values: map[string]string{}}
		v := p.params(params, d.Values)
		if (name == "ledger" || name == "dormant") && d.Values["site_id"] == "" {
			d.Values["site_id"] = p.me.Session.SiteID
			v.Set("site_id", p.me.Session.SiteID)
		}
		if name == "disclosure" && d.Values["resource_id"] == "" {
			return p.show("report", "report."+name, d) // the search form alone
		}
		res := p.call("GET", api+"?"+v.Encode(), nil)
		if !res.ok() {
			return res.err()
		}
		t, err := tableOf(p, res.Body)
		if err != nil {
			return err
		}
		d.Table = t
		if name == "ledger" {
			d.Download = "/console/ledger/download?" + v.Encode()
		}
		return p.show("report", "report."+name, d)
	}
}

// params copies the page's query parameters the report takes.
func (p *page) params(names []string, into map[string]string) url.Values {
	v := url.Values{}
	for _, k := range names {
		if x := strings.TrimSpace(p.r.URL.Query().Get(k)); x != "" {
			into[k] = x
			if k == "from" || k == "to" {
				x, _ = p.date(x)
			}
			v.Set(k, x)
		}
	}
	return v
}

// reportDownload relays a report's CSV or XLSX as the API made it.
func reportDownload(api string, params ...string) func(*Web, *page) error {
	return func(w *Web, p *page) error {
		v := p.params(params, map[string]string{})
		format := p.r.URL.Query().Get("format")
		if format != "xlsx" {
			format = "csv"
		}
		v.Set("format", format)
		return p.download(api+"?"+v.Encode(), strings.TrimPrefix(api, "/v1/reports/")+"."+format)
	}
}

// tableOf reads {"items":[...]} keeping the columns in the order of the
// first item; nested values are shown as compact JSON.
func tableOf(p *page, body []byte) (table, error) {
	var doc struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return table{}, fmt.Errorf("web: report: %w", err)
	}
	var t table
	if len(doc.Items) == 0 {
		return t, nil
	}
	keys, err := orderedKeys(doc.Items[0])
	if err != nil {
		return t, err
	}
	for _, k := range keys {
		label := k
		if p.w.cat.has(p.lang, "col."+k) {
			label = p.T("col." + k)
		}
		t.Columns = append(t.Columns, label)
	}
	for _, raw := range doc.Items {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return t, fmt.Errorf("web: report: %w", err)
		}
		row := make([]string, len(keys))
		for i, k := range keys {
			row[i] = cell(m[k])
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

func orderedKeys(obj json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

func cell(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	var buf bytes.Buffer
	_ = json.Compact(&buf, v)
	return buf.String()
}

// ---- review campaigns (R5.1)

type reviewItem struct {
	ItemID       string   `json:"item_id"`
	GrantID      string   `json:"grant_id"`
	OperatorID   string   `json:"operator_id"`
	OperatorName string   `json:"operator_name"`
	RoleID       string   `json:"role_id"`
	GrantedBy    string   `json:"granted_by"`
	GrantedAt    *string  `json:"granted_at"`
	LastLoginAt  *string  `json:"last_login_at"`
	LastUsedAt   *string  `json:"last_used_at"`
	Hints        []string `json:"hints"`
	Decision     string   `json:"decision"`
}

type reviewView struct {
	ReviewID string       `json:"review_id"`
	SiteID   string       `json:"site_id"`
	DueAt    *string      `json:"due_at"`
	Status   string       `json:"status"`
	Items    []reviewItem `json:"items"`
}

func (w *Web) reviewsPage(p *page) error {
	sites, err := p.sitesFor("review.perform")
	if err != nil {
		return err
	}
	d := map[string]any{"Sites": sites, "Site": p.me.Session.SiteID}
	var rs list[reviewView]
	if err := p.get("/v1/reviews?site_id="+url.QueryEscape(p.me.Session.SiteID), &rs); err != nil {
		return err
	}
	d["Reviews"] = rs.Items
	if id := p.r.URL.Query().Get("review_id"); id != "" {
		return p.redirect("/console/reviews/" + url.PathEscape(id))
	}
	return p.show("reviews", "reviews.title", d)
}

func (w *Web) reviewStart(p *page) error {
	f := p.r.PostForm
	body := map[string]any{"site_id": f.Get("site_id"), "on_unreviewed": f.Get("on_unreviewed")}
	if t, ok := p.date(f.Get("due_at")); ok {
		body["due_at"] = t
	}
	res := p.call("POST", "/v1/reviews", body)
	if !res.ok() {
		return p.again("/console/reviews", res.err())
	}
	var rv reviewView
	if err := res.decode(&rv); err != nil {
		return err
	}
	return p.redirect("/console/reviews/" + url.PathEscape(rv.ReviewID) + "?m=done")
}

func (w *Web) reviewPage(p *page) error {
	var rv reviewView
	if err := p.get("/v1/reviews/"+url.PathEscape(p.r.PathValue("id")), &rv); err != nil {
		return err
	}
	return p.show("review", "review.title", map[string]any{"Review": rv, "Me": p.me.Operator.OperatorID})
}

func (w *Web) reviewDecide(p *page) error {
	id := url.PathEscape(p.r.PathValue("id"))
	return p.act("POST", "/v1/reviews/"+id+"/items/"+url.PathEscape(p.r.PathValue("item")),
		map[string]string{"decision": p.r.PostFormValue("decision"), "reason": p.r.PostFormValue("reason")}, "/console/reviews/"+id)
}

func (w *Web) reviewClose(p *page) error {
	id := url.PathEscape(p.r.PathValue("id"))
	return p.act("POST", "/v1/reviews/"+id+"/close", nil, "/console/reviews/"+id)
}

func (w *Web) reviewDownload(p *page) error {
	format := p.r.URL.Query().Get("format")
	if format != "xlsx" {
		format = "csv"
	}
	id := p.r.PathValue("id")
	return p.download("/v1/reports/reviews/"+url.PathEscape(id)+"?format="+format, "review-"+id+"."+format)
}
