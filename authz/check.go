package authz

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/roles"
)

// Reasons of the counter decision point beyond those of Decide.
const (
	ReasonTerminalSiteMismatch      = "terminal_site_mismatch"
	ReasonRestrictedNeedsPermission = "restricted_needs_permission"
	ReasonPurposeRequired           = "purpose_required"
	ReasonApprovalRequired          = "approval_required"
)

// Resource is the record a counter screen is about to touch.
type Resource struct {
	Type       string
	ID         string
	SiteID     opgate.SiteID
	Restricted bool // under DV/stalker victim support measures (R3.5)
}

// CheckRequest is one question of a counter terminal: may this session's
// operator do Action on Resource, here, now?
type CheckRequest struct {
	OperatorID opgate.OperatorID
	SessionID  opgate.SessionID
	TerminalID opgate.TerminalID
	// TerminalSite is the site of the session's terminal.
	TerminalSite opgate.SiteID
	Action       opgate.Permission
	Resource     Resource
	Purpose      string
	ApprovalID   string
}

// Checked is a recorded decision.
type Checked struct {
	Decision
	ID string
	At time.Time
}

// Check answers a counter terminal's question with every condition of
// the decision point (R3.4, R3.5, R3.6) and records the decision in the
// history before answering: every check, allowed or refused, is an
// authz.decided event committed with group commit, so durability does not
// cost a commit per decision.
func (s *Service) Check(ctx context.Context, r CheckRequest, restrictedNeedsPurpose bool) (Checked, error) {
	now := s.clk.Now()
	out := Checked{ID: newDecisionID(), At: now}
	// The transaction runs on the committer every writer waits for, so
	// what need not run there does not: the decision the index holds now
	// is judged and its record encoded beforehand, and kept if the
	// decision made on the store's versions inside comes out the same.
	var guess Decision
	var guessed []byte
	if rs := s.idx.roles.Load(); rs != nil && r.Action != roles.ResidentBulkExport {
		if cached, ok := s.idx.get(r.OperatorID); ok {
			guess = s.judge(cached.withRoles(rs), r, now, restrictedNeedsPurpose)
			guessed = decisionData(out.ID, r, guess)
		}
	}
	var publish func()
	err := s.db.InTx(ctx, func(tx Tx) error {
		e, p, err := s.fresh(ctx, tx, r.OperatorID)
		if err != nil {
			return err
		}
		publish = p
		d := s.judge(e, r, now, restrictedNeedsPurpose)
		if d.Allowed && r.Action == roles.ResidentBulkExport {
			// Bulk output needs a prior, per-use approval by the
			// responsible manager (R3.6), used up by this decision: of
			// concurrent checks naming one approval, one is allowed.
			used := false
			if r.ApprovalID != "" {
				if used, err = tx.UseApproval(ctx, r.ApprovalID, r.OperatorID, r.Action, r.Resource.SiteID, out.ID, now); err != nil {
					return err
				}
			}
			if !used {
				d = Decision{Reason: ReasonApprovalRequired}
			}
		}
		out.Decision = d
		data := guessed
		if data == nil || d != guess {
			data = decisionData(out.ID, r, d)
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.AuthzDecided, At: now, ActorID: r.OperatorID, OperatorID: r.OperatorID,
			SiteID: r.Resource.SiteID, TerminalID: r.TerminalID, Resource: r.Resource.Type + ":" + r.Resource.ID, Reason: d.Reason, Data: data})
		return err
	})
	if err == nil {
		publish()
	}
	return out, err
}

// judge is every condition of the decision point but the use of a bulk
// export's approval, which only the transaction can take.
func (s *Service) judge(e *entry, r CheckRequest, now time.Time, restrictedNeedsPurpose bool) Decision {
	sites := s.idx.sites.Load()
	d := e.decide(r.Action, r.Resource.SiteID, now, sites)
	switch {
	case !d.Allowed:
	case r.TerminalSite != r.Resource.SiteID:
		// The record is served at the counter of its own site only.
		d = Decision{Reason: ReasonTerminalSiteMismatch}
	case r.Resource.Restricted && !e.decide(roles.ResidentReadRestricted, r.Resource.SiteID, now, sites).Allowed:
		d = Decision{Reason: ReasonRestrictedNeedsPermission}
	case r.Resource.Restricted && restrictedNeedsPurpose && r.Purpose == "":
		d = Decision{Reason: ReasonPurposeRequired}
	}
	return d
}

