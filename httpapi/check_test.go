package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opgate/opgate/internal/servertest"
)

// TestDecisionPoint walks the decision point's conditions and checks that
// every answer, allowed or refused, is in the history before it is given.
func TestDecisionPoint(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			admin := s.Admin
			s.Must(201, "POST", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152"})
			s.Must(201, "POST", "/v1/terminals", admin, map[string]any{"terminal_id": "honcho-01", "site_id": "honcho", "name": "窓口1"})
			issue := func(staff, role string) string {
				op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": staff, "name": "窓口 職員", "site_id": "honcho", "employment_type": "regular"}).Map(t)
				id := op["operator_id"].(string)
				g := s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": role, "site_id": "honcho", "reason": "配属"}).Map(t)
				if g["status"] == "pending_approval" {
					t.Fatalf("%s needs approval", role)
				}
				return id
			}
			clerk := issue("7001", "counter_clerk")
			clerkTok := s.Token(opID(clerk), "honcho", "honcho-01")
			atKita := s.Token(opID(clerk), "kita", "kita-01") // a session at another site's terminal
			resident := func(site string, restricted bool) map[string]any {
				return map[string]any{"type": "resident", "id": "R-0001", "site_id": site, "restricted": restricted}
			}
			for _, tc := range []struct {
				name   string
				token  string
				body   map[string]any
				allow  bool
				reason string
			}{
				{"clerk reads a resident of the site", clerkTok, map[string]any{"action": "resident.read", "resource": resident("honcho", false)}, true, "allowed"},
				{"not a duty of the role", clerkTok, map[string]any{"action": "grant.manage", "resource": resident("honcho", false)}, false, "no_grant"},
				{"another site's record", clerkTok, map[string]any{"action": "resident.read", "resource": resident("kita", false)}, false, "other_site"},
				{"a terminal of another site", atKita, map[string]any{"action": "resident.read", "resource": resident("honcho", false)}, false, "terminal_site_mismatch"},
				{"restricted record without the permission", clerkTok, map[string]any{"action": "resident.read", "resource": resident("honcho", true), "purpose": "窓口交付"}, false, "restricted_needs_permission"},
				{"unknown action", clerkTok, map[string]any{"action": "resident.delete_all", "resource": resident("honcho", false)}, false, "unknown_action"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					got := s.Must(200, "POST", "/v1/authz/check", tc.token, tc.body).Map(t)
					if got["allowed"] != tc.allow || got["reason"] != tc.reason || got["decision_id"] == "" {
						t.Fatalf("got %v, want allowed=%v reason=%s", got, tc.allow, tc.reason)
					}
					// Recorded before the answer.
					evs := s.Must(200, "GET", "/v1/audit/events?type=authz.decided&operator_id="+clerk+"&limit=1000", admin, nil).Map(t)["items"].([]any)
					last := evs[len(evs)-1].(map[string]any)
					if d := last["data"].(map[string]any); d["decision_id"] != got["decision_id"] || d["allowed"] != tc.allow {
						t.Fatalf("last decision recorded %v, answered %v", d, got)
					}
				})
			}
			// Restricted records: the dedicated role's permission and a purpose.
			s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": "dv_support", "name": "支援措置担当", "permissions": []string{"resident.read", "resident.read_restricted"}})
			sup := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": "7002", "name": "支援 担当", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
			g := s.Must(201, "POST", "/v1/operators/"+sup+"/grants", admin, map[string]any{"role_id": "dv_support", "site_id": "honcho", "reason": "支援措置"}).Map(t)
			// A high-risk role waits for a second person.
			if g["status"] != "pending_approval" {
				t.Fatalf("dv_support grant: %v", g)
			}
			supTok := s.Token(opID(sup), "honcho", "honcho-01")
			restricted := map[string]any{"action": "resident.read", "resource": resident("honcho", true)}
			if got := s.Must(200, "POST", "/v1/authz/check", supTok, restricted).Map(t); got["reason"] != "no_grant" {
				t.Fatalf("pending grant counted: %v", got)
			}
			// The requester may not approve; a section chief of the site may.
			s.Must(403, "POST", "/v1/grants/"+g["grant_id"].(string)+"/approve", admin, map[string]any{"reason": "自分の申請"})
			chief := issue("7003", "section_chief")
			chiefTok := s.Token(opID(chief), "honcho", "honcho-01")
			s.Must(200, "POST", "/v1/grants/"+g["grant_id"].(string)+"/approve", chiefTok, map[string]any{"reason": "支援措置の決定による"})
			if got := s.Must(200, "POST", "/v1/authz/check", supTok, restricted).Map(t); got["reason"] != "purpose_required" {
				t.Fatalf("restricted without purpose: %v", got)
			}
			restricted["purpose"] = "住民票の写しの交付（本人確認済み）"
			if got := s.Must(200, "POST", "/v1/authz/check", supTok, restricted).Map(t); got["allowed"] != true {
				t.Fatalf("restricted with purpose: %v", got)
			}
			bulk := map[string]any{"action": "resident.bulk_export", "resource": resident("honcho", false)}
			s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": "exporter", "name": "一括出力", "permissions": []string{"resident.bulk_export"}})
			ge := s.Must(201, "POST", "/v1/operators/"+sup+"/grants", admin, map[string]any{"role_id": "exporter", "site_id": "honcho", "reason": "統計"}).Map(t)
			s.Must(200, "POST", "/v1/grants/"+ge["grant_id"].(string)+"/approve", chiefTok, map[string]any{"reason": "統計"})
			if got := s.Must(200, "POST", "/v1/authz/check", supTok, bulk).Map(t); got["reason"] != "approval_required" {
				t.Fatalf("bulk export without an approval: %v", got)
			}
			s.Must(400, "POST", "/v1/authz/check", supTok, map[string]any{"action": "resident.read", "resource": map[string]any{"type": "resident", "id": "R-1"}})
			s.Must(400, "POST", "/v1/authz/check", supTok, map[string]any{"action": "resident.read", "resource": resident("honcho", true), "purpose": string(make([]byte, 501))})
		})
	}
}

