// Package demo fills an empty store with a demonstration municipality: two
// sites, their terminals, and operators in every role (a security
// administrator, an auditor, two section chiefs, counter staff), each with
// a password that the policy admits for these operators only, so that a
// newcomer can click through the pages without an IC card. It is used by
// `opgate serve --demo` on a fresh SQLite file, never on a real store.
package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/bootstrap"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// Password is every demonstration operator's password. It is printed at
// start; the demonstration store lives in a temporary directory.
const Password = "demo-2026-opgate"

// Operator is one demonstration operator.
type Operator struct {
	ID       opgate.OperatorID
	Name     string
	Role     opgate.RoleID
	SiteID   opgate.SiteID
	Terminal opgate.TerminalID
}

// Result is what the demonstration prints.
type Result struct {
	Operators      []Operator
	EnrollmentCode string // the administrator's card enrollment code
}

// Services are the wired services the demonstration acts through, so that
// its history reads like a real set-up.
type Services struct {
	Lifecycle *lifecycle.Service
	Authz     *authz.Service
	Policies  *policy.Source
}

type person struct {
	staff, name string
	site        opgate.SiteID
	typ         lifecycle.EmploymentType
	role        opgate.RoleID
	terminal    opgate.TerminalID
}

// Seed sets up the demonstration on an empty store.
func Seed(ctx context.Context, st store.Store, sv Services, clk clock.Clock, params authn.PasswordParams) (Result, error) {
	boot, err := bootstrap.Run(ctx, st, clk, bootstrap.Params{SiteID: "honcho", SiteName: "本町市民課", MunicipalityCode: "132152",
		TerminalID: "admin-console", StaffNumber: "0001", Name: "管理 花子"})
	if err != nil {
		return Result{}, err
	}
	admin := lifecycle.Actor{ID: boot.OperatorID, TerminalID: "admin-console"}
	res := Result{EnrollmentCode: boot.EnrollmentCode,
		Operators: []Operator{{ID: boot.OperatorID, Name: "管理 花子", Role: roles.SecurityAdmin, SiteID: "honcho", Terminal: "admin-console"}}}
	if _, err := sv.Lifecycle.CreateSite(ctx, admin, lifecycle.Site{ID: "kita", Name: "北支所", MunicipalityCode: "132152"}); err != nil {
		return res, err
	}
	for _, t := range []lifecycle.Terminal{
		{ID: "honcho-cs01", SiteID: "honcho", Name: "本町 窓口1"},
		{ID: "honcho-cs02", SiteID: "honcho", Name: "本町 窓口2"},
		{ID: "kita-cs01", SiteID: "kita", Name: "北支所 窓口1"},
	} {
		if _, err := sv.Lifecycle.RegisterTerminal(ctx, admin, t); err != nil {
			return res, err
		}
	}
	until := clk.Now().AddDate(1, 0, 0)
	people := []person{
		{"0002", "監査 一郎", "honcho", lifecycle.Regular, roles.Auditor, "admin-console"},
		{"1001", "本町 課長", "honcho", lifecycle.Regular, roles.SectionChief, "honcho-cs01"},
		{"1002", "本町 課長補佐", "honcho", lifecycle.Regular, roles.SectionChief, "honcho-cs01"},
		{"2001", "窓口 太郎", "honcho", lifecycle.Regular, roles.CounterClerk, "honcho-cs01"},
		{"2002", "窓口 次子", "honcho", lifecycle.PartTime, roles.CounterViewer, "honcho-cs02"},
		{"3001", "北 三郎", "kita", lifecycle.Regular, roles.CounterClerk, "kita-cs01"},
	}
	for _, p := range people {
		var vu time.Time
		if p.typ != lifecycle.Regular {
			vu = until
		}
		o, err := sv.Lifecycle.Issue(ctx, admin, lifecycle.IssueRequest{StaffNumber: p.staff, Name: p.name, SiteID: p.site, EmploymentType: p.typ, ValidUntil: vu})
		if err != nil {
			return res, fmt.Errorf("demo: issue %s: %w", p.name, err)
		}
		site := p.site
		if p.role == roles.Auditor {
			site = opgate.AllSites
		}
		if _, err := sv.Authz.Grant(ctx, admin, authz.GrantRequest{OperatorID: o.ID, RoleID: p.role, SiteID: site, Reason: "demonstration", ValidUntil: vu}); err != nil {
			return res, fmt.Errorf("demo: grant %s: %w", p.name, err)
		}
		res.Operators = append(res.Operators, Operator{ID: o.ID, Name: p.name, Role: p.role, SiteID: p.site, Terminal: p.terminal})
	}
	if err := setPasswords(ctx, st, clk, params, res.Operators); err != nil {
		return res, err
	}
	// Passwords alone for these operators only; everybody else needs a card.
	pol, err := sv.Policies.Policy(ctx)
	if err != nil {
		return res, err
	}
	pol.LoginMethods = []string{policy.MethodCard, policy.MethodPassword}
	pol.PasswordOperators = nil
	for _, o := range res.Operators {
		pol.PasswordOperators = append(pol.PasswordOperators, string(o.ID))
	}
	saved, err := policy.Save(ctx, store.Runner[policy.Tx]{S: st}, clk, boot.OperatorID, "admin-console", pol)
	if err != nil {
		return res, err
	}
	sv.Policies.Set(saved)
	return res, nil
}

// setPasswords gives each operator the demonstration password, not to be
// changed at first login, each with its audit event.
func setPasswords(ctx context.Context, st store.Store, clk clock.Clock, params authn.PasswordParams, ops []Operator) error {
	hash, err := authn.HashPassword(Password, params)
	if err != nil {
		return err
	}
	now := clk.Now()
	return st.InTx(ctx, func(tx store.Tx) error {
		for _, o := range ops {
			if err := tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: o.ID, Hash: hash, SetAt: now, ExpiresAt: now.AddDate(0, 3, 0)}); err != nil {
				return err
			}
			if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.PasswordReset, At: now, OperatorID: o.ID, SiteID: o.SiteID,
				Resource: "operator:" + string(o.ID), Reason: "demonstration password"}); err != nil {
				return err
			}
		}
		return nil
	})
}