// decisionData is what an authz.decided event records beside its columns.
func decisionData(id string, r CheckRequest, d Decision) []byte {
	data := map[string]any{"decision_id": id, "action": string(r.Action), "resource_type": r.Resource.Type,
		"resource_site_id": string(r.Resource.SiteID), "restricted": r.Resource.Restricted, "allowed": d.Allowed,
		"reason": d.Reason, "session_id": string(r.SessionID)}
	if r.Purpose != "" {
		data["purpose"] = r.Purpose
	}
	if d.GrantID != "" {
		data["grant_id"] = string(d.GrantID)
	}
	if r.ApprovalID != "" {
		data["approval_id"] = r.ApprovalID
	}
	return audit.D(data)
}

func newDecisionID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "D-" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// ApprovalTTL is how long a per-use approval may wait to be used.
const ApprovalTTL = time.Hour

// RequestApproval asks for a per-use approval of action at site; the
// requester must hold the action there.
func (s *Service) RequestApproval(ctx context.Context, a Actor, action opgate.Permission, site opgate.SiteID, reason string) (Approval, error) {
	var fe []FieldError
	if action != roles.ResidentBulkExport {
		fe = append(fe, FieldError{"action", "only resident.bulk_export needs a per-use approval"})
	}
	if !roles.ValidID(string(site)) {
		fe = append(fe, FieldError{"site_id", "a site ID"})
	}
	if reason == "" || len(reason) > 1000 {
		fe = append(fe, FieldError{"reason", "required, at most 1000 bytes"})
	}
	if fe != nil {
		return Approval{}, &ValidationError{Fields: fe}
	}
	if err := s.Require(ctx, a.ID, action, site); err != nil {
		return Approval{}, err
	}
	now := s.clk.Now()
	ap := Approval{ID: "AP-" + newDecisionID()[2:], Action: action, SiteID: site, RequestedBy: a.ID, Reason: reason,
		CreatedAt: now, ExpiresAt: now.Add(ApprovalTTL), Status: ApprovalPending}
	err := s.db.InTx(ctx, func(tx Tx) error {
		if err := tx.CreateApproval(ctx, ap); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ApprovalRequested, At: now, ActorID: a.ID, OperatorID: a.ID, SiteID: site,
			TerminalID: a.TerminalID, Resource: "approval:" + ap.ID, Reason: reason, Data: audit.D(map[string]any{"action": string(action)})})
		return err
	})
	return ap, err
}

// ApproveApproval approves a pending request: a different person than the
// requester, holding grant.approve (or grant.manage) at its site.
func (s *Service) ApproveApproval(ctx context.Context, a Actor, id, reason string) (Approval, error) {
	var ap Approval
	err := s.db.View(ctx, func(tx Tx) (err error) { ap, err = tx.GetApproval(ctx, id); return })
	if err != nil && !errors.Is(err, opgate.ErrNotFound) {
		return ap, err
	}
	allowed := ap.ID != "" && (s.Require(ctx, a.ID, roles.GrantApprove, ap.SiteID) == nil || s.Require(ctx, a.ID, roles.GrantManage, ap.SiteID) == nil)
	if !allowed {
		if s.Require(ctx, a.ID, roles.GrantApprove, opgate.AllSites) == nil || s.Require(ctx, a.ID, roles.GrantManage, opgate.AllSites) == nil {
			return Approval{}, ErrNotFound
		}
		return Approval{}, ErrForbidden
	}
	if ap.RequestedBy == a.ID {
		return ap, ErrSelfGrant
	}
	now := s.clk.Now()
	err = s.db.InTx(ctx, func(tx Tx) error {
		if err := tx.ApproveApproval(ctx, id, a.ID, now); err != nil {
			if errors.Is(err, opgate.ErrNotFound) {
				return fmt.Errorf("%w: the approval is not pending", ErrConflict)
			}
			return err
		}
		if ap, err = tx.GetApproval(ctx, id); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ApprovalApproved, At: now, ActorID: a.ID, OperatorID: ap.RequestedBy, SiteID: ap.SiteID,
			TerminalID: a.TerminalID, Resource: "approval:" + id, Reason: reason, Data: audit.D(map[string]any{"action": string(ap.Action)})})
		return err
	})
	return ap, err
}
