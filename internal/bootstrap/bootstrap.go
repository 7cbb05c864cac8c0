// Package bootstrap sets up an empty store: the first site, its first
// terminal, the built-in roles and the first operator, who holds
// security_admin at every site, with a one-time temporary password and a
// card enrollment code. It runs once; a second run changes nothing.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

// ErrAlreadyDone is returned when the store is not empty.
var ErrAlreadyDone = errors.New("bootstrap: the store already has operators; bootstrap runs only once, on an empty store")

// Params are the bootstrap's inputs.
type Params struct {
	SiteID           opgate.SiteID
	SiteName         string
	MunicipalityCode string
	TerminalID       opgate.TerminalID
	StaffNumber      string
	Name             string
}

// Result is printed once and never stored in clear.
type Result struct {
	OperatorID        opgate.OperatorID
	TemporaryPassword string
	EnrollmentCode    string
	EnrollmentExpires time.Time
}

// EnrollmentTTL is how long the first operator's enrollment code lives:
// longer than an ordinary one (15 min), since the first card is enrolled
// when the server is first reached, not at a chief's side.
const EnrollmentTTL = 24 * time.Hour

const metaKey = "bootstrapped_at"

// Run bootstraps s in one transaction.
func Run(ctx context.Context, s store.Store, clk clock.Clock, p Params) (Result, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if p.TerminalID == "" {
		p.TerminalID = "admin-console"
	}
	lc, err := lifecycle.New(lifecycle.Config{DB: store.Runner[lifecycle.Tx]{S: s}, Authorizer: lifecycle.AllowAll{}, Clock: clk})
	if err != nil {
		return Result{}, err
	}
	now := clk.Now()
	var res Result
	tempPW := authn.NewTemporaryPassword()
	hash, err := authn.HashPassword(tempPW, authn.DefaultPasswordParams)
	if err != nil {
		return Result{}, err
	}
	code := authn.NewEnrollmentCode()
	err = s.InTx(ctx, func(tx store.Tx) error {
		if n, err := tx.CountOperators(ctx); err != nil || n > 0 {
			if err == nil {
				err = ErrAlreadyDone
			}
			return err
		}
		if err := tx.PutMeta(ctx, metaKey, now.Format(time.RFC3339Nano)); err != nil {
			if errors.Is(err, opgate.ErrConflict) {
				return ErrAlreadyDone
			}
			return err
		}
		if err := validate(p); err != nil {
			return err
		}
		site := lifecycle.Site{ID: p.SiteID, Name: p.SiteName, MunicipalityCode: p.MunicipalityCode, CreatedAt: now}
		if err := tx.CreateSite(ctx, site); err != nil {
			return err
		}
		if err := tx.CreateTerminal(ctx, lifecycle.Terminal{ID: p.TerminalID, SiteID: p.SiteID, Name: "管理端末 (administration console)", CreatedAt: now}); err != nil {
			return err
		}
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.PutPolicy(ctx, policy.Default(), now, ""); err != nil {
			return err
		}
		o, err := lc.IssueIn(ctx, tx, lifecycle.Actor{}, lifecycle.Operator{StaffNumber: p.StaffNumber, Name: p.Name, SiteID: p.SiteID,
			EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now})
		if err != nil {
			return err
		}
		res.OperatorID = o.ID
		g := authz.Grant{ID: opgate.GrantID(lifecycle.NewID("G-", 16)), OperatorID: o.ID, RoleID: roles.SecurityAdmin, SiteID: opgate.AllSites,
			Status: authz.Active, Reason: "bootstrap", CreatedAt: now, ValidFrom: now}
		if err := tx.CreateGrant(ctx, g); err != nil {
			return err
		}
		// A temporary password expires at once: it must be changed at
		// first login (CL 11-3).
		if err := tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: o.ID, Hash: hash, Temporary: true, SetAt: now, ExpiresAt: now}); err != nil {
			return err
		}
		res.EnrollmentCode, res.EnrollmentExpires = code, now.Add(EnrollmentTTL)
		if err := tx.CreateEnrollment(ctx, authn.Enrollment{CodeHash: authn.EnrollmentCodeHash(code), OperatorID: o.ID, CardSerial: "bootstrap",
			Label: "first card", CreatedAt: now, ExpiresAt: res.EnrollmentExpires}); err != nil {
			return err
		}
		for _, e := range []audit.Event{
			{Type: audit.SiteCreated, SiteID: site.ID, Resource: "site:" + string(site.ID), Data: audit.D(map[string]any{"name": site.Name, "municipality_code": site.MunicipalityCode})},
			{Type: audit.TerminalRegistered, SiteID: site.ID, TerminalID: p.TerminalID, Resource: "terminal:" + string(p.TerminalID)},
			{Type: audit.GrantApproved, OperatorID: o.ID, SiteID: opgate.AllSites, Resource: "grant:" + string(g.ID), Reason: "bootstrap",
				Data: audit.D(map[string]any{"role_id": string(g.RoleID), "status": string(g.Status)})},
			{Type: audit.PasswordReset, OperatorID: o.ID, Resource: "operator:" + string(o.ID), Reason: "bootstrap", Data: audit.D(map[string]any{"temporary": true})},
			{Type: audit.CardEnrollmentStarted, OperatorID: o.ID, Resource: "operator:" + string(o.ID), Reason: "bootstrap",
				Data: audit.D(map[string]any{"expires_at": res.EnrollmentExpires.Format(time.RFC3339)})},
			{Type: audit.SystemBootstrapped, OperatorID: o.ID, SiteID: site.ID, Resource: "system", Reason: "bootstrap"},
		} {
			e.At = now
			if _, err := tx.AppendAudit(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	res.TemporaryPassword = tempPW
	return res, nil
}

func validate(p Params) error {
	var errs []error
	if !roles.ValidID(string(p.SiteID)) {
		errs = append(errs, errors.New("--site-id must match ^[a-z0-9][a-z0-9_-]{1,62}$"))
	}
	if !roles.ValidID(string(p.TerminalID)) {
		errs = append(errs, errors.New("--terminal-id must match ^[a-z0-9][a-z0-9_-]{1,62}$"))
	}
	if p.SiteName == "" {
		errs = append(errs, errors.New("--site-name is required"))
	}
	if len(p.MunicipalityCode) != 6 {
		errs = append(errs, errors.New("--municipality must be the 6-digit local government code"))
	}
	for _, c := range p.MunicipalityCode {
		if c < '0' || c > '9' {
			errs = append(errs, errors.New("--municipality must be digits"))
			break
		}
	}
	if p.StaffNumber == "" {
		errs = append(errs, errors.New("--staff-number is required"))
	}
	if p.Name == "" {
		errs = append(errs, errors.New("--name is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}
