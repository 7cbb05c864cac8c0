package authz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// world is a random data set: roles, operators and grants of every status,
// with dates around t0.
type world struct {
	t0      time.Time
	roles   []roles.Role
	ops     []lifecycle.Operator
	grants  []Grant // sorted by ID, as the store lists them
	sites   []opgate.SiteID
	perms   []opgate.Permission // the catalog and one unknown permission
	roleIDs []opgate.RoleID     // including one that no role has
}

func randomWorld(r *rand.Rand, nOps, nGrants int) *world {
	w := &world{t0: time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC), sites: []opgate.SiteID{"honcho", "kita", "minami", opgate.AllSites}}
	w.roles = roles.BuiltIn()
	for _, e := range roles.Catalog() {
		w.perms = append(w.perms, e.Permission)
	}
	for i := range 4 {
		var ps []opgate.Permission
		for _, p := range w.perms {
			if r.IntN(4) == 0 {
				ps = append(ps, p)
			}
		}
		w.roles = append(w.roles, roles.Role{ID: opgate.RoleID(fmt.Sprintf("custom-%d", i)), Name: "custom", Permissions: ps})
	}
	for _, rl := range w.roles {
		w.roleIDs = append(w.roleIDs, rl.ID)
	}
	w.roleIDs = append(w.roleIDs, "deleted-role")
	w.perms = append(w.perms, "resident.delete_everything")
	statuses := []lifecycle.Status{lifecycle.Active, lifecycle.Active, lifecycle.Active, lifecycle.Suspended, lifecycle.Retired, lifecycle.Expired}
	for i := range nOps {
		o := lifecycle.Operator{ID: opgate.OperatorID(fmt.Sprintf("OP-%04d", i)), Status: statuses[r.IntN(len(statuses))], SiteID: w.sites[r.IntN(3)]}
		if r.IntN(3) == 0 {
			o.ValidUntil = w.instant(r)
		}
		w.ops = append(w.ops, o)
	}
	gStatuses := []GrantStatus{Active, Active, Active, Revoked, Expired, PendingApproval}
	for i := range nGrants {
		g := Grant{ID: opgate.GrantID(fmt.Sprintf("G-%06d", r.IntN(1_000_000))) + opgate.GrantID(fmt.Sprint(i)),
			OperatorID: w.ops[r.IntN(len(w.ops))].ID, RoleID: w.roleIDs[r.IntN(len(w.roleIDs))], SiteID: w.sites[r.IntN(len(w.sites))],
			Status: gStatuses[r.IntN(len(gStatuses))]}
		if r.IntN(8) != 0 {
			g.ValidFrom = w.instant(r)
		}
		if r.IntN(2) == 0 {
			g.ValidUntil = w.instant(r)
		}
		w.grants = append(w.grants, g)
	}
	slices.SortFunc(w.grants, func(a, b Grant) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return w
}

// instant is a time within twenty minutes of t0, often on a whole minute
// so that decisions fall exactly on validity edges, else anywhere to the
// nanosecond.
func (w *world) instant(r *rand.Rand) time.Time {
	t := w.t0.Add(time.Duration(r.IntN(40)-20) * time.Minute)
	if r.IntN(2) == 0 {
		t = t.Add(time.Duration(r.Int64N(int64(time.Minute))))
	}
	return t
}

func (w *world) state(rolesVersion int64) State {
	st := State{RolesVersion: rolesVersion, Roles: w.roles}
	for i, o := range w.ops {
		st.Operators = append(st.Operators, OperatorState{ID: o.ID, Status: o.Status, ValidUntil: o.ValidUntil, Version: int64(i)})
	}
	for _, g := range w.grants {
		if g.Status == Active {
			st.Grants = append(st.Grants, g)
		}
	}
	// The bulk read gives grants in no particular order.
	rand.Shuffle(len(st.Grants), func(i, j int) { st.Grants[i], st.Grants[j] = st.Grants[j], st.Grants[i] })
	return st
}

func (w *world) input(op opgate.OperatorID) Input {
	in := Input{Roles: map[opgate.RoleID]roles.Role{}}
	for _, r := range w.roles {
		in.Roles[r.ID] = r
	}
	if i := slices.IndexFunc(w.ops, func(o lifecycle.Operator) bool { return o.ID == op }); i >= 0 {
		in.Operator = w.ops[i]
	}
	for _, g := range w.grants {
		if g.OperatorID == op && g.Status == Active {
			in.Grants = append(in.Grants, g)
		}
	}
	return in
}

// TestIndexMatchesDecide: over random operators, grants of every status,
// roles and instants, the index answers exactly as Decide, the
// specification, and an allowing answer always names an active grant live
// at that instant whose role holds the permission.
func TestIndexMatchesDecide(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 42))
		w := randomWorld(r, 60, 400)
		x := NewIndex()
		x.Load(w.state(1))
		inputs := map[opgate.OperatorID]Input{}
		for i := range 3000 {
			op := opgate.OperatorID("OP-unknown")
			if i%20 != 0 {
				op = w.ops[r.IntN(len(w.ops))].ID
			}
			in, ok := inputs[op]
			if !ok {
				in = w.input(op)
				inputs[op] = in
			}
			in.Permission, in.Site, in.Now = w.perms[r.IntN(len(w.perms))], w.sites[r.IntN(len(w.sites))], w.instant(r)
			want := Decide(in)
			got := x.Decide(op, in.Permission, in.Site, in.Now)
			if got != want {
				t.Fatalf("seed %d: %s %s at %s, %s: index %+v, Decide %+v", seed, op, in.Permission, in.Site, in.Now, got, want)
			}
			if got.Allowed {
				g := w.grants[slices.IndexFunc(w.grants, func(g Grant) bool { return g.ID == got.GrantID })]
				if g.Status != Active || !g.Live(in.Now) || g.OperatorID != op || !in.Roles[g.RoleID].Has(in.Permission) {
					t.Fatalf("seed %d: allowed by %+v", seed, g)
				}
			}
		}
	}
}

// TestIndexFollowsRoles: a new version of the roles applies to every
// entry, without reloading operators.
func TestIndexFollowsRoles(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	w := randomWorld(r, 30, 200)
	x := NewIndex()
	x.Load(w.state(1))
	// Every custom role now gives exactly resident.read; counter_clerk is gone.
	changed := slices.Clone(w.roles)
	changed = slices.DeleteFunc(changed, func(rl roles.Role) bool { return rl.ID == roles.CounterClerk })
	for i := range changed {
		if !changed[i].BuiltIn {
			changed[i].Permissions = []opgate.Permission{roles.ResidentRead}
		}
	}
	x.roles.Store(newRoleSet(2, changed))
	w.roles = changed
	for range 2000 {
		op := w.ops[r.IntN(len(w.ops))].ID
		in := w.input(op)
		in.Permission, in.Site, in.Now = w.perms[r.IntN(len(w.perms))], w.sites[r.IntN(len(w.sites))], w.instant(r)
		if got, want := x.Decide(op, in.Permission, in.Site, in.Now), Decide(in); got != want {
			t.Fatalf("%s %s at %s: index %+v, Decide %+v", op, in.Permission, in.Site, got, want)
		}
	}
}
