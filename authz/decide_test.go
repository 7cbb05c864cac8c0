package authz

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

func TestDecide(t *testing.T) {
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	rs := map[opgate.RoleID]roles.Role{}
	for _, r := range roles.BuiltIn() {
		rs[r.ID] = r
	}
	op := lifecycle.Operator{ID: "OP-1", SiteID: "honcho", Status: lifecycle.Active, EmploymentType: lifecycle.Regular}
	grant := func(role opgate.RoleID, site opgate.SiteID, mod func(*Grant)) Grant {
		g := Grant{ID: "G-" + opgate.GrantID(role) + "-" + opgate.GrantID(site), OperatorID: "OP-1", RoleID: role, SiteID: site, Status: Active, ValidFrom: now.Add(-time.Hour)}
		if mod != nil {
			mod(&g)
		}
		return g
	}
	for _, tc := range []struct {
		name   string
		op     lifecycle.Operator
		grants []Grant
		perm   opgate.Permission
		site   opgate.SiteID
		want   Decision
	}{
		{"allowed by a grant at the site", op, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, "honcho",
			Decision{Allowed: true, Reason: ReasonAllowed, GrantID: "G-section_chief-honcho"}},
		{"a grant at every site holds everywhere", op, []Grant{grant(roles.SecurityAdmin, opgate.AllSites, nil)}, roles.GrantManage, "kita",
			Decision{Allowed: true, Reason: ReasonAllowed, GrantID: "G-security_admin-*"}},
		{"asking for every site needs a grant there", op, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, opgate.AllSites,
			Decision{Reason: ReasonOtherSite}},
		{"other site", op, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, "kita", Decision{Reason: ReasonOtherSite}},
		{"no grant gives the permission", op, []Grant{grant(roles.CounterClerk, "honcho", nil)}, roles.OperatorManage, "honcho", Decision{Reason: ReasonNoGrant}},
		{"revoked grant", op, []Grant{grant(roles.SectionChief, "honcho", func(g *Grant) { g.Status = Revoked })}, roles.OperatorManage, "honcho", Decision{Reason: ReasonNoGrant}},
		{"pending grant", op, []Grant{grant(roles.SecurityAdmin, opgate.AllSites, func(g *Grant) { g.Status = PendingApproval })}, roles.GrantManage, "honcho", Decision{Reason: ReasonNoGrant}},
		{"grant past valid_until, not yet swept", op, []Grant{grant(roles.SectionChief, "honcho", func(g *Grant) { g.ValidUntil = now })}, roles.OperatorManage, "honcho", Decision{Reason: ReasonNoGrant}},
		{"grant valid until a moment later", op, []Grant{grant(roles.SectionChief, "honcho", func(g *Grant) { g.ValidUntil = now.Add(time.Microsecond) })}, roles.OperatorManage, "honcho",
			Decision{Allowed: true, Reason: ReasonAllowed, GrantID: "G-section_chief-honcho"}},
		{"grant of someone else", op, []Grant{grant(roles.SectionChief, "honcho", func(g *Grant) { g.OperatorID = "OP-2" })}, roles.OperatorManage, "honcho", Decision{Reason: ReasonNoGrant}},
		{"suspended operator", lifecycle.Operator{ID: "OP-1", Status: lifecycle.Suspended}, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, "honcho", Decision{Reason: ReasonOperatorSuspended}},
		{"retired operator", lifecycle.Operator{ID: "OP-1", Status: lifecycle.Retired}, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, "honcho", Decision{Reason: ReasonOperatorInactive}},
		{"operator past valid_until", lifecycle.Operator{ID: "OP-1", Status: lifecycle.Active, ValidUntil: now}, []Grant{grant(roles.SectionChief, "honcho", nil)}, roles.OperatorManage, "honcho", Decision{Reason: ReasonOperatorInactive}},
		{"unknown operator", lifecycle.Operator{}, nil, roles.OperatorManage, "honcho", Decision{Reason: ReasonUnknownOperator}},
		{"unknown action", op, []Grant{grant(roles.SecurityAdmin, opgate.AllSites, nil)}, "resident.delete_everything", "honcho", Decision{Reason: ReasonUnknownAction}},
		{"security_admin does not serve the counter", op, []Grant{grant(roles.SecurityAdmin, opgate.AllSites, nil)}, roles.ResidentRead, "honcho", Decision{Reason: ReasonNoGrant}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(Input{Operator: tc.op, Grants: tc.grants, Roles: rs, Permission: tc.perm, Site: tc.site, Now: now})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}
