package httpapi_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/opgate/opgate/internal/servertest"
)

// TestHoldersReport: who could read resident records at a site, now and
// before a grant existed; refused without report.read; bad input is a 400.
func TestHoldersReport(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	admin := s.Admin
	before := s.Clock.Now()
	s.Clock.Advance(time.Minute)
	op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": "7101", "name": "窓口 職員", "site_id": "honcho", "employment_type": "regular"}).Map(t)
	clerk := op["operator_id"].(string)
	s.Must(201, "POST", "/v1/operators/"+clerk+"/grants", admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"})

	holders := func(at string) []string {
		q := url.Values{"permission": {"resident.read"}, "site_id": {"honcho"}}
		if at != "" {
			q.Set("at", at)
		}
		items := s.Must(200, "GET", "/v1/reports/holders?"+q.Encode(), admin, nil).Map(t)["items"].([]any)
		var out []string
		for _, it := range items {
			out = append(out, it.(map[string]any)["operator_id"].(string))
		}
		return out
	}
	if got := holders(""); len(got) != 1 || got[0] != clerk {
		t.Fatalf("holders now: %v, want [%s]", got, clerk)
	}
	if got := holders(before.Format("2006-01-02T15:04:05Z07:00")); len(got) != 0 {
		t.Fatalf("holders before the grant: %v", got)
	}
	for _, q := range []string{"permission=resident.delete_all&site_id=honcho", "permission=resident.read", "permission=resident.read&site_id=honcho&at=yesterday"} {
		if r := s.Do("GET", "/v1/reports/holders?"+q, admin, nil); r.Status != 400 {
			t.Fatalf("%s: %d %s", q, r.Status, r.Body)
		}
	}
	tok := s.Token(opID(clerk), "honcho", "admin-console")
	if r := s.Do("GET", "/v1/reports/holders?permission=resident.read&site_id=honcho", tok, nil); r.Status != 403 {
		t.Fatalf("a clerk read the report: %d %s", r.Status, r.Body)
	}
}
