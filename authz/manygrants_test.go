package authz_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// An operator with more grants than a store returns in one list (1,000),
// most of them ended long ago: the separation-of-duties check must still
// see the conflicting grant that sorts last, and a decision must still
// count the one live grant that sorts last.
func TestMoreGrantsThanOnePage(t *testing.T) {
	ctx, st, clk, must := historyStore(t)
	t0 := clk.Now()
	must(st.InTx(ctx, func(tx store.Tx) error {
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: t0}); err != nil {
			return err
		}
		for _, id := range []opgate.OperatorID{"OP-CHIEF", "OP-A"} {
			if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: id, StaffNumber: string(id), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}); err != nil {
				return err
			}
		}
		grants := []authz.Grant{{ID: "G-CHIEF", OperatorID: "OP-CHIEF", RoleID: roles.SectionChief, SiteID: "honcho", Status: authz.Active, ValidFrom: t0}}
		// Years of counter-clerk grants, each revoked: they sort first.
		for i := range 1200 {
			grants = append(grants, authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-0%05d", i)), OperatorID: "OP-A", RoleID: roles.CounterClerk,
				SiteID: "honcho", Status: authz.Revoked, ValidFrom: t0, EndedAt: t0})
		}
		// The live grants sort last.
		grants = append(grants,
			authz.Grant{ID: "G-Z1", OperatorID: "OP-A", RoleID: roles.SecurityAdmin, SiteID: "honcho", Status: authz.Active, ValidFrom: t0},
			authz.Grant{ID: "G-Z2", OperatorID: "OP-A", RoleID: roles.CounterClerk, SiteID: "honcho", Status: authz.Active, ValidFrom: t0})
		for _, g := range grants {
			g.GrantedBy, g.Reason, g.CreatedAt = "OP-CHIEF", "test", t0
			if err := tx.CreateGrant(ctx, g); err != nil {
				return err
			}
		}
		return nil
	}))
	svc, err := authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: st}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.Decide(ctx, "OP-A", roles.ResidentRead, "honcho")
	if err != nil || !d.Allowed || d.GrantID != "G-Z2" {
		t.Fatalf("decision = %+v, %v; want allowed by G-Z2", d, err)
	}
	_, err = svc.Grant(ctx, authz.Actor{ID: "OP-CHIEF"}, authz.GrantRequest{OperatorID: "OP-A", RoleID: roles.Auditor, SiteID: "honcho", Reason: "test"})
	if !errors.Is(err, authz.ErrSoDConflict) {
		t.Fatalf("auditor beside a held security_admin: %v, want %v", err, authz.ErrSoDConflict)
	}
	gs, err := svc.GrantsOf(ctx, "OP-A")
	if err != nil || len(gs) != 1202 {
		t.Fatalf("GrantsOf: %d grants, %v; want 1202", len(gs), err)
	}
}
