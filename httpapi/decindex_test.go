package httpapi_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/servertest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// counterCheck is a counter terminal's question at honcho.
func counterCheck(op string, action opgate.Permission) authz.CheckRequest {
	return authz.CheckRequest{OperatorID: opID(op), SessionID: "S-index", TerminalID: "honcho-01", TerminalSite: "honcho",
		Action: action, Resource: authz.Resource{Type: "resident", ID: "R-1", SiteID: "honcho"}}
}

// TestDecisionIndexFreshness: every change to a person's rights made
// through one replica — revoke, suspension, reinstatement, transfer, a
// role's permissions — is seen by the very next decision on another
// replica whose index already held that person; time-bound grants and IDs
// stop counting at their end with no sweep and no new login.
func TestDecisionIndexFreshness(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			other := servertest.Join(t, s.Shared(), s.Clock)
			admin := s.Admin
			ctx := context.Background()
			s.Must(201, "POST", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152"})
			issue := func(staff string, extra map[string]any) string {
				body := map[string]any{"staff_number": staff, "name": "窓口 職員", "site_id": "honcho", "employment_type": "regular"}
				for k, v := range extra {
					body[k] = v
				}
				return s.Must(201, "POST", "/v1/operators", admin, body).Map(t)["operator_id"].(string)
			}
			grant := func(op, role string, extra map[string]any) string {
				body := map[string]any{"role_id": role, "site_id": "honcho", "reason": "配属"}
				for k, v := range extra {
					body[k] = v
				}
				return s.Must(201, "POST", "/v1/operators/"+op+"/grants", admin, body).Map(t)["grant_id"].(string)
			}
			expect := func(what, op string, action opgate.Permission, allowed bool, reason string) {
				t.Helper()
				got, err := other.App.Authz.Check(ctx, counterCheck(op, action), false)
				if err != nil {
					t.Fatalf("%s: check: %v", what, err)
				}
				if got.Allowed != allowed || got.Reason != reason {
					t.Fatalf("%s: other replica decided %+v, want allowed=%v reason=%s", what, got.Decision, allowed, reason)
				}
			}

			clerk := issue("7101", nil)
			g := grant(clerk, "counter_clerk", nil)
			// The other replica loaded its index before this operator
			// existed; its first decision reads the operator, the next ones
			// use its entry.
			expect("granted", clerk, roles.ResidentRead, true, "allowed")
			expect("granted, from the index", clerk, roles.ResidentRead, true, "allowed")
			s.Must(200, "POST", "/v1/grants/"+g+"/revoke", admin, map[string]any{"reason": "業務終了"})
			expect("revoked", clerk, roles.ResidentRead, false, "no_grant")

			grant(clerk, "counter_clerk", nil)
			expect("granted again", clerk, roles.ResidentRead, true, "allowed")
			s.Must(200, "POST", "/v1/operators/"+clerk+"/suspend", admin, map[string]any{"reason": "休職"})
			expect("suspended", clerk, roles.ResidentRead, false, "operator_suspended")
			s.Must(200, "POST", "/v1/operators/"+clerk+"/reinstate", admin, map[string]any{"reason": "復職"})
			expect("reinstated", clerk, roles.ResidentRead, true, "allowed")
			s.Must(200, "POST", "/v1/operators/"+clerk+"/transfer", admin, map[string]any{"to_site_id": "kita", "reason": "異動"})
			expect("transferred", clerk, roles.ResidentRead, false, "no_grant")

			// A role's permissions change under its holders.
			s.Must(201, "POST", "/v1/roles", admin, map[string]any{"role_id": "issuer", "name": "交付", "permissions": []string{"certificate.issue"}})
			holder := issue("7102", nil)
			grant(holder, "issuer", nil)
			expect("role holds the permission", holder, roles.CertificateIssue, true, "allowed")
			s.Must(200, "PUT", "/v1/roles/issuer", admin, map[string]any{"name": "交付", "permissions": []string{"card.issue"}})
			expect("role lost the permission", holder, roles.CertificateIssue, false, "no_grant")
			expect("role gained a permission", holder, roles.CardIssue, true, "allowed")

			// Time-bound grants and IDs end on the next decision, unswept.
			temp := issue("7103", map[string]any{"employment_type": "temporary", "valid_until": s.Clock.Now().Add(2 * time.Hour).Format(time.RFC3339)})
			grant(temp, "counter_viewer", map[string]any{"valid_until": s.Clock.Now().Add(time.Hour).Format(time.RFC3339)})
			grant(temp, "issuer", nil)
			expect("time-bound grant", temp, roles.ResidentRead, true, "allowed")
			s.Clock.Advance(time.Hour)
			expect("time-bound grant at its end", temp, roles.ResidentRead, false, "no_grant")
			expect("open-ended grant of a temporary ID", temp, roles.CardIssue, true, "allowed")
			s.Clock.Advance(time.Hour)
			expect("temporary ID at its end", temp, roles.CardIssue, false, "operator_inactive")
		})
	}
}

