package authz_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/sqlite"
)

// TestHoldersAt answers "who could read restricted records at the site on
// date D" from grants that were approved, expired and revoked over time.
func TestHoldersAt(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "opgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := clocktest.New()
	t0 := clk.Now()
	day := 24 * time.Hour
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.InTx(ctx, func(tx store.Tx) error {
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		if err := tx.PutRole(ctx, roles.Role{ID: "dv_support", Name: "支援措置", Permissions: []opgate.Permission{roles.ResidentRead, roles.ResidentReadRestricted}}); err != nil {
			return err
		}
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: t0}); err != nil {
			return err
		}
		for _, id := range []opgate.OperatorID{"OP-A", "OP-B", "OP-C", "OP-D"} {
			if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: id, StaffNumber: string(id), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}); err != nil {
				return err
			}
		}
		grants := []authz.Grant{
			// A: approved on day 1, revoked on day 10.
			{ID: "G-A", OperatorID: "OP-A", RoleID: "dv_support", SiteID: "honcho", Status: authz.Revoked, ValidFrom: t0.Add(day), EndedAt: t0.Add(10 * day)},
			// B: approved on day 5, until day 20.
			{ID: "G-B", OperatorID: "OP-B", RoleID: "dv_support", SiteID: "honcho", Status: authz.Active, ValidFrom: t0.Add(5 * day), ValidUntil: t0.Add(20 * day)},
			// C: requested, never approved.
			{ID: "G-C", OperatorID: "OP-C", RoleID: "dv_support", SiteID: "honcho", Status: authz.PendingApproval},
			// D: a counter clerk: no restricted records.
			{ID: "G-D", OperatorID: "OP-D", RoleID: roles.CounterClerk, SiteID: "honcho", Status: authz.Active, ValidFrom: t0},
		}
		for _, g := range grants {
			g.GrantedBy, g.Reason, g.CreatedAt = "OP-CHIEF", "test", t0
			if err := tx.CreateGrant(ctx, g); err != nil {
				return err
			}
		}
		return nil
	}))
	svc, err := authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: st}, Clock: clk})
	must(err)
	for _, tc := range []struct {
		name string
		at   time.Duration
		want []opgate.OperatorID
	}{
		{"before anyone", 0, nil},
		{"day 2", 2 * day, []opgate.OperatorID{"OP-A"}},
		{"day 7", 7 * day, []opgate.OperatorID{"OP-A", "OP-B"}},
		{"at the revocation", 10 * day, []opgate.OperatorID{"OP-B"}},
		{"at the end date", 20 * day, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, err := svc.HoldersAt(ctx, roles.ResidentReadRestricted, "honcho", t0.Add(tc.at))
			must(err)
			var got []opgate.OperatorID
			for _, h := range hs {
				got = append(got, h.OperatorID)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}