// TestBulkExportApprovalSingleUse: a bulk export needs a per-use approval
// by another person; one hundred concurrent checks naming one approval,
// on two replicas where the backend allows, allow exactly one.
func TestBulkExportApprovalSingleUse(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			replicas := []*servertest.Server{s}
			if b.Postgres {
				replicas = append(replicas, servertest.Join(t, s.Shared(), s.Clock))
			}
			admin := s.Admin
			newOp := func(staff, role string) (string, string) {
				id := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": staff, "name": "職員", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": role, "site_id": "honcho", "reason": "配属"})
				return id, s.Token(opID(id), "honcho", "admin-console")
			}
			_, chiefTok := newOp("8001", "section_chief")
			s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": "exporter", "name": "一括出力", "permissions": []string{"resident.bulk_export"}})
			exporter, expTok := newOp("8002", "counter_viewer")
			g := s.Must(201, "POST", "/v1/operators/"+exporter+"/grants", admin, map[string]any{"role_id": "exporter", "site_id": "honcho", "reason": "統計"}).Map(t)
			s.Must(200, "POST", "/v1/grants/"+g["grant_id"].(string)+"/approve", chiefTok, map[string]any{"reason": "統計"})

			ap := s.Must(201, "POST", "/v1/approvals", expTok, map[string]any{"action": "resident.bulk_export", "site_id": "honcho", "reason": "年次統計"}).Map(t)
			id := ap["approval_id"].(string)
			s.Must(403, "POST", "/v1/approvals/"+id+"/approve", expTok, map[string]any{"reason": "自分で"}) // lacks grant.approve
			check := map[string]any{"action": "resident.bulk_export", "resource": map[string]any{"type": "resident_set", "id": "all", "site_id": "honcho"}, "approval_id": id}
			if got := s.Must(200, "POST", "/v1/authz/check", expTok, check).Map(t); got["reason"] != "approval_required" {
				t.Fatalf("pending approval used: %v", got)
			}
			s.Must(200, "POST", "/v1/approvals/"+id+"/approve", chiefTok, map[string]any{"reason": "承認"})
			s.Must(409, "POST", "/v1/approvals/"+id+"/approve", chiefTok, nil)

			const n = 100
			allowed := make([]bool, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					r := replicas[i%len(replicas)].Do("POST", "/v1/authz/check", expTok, check)
					if r.Status == 200 {
						var m map[string]any
						r.JSON(t, &m)
						allowed[i] = m["allowed"] == true
					}
				})
			}
			wg.Wait()
			count := 0
			for _, a := range allowed {
				if a {
					count++
				}
			}
			if count != 1 {
				t.Fatalf("%d of %d concurrent checks allowed by one approval, want 1", count, n)
			}
			// An approval expires unused after an hour.
			ap2 := s.Must(201, "POST", "/v1/approvals", expTok, map[string]any{"action": "resident.bulk_export", "site_id": "honcho", "reason": "再出力"}).Map(t)
			s.Must(200, "POST", "/v1/approvals/"+ap2["approval_id"].(string)+"/approve", chiefTok, nil)
			s.Clock.Advance(time.Hour)
			expTok2 := s.Token(opID(exporter), "honcho", "admin-console")
			check["approval_id"] = ap2["approval_id"]
			if got := s.Must(200, "POST", "/v1/authz/check", expTok2, check).Map(t); got["allowed"] != false {
				t.Fatalf("expired approval used: %v", got)
			}
		})
	}
}