// TestDecisionIndexRacingRevoke: decisions racing a revoke on another
// replica may go either way while it commits, but none that began after
// the revoke returned allows.
func TestDecisionIndexRacingRevoke(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			other := servertest.Join(t, s.Shared(), s.Clock)
			ctx := context.Background()
			admin := lifecycle.Actor{ID: s.Boot.OperatorID, TerminalID: "admin-console"}
			var clerks []string
			var grants []opgate.GrantID
			for i := range 4 {
				op := s.Must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": "72" + string(rune('0'+i)) + "0", "name": "窓口", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				g, err := s.App.Authz.Grant(ctx, admin, authz.GrantRequest{OperatorID: opID(op), RoleID: roles.CounterClerk, SiteID: "honcho", Reason: "配属"})
				if err != nil {
					t.Fatal(err)
				}
				clerks, grants = append(clerks, op), append(grants, g.ID)
			}
			for i, op := range clerks {
				var revoked atomic.Bool
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var bad, checks, afterChecks, running atomic.Int32
				// waitFor waits until the checkers have made n checks, or
				// have all stopped on an error.
				waitFor := func(c *atomic.Int32, n int32) {
					for c.Load() < n && running.Load() > 0 {
						runtime.Gosched()
					}
				}
				replicas := []*servertest.Server{s, other}
				running.Store(4)
				for w := range 4 {
					wg.Go(func() {
						defer running.Add(-1)
						for {
							select {
							case <-stop:
								return
							default:
							}
							after := revoked.Load()
							d, err := replicas[w%2].App.Authz.Check(ctx, counterCheck(op, roles.ResidentRead), false)
							if err != nil {
								t.Errorf("check: %v", err)
								return
							}
							checks.Add(1)
							if after {
								afterChecks.Add(1)
								if d.Allowed {
									bad.Add(1)
								}
							}
						}
					})
				}
				waitFor(&checks, 16) // both indexes hold the operator
				if _, err := s.App.Authz.Revoke(ctx, admin, grants[i], "業務終了"); err != nil {
					t.Fatal(err)
				}
				revoked.Store(true)
				waitFor(&afterChecks, 16)
				close(stop)
				wg.Wait()
				if n := bad.Load(); n > 0 {
					t.Fatalf("%s: %d decisions begun after the revoke returned allowed", op, n)
				}
				// In the history, no decision after the revoke allows.
				var evs []audit.Event
				if err := s.App.Store.View(ctx, func(tx store.Tx) (err error) {
					evs, err = tx.ListAudit(ctx, audit.Filter{OperatorID: opID(op), Limit: 1000})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				revokedAt := int64(-1)
				for _, e := range evs {
					switch {
					case e.Type == audit.GrantRevoked:
						revokedAt = e.Seq
					case e.Type == audit.AuthzDecided && revokedAt >= 0 && e.Reason == authz.ReasonAllowed:
						t.Errorf("%s: decision %d allowed after the revoke at %d in the history", op, e.Seq, revokedAt)
					}
				}
			}
		})
	}
}
