package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/opgate/opgate/web"
)

// reviewDouble stands in for the review campaign endpoints of API.md
// (POST /v1/reviews, GET /v1/reviews/{id}, POST .../items/{item_id},
// POST .../close, GET /v1/reports/reviews/{id}) on a server that does not
// have them yet; it keeps campaigns in memory and revokes through the real
// API. Once the server answers those routes itself, the double steps aside
// and the tests run against the real endpoints.
type reviewDouble struct {
	api http.Handler
	mu  sync.Mutex
	rvs map[string]*reviewDoc
}

type reviewDoc struct {
	ReviewID string          `json:"review_id"`
	SiteID   string          `json:"site_id"`
	DueAt    string          `json:"due_at"`
	Status   string          `json:"status"`
	Items    []reviewItemDoc `json:"items"`
}

type reviewItemDoc struct {
	ItemID     string `json:"item_id"`
	GrantID    string `json:"grant_id"`
	OperatorID string `json:"operator_id"`
	RoleID     string `json:"role_id"`
	Decision   string `json:"decision"`
}

// withReviews returns api, or api behind the double when api has no
// review routes (an unauthenticated call gets 401 from a route, 404 from
// none).
func withReviews(api http.Handler) http.Handler {
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/reviews/probe", nil))
	if rec.Code != http.StatusNotFound {
		return api
	}
	return &reviewDouble{api: api, rvs: map[string]*reviewDoc{}}
}

func (d *reviewDouble) call(r *http.Request, method, path string, body any) *httptest.ResponseRecorder {
	var b bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&b).Encode(body)
	}
	req := httptest.NewRequest(method, path, &b)
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	d.api.ServeHTTP(rec, req)
	return rec
}

func (d *reviewDouble) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	isReview := len(parts) >= 2 && parts[0] == "v1" && parts[1] == "reviews"
	isReport := len(parts) == 4 && parts[0] == "v1" && parts[1] == "reports" && parts[2] == "reviews"
	if !isReview && !isReport {
		d.api.ServeHTTP(w, r)
		return
	}
	// Who is calling: the real API authenticates.
	if me := d.call(r, "GET", "/v1/me", nil); me.Code != 200 {
		copyAnswer(w, me)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case isReport:
		rv := d.rvs[parts[3]]
		if rv == nil {
			http.Error(w, `{"code":"not_found","status":404}`, 404)
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		fmt.Fprintln(w, "item_id,grant_id,operator_id,role_id,decision")
		for _, it := range rv.Items {
			fmt.Fprintf(w, "%s,%s,%s,%s,%s\n", it.ItemID, it.GrantID, it.OperatorID, it.RoleID, it.Decision)
		}
	case r.Method == "POST" && len(parts) == 2:
		var in struct {
			SiteID string `json:"site_id"`
			DueAt  string `json:"due_at"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		gs := d.call(r, "GET", "/v1/grants?status=active&site_id="+in.SiteID, nil)
		if gs.Code != 200 {
			copyAnswer(w, gs)
			return
		}
		var list struct {
			Items []reviewItemDoc `json:"items"`
		}
		_ = json.Unmarshal(gs.Body.Bytes(), &list)
		rv := &reviewDoc{ReviewID: fmt.Sprintf("R-%d", len(d.rvs)+1), SiteID: in.SiteID, DueAt: in.DueAt, Status: "open"}
		for i, g := range list.Items {
			g.ItemID = fmt.Sprintf("I-%d", i+1)
			rv.Items = append(rv.Items, g)
		}
		d.rvs[rv.ReviewID] = rv
		writeDoc(w, 201, rv)
	case len(parts) >= 3 && d.rvs[parts[2]] == nil:
		http.Error(w, `{"code":"not_found","status":404}`, 404)
	case r.Method == "GET" && len(parts) == 3:
		writeDoc(w, 200, d.rvs[parts[2]])
	case r.Method == "POST" && len(parts) == 5 && parts[3] == "items":
		rv := d.rvs[parts[2]]
		var in struct{ Decision, Reason string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		for i := range rv.Items {
			if rv.Items[i].ItemID != parts[4] {
				continue
			}
			if in.Decision == "revoke" {
				if res := d.call(r, "POST", "/v1/grants/"+rv.Items[i].GrantID+"/revoke", map[string]string{"reason": in.Reason}); res.Code != 200 {
					copyAnswer(w, res)
					return
				}
			}
			rv.Items[i].Decision = in.Decision
		}
		writeDoc(w, 200, rv)
	case r.Method == "POST" && len(parts) == 4 && parts[3] == "close":
		d.rvs[parts[2]].Status = "closed"
		writeDoc(w, 200, d.rvs[parts[2]])
	default:
		http.Error(w, `{"code":"not_found","status":404}`, 404)
	}
}

func writeDoc(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func copyAnswer(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// reviewHandler serves the pages over the API with review campaigns.
func reviewHandler(api http.Handler, secret []byte) (http.Handler, error) {
	h := withReviews(api)
	w, err := web.New(web.Config{API: h, Secret: secret})
	if err != nil {
		return nil, err
	}
	return w.Mount(h), nil
}
