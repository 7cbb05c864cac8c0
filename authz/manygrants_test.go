package authz_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
// (OP-CHIEF, OP-APPROVER), OP-A, a contractor OP-C and OP-ADMIN there,
// then grants: each made by
// OP-CHIEF, valid from the clock's start, and created then unless its
// CreatedAt (as an offset from the zero time) says later.
func honchoWith(t *testing.T, grants []authz.Grant) (context.Context, *authz.Service, *clocktest.Clock) {
	return honchoWithAt(t, filepath.Join(t.TempDir(), "opgate.db"), grants)
}

// honchoWithAt is honchoWith on the SQLite file at path.
func honchoWithAt(t *testing.T, path string, grants []authz.Grant) (context.Context, *authz.Service, *clocktest.Clock) {
	ctx, st, clk, must := historyStoreAt(t, path)
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
		for _, id := range []opgate.OperatorID{"OP-ADMIN", "OP-CHIEF", "OP-APPROVER", "OP-A", "OP-C"} {
			o := lifecycle.Operator{ID: id, StaffNumber: string(id), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}
			if id == "OP-C" {
				o.EmploymentType, o.ValidUntil = lifecycle.Contractor, t0.Add(365*24*time.Hour)
			}
			if err := tx.CreateOperator(ctx, o); err != nil {
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

// A role's edit cannot give its present holders what a grant could not:
// a high-risk permission without a second person, a permission only
// regular staff may hold to a contractor, or a conflict with a role a
// holder also holds. A role nobody holds, or an edit that adds nothing
// risky, goes through.
func TestEditingAHeldRole(t *testing.T) {
	ctx, svc, _ := honchoWith(t, []authz.Grant{
		{ID: "G-A1", OperatorID: "OP-A", RoleID: roles.CounterClerk, SiteID: "honcho", Status: authz.Active},
		{ID: "G-A2", OperatorID: "OP-A", RoleID: roles.CounterViewer, SiteID: "honcho", Status: authz.Active},
		{ID: "G-C1", OperatorID: "OP-C", RoleID: roles.CounterViewer, SiteID: "honcho", Status: authz.Active},
		{ID: "G-ADMIN", OperatorID: "OP-ADMIN", RoleID: roles.SecurityAdmin, SiteID: opgate.AllSites, Status: authz.Active},
	})
	admin := authz.Actor{ID: "OP-ADMIN"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	role := func(id opgate.RoleID) roles.Role {
		rs, err := svc.ListRoles(ctx)
		must(err)
		for _, r := range rs {
			if r.ID == id {
				return r
			}
		}
		t.Fatalf("no role %s", id)
		return roles.Role{}
	}
	put := func(r roles.Role) error {
		_, err := svc.PutRole(ctx, admin, r, false)
		return err
	}
	clerk := role(roles.CounterClerk)
	wider := clerk
	wider.Permissions = append(slices.Clone(clerk.Permissions), roles.ResidentReadRestricted)
	if err := put(wider); !errors.Is(err, authz.ErrConflict) {
		t.Errorf("adding a high-risk permission to a held role: %v, want %v", err, authz.ErrConflict)
	}
	wider.Permissions = append(slices.Clone(clerk.Permissions), roles.ReportRead)
	if err := put(wider); err != nil {
		t.Errorf("adding a low-risk permission: %v", err)
	}
	viewer := role(roles.CounterViewer)
	managing := viewer
	managing.Permissions = append(slices.Clone(viewer.Permissions), roles.OperatorManage)
	if err := put(managing); !errors.Is(err, authz.ErrConflict) {
		t.Errorf("giving operator.manage to a contractor's role: %v, want %v", err, authz.ErrConflict)
	}
	viewer.ConflictsWith = append(viewer.ConflictsWith, roles.CounterClerk)
	if err := put(viewer); !errors.Is(err, authz.ErrSoDConflict) {
		t.Errorf("declaring a conflict between two roles one person holds: %v, want %v", err, authz.ErrSoDConflict)
	}
	auditor := role(roles.Auditor)
	auditor.Permissions = append(slices.Clone(auditor.Permissions), roles.ResidentBulkExport)
	if err := put(auditor); err != nil {
		t.Errorf("a role nobody holds: %v", err)
	}
	d, err := svc.Decide(ctx, "OP-A", roles.ResidentReadRestricted, "honcho")
	if err != nil || d.Allowed {
		t.Errorf("after the refused edit, restricted records: %+v, %v; want refused", d, err)
	}
}

// A held grant whose role cannot be read (a row damaged by hand) stops a
// new grant rather than let separation of duties pass it unchecked.
func TestGrantRefusedWhenAHeldRoleCannotBeRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opgate.db")
	ctx, svc, _ := honchoWithAt(t, path, []authz.Grant{
		{ID: "G-A1", OperatorID: "OP-A", RoleID: roles.CounterViewer, SiteID: "honcho", Status: authz.Active},
	})
	// The chief's own rights are read (and kept) before the damage, which
	// is done without moving the roles' version, so that only the held
	// role's read in the grant's transaction meets it.
	if d, err := svc.Decide(ctx, "OP-CHIEF", roles.GrantManage, "honcho"); err != nil || !d.Allowed {
		t.Fatalf("the chief: %+v %v", d, err)
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{`DROP TRIGGER roles_authz_version_update`, `UPDATE roles SET conflicts_with = '{' WHERE role_id = 'counter_viewer'`} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err = svc.Grant(ctx, authz.Actor{ID: "OP-CHIEF"}, authz.GrantRequest{OperatorID: "OP-A", RoleID: roles.CounterClerk, SiteID: "honcho", Reason: "test"})
	if err == nil {
		t.Fatal("granted beside a held role that could not be read")
	}
}