// TestRevocationReachesEveryReplica: a revoke on one replica is seen by
// the very next decision on another; a high-risk request that waits seven
// days for its second person lapses.
func TestRevocationReachesEveryReplica(t *testing.T) {
	b := servertest.Backends[len(servertest.Backends)-1]
	s := servertest.Start(t, b)
	other := servertest.Join(t, s.Shared(), s.Clock)
	admin := s.Admin
	id := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": "9001", "name": "窓口", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
	g := s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"}).Map(t)
	tok := s.Token(opID(id), "honcho", "admin-console")
	check := map[string]any{"action": "resident.read", "resource": map[string]any{"type": "resident", "id": "R-1", "site_id": "honcho"}}
	if got := other.Must(200, "POST", "/v1/authz/check", tok, check).Map(t); got["allowed"] != true {
		t.Fatalf("before the revoke: %v", got)
	}
	s.Must(200, "POST", "/v1/grants/"+g["grant_id"].(string)+"/revoke", admin, map[string]any{"reason": "業務終了"})
	if got := other.Must(200, "POST", "/v1/authz/check", tok, check).Map(t); got["allowed"] != false || got["reason"] != "no_grant" {
		t.Fatalf("after the revoke, on the other replica: %v", got)
	}
	// That replica still held the grant when the check began: the record
	// is of the decision made, not of the one its index expected.
	evs := s.Must(200, "GET", "/v1/audit/events?type=authz.decided&operator_id="+id, admin, nil).Map(t)["items"].([]any)
	for i, want := range []map[string]any{{"allowed": true, "grant_id": g["grant_id"]}, {"allowed": false, "grant_id": nil}} {
		data := evs[i].(map[string]any)["data"].(map[string]any)
		if data["allowed"] != want["allowed"] || data["grant_id"] != want["grant_id"] {
			t.Errorf("decision %d recorded as %v, want %v", i, data, want)
		}
	}

	pending := s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": "security_admin", "site_id": "*", "reason": "兼務"}).Map(t)
	if pending["status"] != "pending_approval" {
		t.Fatalf("high-risk grant: %v", pending)
	}
	s.Clock.Advance(7*24*time.Hour - time.Second)
	s.App.Sweep(context.Background(), s.Clock.Now())
	if st := grantStatus(t, s, pending["grant_id"].(string)); st != "pending_approval" {
		t.Fatalf("lapsed early: %s", st)
	}
	s.Clock.Advance(time.Second)
	s.App.Sweep(context.Background(), s.Clock.Now())
	if st := grantStatus(t, s, pending["grant_id"].(string)); st != "expired" {
		t.Fatalf("after seven days: %s", st)
	}
}

func grantStatus(t *testing.T, s *servertest.Server, id string) string {
	t.Helper()
	s.Admin = s.Token(s.Boot.OperatorID, "honcho", "admin-console") // the clock moved past the old session
	for _, g := range s.Must(200, "GET", "/v1/grants?limit=1000", s.Admin, nil).Map(t)["items"].([]any) {
		if m := g.(map[string]any); m["grant_id"] == id {
			return m["status"].(string)
		}
	}
	t.Fatalf("grant %s not listed", id)
	return ""
}

