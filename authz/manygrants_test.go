package authz_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// An operator with more grants than a store returns in one list (1,000),
// most of them ended long ago: the separation-of-duties check must still
// see the conflicting grant that sorts last, and a decision must still
// count the one live grant that sorts last.
func TestMoreGrantsThanOnePage(t *testing.T) {
	var grants []authz.Grant
	// Years of counter-clerk grants, each revoked: they sort first.
	for i := range 1200 {
		grants = append(grants, authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-0%05d", i)), OperatorID: "OP-A", RoleID: roles.CounterClerk,
			SiteID: "honcho", Status: authz.Revoked})
	}
	// The live grants sort last.
	grants = append(grants,
		authz.Grant{ID: "G-Z1", OperatorID: "OP-A", RoleID: roles.SecurityAdmin, SiteID: "honcho", Status: authz.Active},
		authz.Grant{ID: "G-Z2", OperatorID: "OP-A", RoleID: roles.CounterClerk, SiteID: "honcho", Status: authz.Active})
	ctx, svc, _ := honchoWith(t, grants)
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

// A high-risk request lapses after PendingTTL even where the sweep has not
// run yet, and the sweep lapses every old request however many younger
// ones sort before it.
func TestPendingRequestsLapse(t *testing.T) {
	week := 7 * 24 * time.Hour
	// The old request sorts after a page of younger ones.
	grants := []authz.Grant{{ID: "G-Z-OLD", OperatorID: "OP-A", RoleID: roles.SecurityAdmin, SiteID: "honcho", Status: authz.PendingApproval}}
	for i := range 1001 {
		grants = append(grants, authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-Y%05d", i)), OperatorID: "OP-A", RoleID: roles.SecurityAdmin,
			SiteID: "honcho", Status: authz.PendingApproval, CreatedAt: time.Time{}.Add(week)})
	}
	ctx, svc, clk := honchoWith(t, grants)
	clk.Advance(week + time.Second)
	if _, err := svc.Approve(ctx, authz.Actor{ID: "OP-APPROVER"}, "G-Z-OLD", "ok"); !errors.Is(err, authz.ErrConflict) {
		t.Fatalf("approving a request older than %s: %v, want %v", authz.PendingTTL, err, authz.ErrConflict)
	}
	if _, err := svc.Approve(ctx, authz.Actor{ID: "OP-APPROVER"}, "G-Y00000", "ok"); err != nil {
		t.Fatalf("approving a request a second old: %v", err)
	}
	n, err := svc.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep lapsed %d, %v; want the one old request", n, err)
	}
	gs, err := svc.GrantsOf(ctx, "OP-A")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.ID == "G-Z-OLD" && g.Status != authz.Expired {
			t.Fatalf("old request is %s, want expired", g.Status)
		}
	}
}

// honchoWith seeds the built-in roles, the site honcho, two section chiefs
// (OP-CHIEF, OP-APPROVER) and OP-A there, then grants: each made by
// OP-CHIEF, valid from the clock's start, and created then unless its
// CreatedAt (as an offset from the zero time) says later.
func honchoWith(t *testing.T, grants []authz.Grant) (context.Context, *authz.Service, *clocktest.Clock) {
	ctx, st, clk, must := historyStore(t)
	t0 := clk.Now()
	grants = append(grants,
		authz.Grant{ID: "G-CHIEF", OperatorID: "OP-CHIEF", RoleID: roles.SectionChief, SiteID: "honcho", Status: authz.Active},
		authz.Grant{ID: "G-APPROVER", OperatorID: "OP-APPROVER", RoleID: roles.SectionChief, SiteID: "honcho", Status: authz.Active})
	must(st.InTx(ctx, func(tx store.Tx) error {
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: t0}); err != nil {
			return err
		}
		for _, id := range []opgate.OperatorID{"OP-CHIEF", "OP-APPROVER", "OP-A"} {
			if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: id, StaffNumber: string(id), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}); err != nil {
				return err
			}
		}
		for _, g := range grants {
			g.GrantedBy, g.Reason, g.CreatedAt = "OP-CHIEF", "test", t0.Add(g.CreatedAt.Sub(time.Time{}))
			if g.Status != authz.PendingApproval {
				g.ValidFrom = t0
			}
			if g.Status == authz.Revoked {
				g.EndedAt = t0
			}
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
	return ctx, svc, clk
}
