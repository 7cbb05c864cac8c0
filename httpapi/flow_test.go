package httpapi_test

import (
	"context"
	"testing"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/servertest"
)

// TestLifecycleFlow walks a chief's year: sites, terminals, an operator
// issued and granted, then transferred, with every right ending at once
// and the history intact.
func TestLifecycleFlow(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			admin := s.Admin
			s.Must(201, "POST", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152"})
			s.Must(201, "POST", "/v1/terminals", admin, map[string]any{"terminal_id": "honcho-01", "site_id": "honcho", "name": "窓口1"})
			op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": "2001", "name": "窓口 一郎", "site_id": "honcho", "employment_type": "regular"}).Map(t)
			id := op["operator_id"].(string)
			if op["status"] != "active" {
				t.Fatalf("status %v", op["status"])
			}
			s.Must(409, "POST", "/v1/operators", admin, map[string]any{"staff_number": "2001", "name": "二重", "site_id": "honcho", "employment_type": "regular"})
			g := s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "窓口配属"}).Map(t)
			if g["status"] != "active" {
				t.Fatalf("grant %v", g)
			}
			clerk := s.Token(opID(id), "honcho", "honcho-01")
			s.Must(200, "GET", "/v1/me", clerk, nil)
			s.Must(403, "GET", "/v1/operators", clerk, nil)

			s.Must(200, "POST", "/v1/operators/"+id+"/transfer", admin, map[string]any{"to_site_id": "kita", "reason": "4月異動"})
			// The session made before the transfer is refused at once.
			s.Must(401, "GET", "/v1/me", clerk, nil)
			got := s.Must(200, "GET", "/v1/operators/"+id, admin, nil).Map(t)
			if got["site_id"] != "kita" {
				t.Fatalf("site %v", got["site_id"])
			}
			for _, gr := range got["grants"].([]any) {
				if st := gr.(map[string]any)["status"]; st != "revoked" {
					t.Fatalf("grant still %v after transfer", st)
				}
			}
			res, err := audit.VerifyChain(context.Background(), s.App.Store)
			if err != nil || !res.OK {
				t.Fatalf("verify: %+v %v", res, err)
			}
			v := s.Must(200, "GET", "/v1/audit/verify", admin, nil).Map(t)
			if v["ok"] != true {
				t.Fatalf("verify: %v", v)
			}
			h := s.Must(200, "GET", "/v1/operators/"+id+"/history", admin, nil).Map(t)
			var types []string
			for _, e := range h["items"].([]any) {
				types = append(types, e.(map[string]any)["type"].(string))
			}
			want := []string{"operator.issued", "grant.approved", "grant.revoked", "session.ended", "operator.transferred"}
			if len(types) != len(want) {
				t.Fatalf("history %v, want %v", types, want)
			}
			for i := range want {
				if types[i] != want[i] {
					t.Fatalf("history %v, want %v", types, want)
				}
			}
		})
	}
}