// TestApprovalRacingTransfer: an approval of a pending grant and a
// transfer of its operator, at once on two replicas, never leave the
// transferred operator with an active grant at the old site, whichever
// commits first.
func TestApprovalRacingTransfer(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			other := servertest.Join(t, s.Shared(), s.Clock)
			admin := s.Admin
			s.Must(201, "POST", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152"})
			s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": "dv_support", "name": "支援措置担当", "permissions": []string{"resident.read", "resident.read_restricted"}})
			chief := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": "9500", "name": "本町 課長", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
			s.Must(201, "POST", "/v1/operators/"+chief+"/grants", admin, map[string]any{"role_id": "section_chief", "site_id": "honcho", "reason": "配属"})
			chiefTok := other.Token(opID(chief), "honcho", "admin-console")
			for i := range 12 {
				op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": fmt.Sprintf("95%02d", i+1), "name": "支援 担当", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				g := s.Must(201, "POST", "/v1/operators/"+op+"/grants", admin, map[string]any{"role_id": "dv_support", "site_id": "honcho", "reason": "支援措置"}).Map(t)["grant_id"].(string)
				var wg sync.WaitGroup
				wg.Go(func() {
					other.Do("POST", "/v1/grants/"+g+"/approve", chiefTok, map[string]any{"reason": "承認"})
				})
				wg.Go(func() {
					if r := s.Do("POST", "/v1/operators/"+op+"/transfer", admin, map[string]any{"to_site_id": "kita", "reason": "異動"}); r.Status != 200 {
						t.Errorf("transfer: %d %s", r.Status, r.Body)
					}
				})
				wg.Wait()
				if st := grantStatus(t, s, g); st == "active" || st == "pending_approval" {
					t.Fatalf("round %d: the transferred operator's grant at the old site is %s", i, st)
				}
			}
		})
	}
}

// TestRoleEditsRacing: one edit takes a high-risk permission off a held
// role while another, read before it, renames the role with the
// permission still in it. Whatever the order, the permission must not
// come back to the holders without a second person: the later edit is
// judged against the role as the earlier one left it.
func TestRoleEditsRacing(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			other := servertest.Join(t, s.Shared(), s.Clock)
			admin := s.Admin
			for round := range 6 {
				id := fmt.Sprintf("dv-%d", round)
				s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": id, "name": "支援措置", "permissions": []string{"resident.read", "resident.read_restricted"}})
				op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": fmt.Sprintf("95%02d", round), "name": "職員", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				g := s.Must(201, "POST", "/v1/operators/"+op+"/grants", admin, map[string]any{"role_id": id, "site_id": "honcho", "reason": "支援"}).Map(t)
				approver := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": fmt.Sprintf("96%02d", round), "name": "課長", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				s.Must(201, "POST", "/v1/operators/"+approver+"/grants", admin, map[string]any{"role_id": "section_chief", "site_id": "honcho", "reason": "課長"})
				s.Must(200, "POST", "/v1/grants/"+g["grant_id"].(string)+"/approve", s.Token(opID(approver), "honcho", "admin-console"), map[string]any{"reason": "承認"})
				var wg sync.WaitGroup
				wg.Go(func() {
					s.Do("PUT", "/v1/roles/"+id, admin, map[string]any{"name": "支援措置", "permissions": []string{"resident.read"}})
				})
				wg.Go(func() {
					other.Do("PUT", "/v1/roles/"+id, admin, map[string]any{"name": "支援措置 (改称)", "permissions": []string{"resident.read", "resident.read_restricted"}})
				})
				wg.Wait()
				var role struct {
					Permissions []string `json:"permissions"`
				}
				for _, r := range s.Must(200, "GET", "/v1/roles", admin, nil).Map(t)["items"].([]any) {
					if m := r.(map[string]any); m["role_id"] == id {
						b, _ := json.Marshal(m)
						_ = json.Unmarshal(b, &role)
					}
				}
				if slices.Contains(role.Permissions, "resident.read_restricted") {
					t.Fatalf("round %d: the held role has resident.read_restricted again: %v", round, role.Permissions)
				}
			}
		})
	}
}
