package authz_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
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
	ctx, st, clk, must := historyStore(t)
	t0 := clk.Now()
	day := 24 * time.Hour
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

// TestRolesAtReplaysHistory: a role that gained the restricted permission
// on day 3 and lost it on day 15 gave it to its holders between those
// days only, whatever it gives today; a role created on day 8 did not
// exist before.
func TestRolesAtReplaysHistory(t *testing.T) {
	ctx, st, clk, must := historyStore(t)
	t0 := clk.Now()
	day := 24 * time.Hour
	must(st.InTx(ctx, func(tx store.Tx) error {
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: t0}); err != nil {
			return err
		}
		for _, id := range []opgate.OperatorID{"OP-ADMIN", "OP-E"} {
			if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: id, StaffNumber: string(id), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}); err != nil {
				return err
			}
		}
		return tx.CreateGrant(ctx, authz.Grant{ID: "G-ADMIN", OperatorID: "OP-ADMIN", RoleID: roles.SecurityAdmin, SiteID: opgate.AllSites,
			Status: authz.Active, ValidFrom: t0, GrantedBy: "OP-SETUP", Reason: "setup", CreatedAt: t0})
	}))
	svc, err := authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: st}, Clock: clk})
	must(err)
	admin := authz.Actor{ID: "OP-ADMIN"}
	put := func(at time.Duration, create bool, perms ...opgate.Permission) {
		t.Helper()
		clk.Set(t0.Add(at))
		_, err := svc.PutRole(ctx, admin, roles.Role{ID: "dv_support", Name: "支援措置", Permissions: perms}, create)
		must(err)
	}
	put(0, true, roles.ResidentRead)
	must(st.InTx(ctx, func(tx store.Tx) error {
		return tx.CreateGrant(ctx, authz.Grant{ID: "G-E", OperatorID: "OP-E", RoleID: "dv_support", SiteID: "honcho",
			Status: authz.Active, ValidFrom: t0.Add(day), GrantedBy: "OP-ADMIN", Reason: "test", CreatedAt: t0})
	}))
	// A held role gains a high-risk permission: the service refuses that
	// today (TestEditingAHeldRole), but a history may hold it from before,
	// or from a store edited by hand, and replay must follow it.
	widen := func(at time.Duration) {
		t.Helper()
		must(st.InTx(ctx, func(tx store.Tx) error {
			old, err := tx.GetRole(ctx, "dv_support")
			if err != nil {
				return err
			}
			r := old
			r.Permissions = []opgate.Permission{roles.ResidentRead, roles.ResidentReadRestricted}
			if err := tx.PutRole(ctx, r); err != nil {
				return err
			}
			data := func(r roles.Role) map[string]any {
				return map[string]any{"name": r.Name, "permissions": r.Permissions, "conflicts_with": r.ConflictsWith}
			}
			_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.RoleChanged, At: t0.Add(at), ActorID: "OP-ADMIN", Resource: "role:dv_support",
				Data: audit.D(map[string]any{"old": data(old), "new": data(r)})})
			return err
		}))
	}
	widen(3 * day)
	clk.Set(t0.Add(8 * day))
	_, err = svc.PutRole(ctx, admin, roles.Role{ID: "late_role", Name: "後発", Permissions: []opgate.Permission{roles.ResidentRead}}, true)
	must(err)
	put(15*day, false, roles.ResidentRead)
	widen(30 * day) // today: gives it again
	clk.Set(t0.Add(40 * day))

	for _, tc := range []struct {
		name string
		at   time.Duration
		want []opgate.OperatorID
	}{
		{"day 2", 2 * day, nil},
		{"day 5", 5 * day, []opgate.OperatorID{"OP-E"}},
		{"at the removal", 15 * day, nil},
		{"day 20", 20 * day, nil},
		{"today", 40 * day, []opgate.OperatorID{"OP-E"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, err := svc.HoldersAt(ctx, roles.ResidentReadRestricted, "honcho", t0.Add(tc.at))
			must(err)
			var got []opgate.OperatorID
			for _, h := range hs {
				got = append(got, h.OperatorID)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
	before, err := svc.RolesAt(ctx, t0.Add(7*day))
	must(err)
	after, err := svc.RolesAt(ctx, t0.Add(9*day))
	must(err)
	if _, ok := before["late_role"]; ok {
		t.Fatal("a role created on day 8 existed on day 7")
	}
	if _, ok := after["late_role"]; !ok {
		t.Fatal("a role created on day 8 missing on day 9")
	}
	if !before[roles.CounterClerk].BuiltIn {
		t.Fatal("built-in roles missing from the past")
	}
}

// historyStore opens an empty SQLite store with a test clock.
func historyStore(t *testing.T) (context.Context, store.Store, *clocktest.Clock, func(error)) {
	t.Helper()
	return historyStoreAt(t, filepath.Join(t.TempDir(), "opgate.db"))
}

// historyStoreAt is historyStore on the file at path.
func historyStoreAt(t *testing.T, path string) (context.Context, store.Store, *clocktest.Clock, func(error)) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	return t.Context(), st, clocktest.New(), must
}
