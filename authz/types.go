package authz

import (
	"time"

	"github.com/opgate/opgate"
)

// GrantStatus is where a grant stands.
type GrantStatus string

// Grant states (API.md).
const (
	PendingApproval GrantStatus = "pending_approval"
	Active          GrantStatus = "active"
	Revoked         GrantStatus = "revoked"
	Expired         GrantStatus = "expired"
)

// Grant is one role given to one operator at one site.
type Grant struct {
	ID         opgate.GrantID
	OperatorID opgate.OperatorID
	RoleID     opgate.RoleID
	SiteID     opgate.SiteID
	Status     GrantStatus
	GrantedBy  opgate.OperatorID
	ApprovedBy opgate.OperatorID
	Reason     string
	CreatedAt  time.Time
	ValidFrom  time.Time // when it began to count (approval time for high-risk roles)
	ValidUntil time.Time // zero: no end
	EndedAt    time.Time // revoked or expired at
	EndedBy    opgate.OperatorID
	EndReason  string
}

// Live reports whether the grant counts at now. Time-bound grants stop at
// ValidUntil on the very next decision, whether or not the scheduler has
// marked them expired yet.
func (g Grant) Live(now time.Time) bool {
	return g.Status == Active && !now.Before(g.ValidFrom) && (g.ValidUntil.IsZero() || now.Before(g.ValidUntil))
}

// LiveAt reports whether the grant counted at an instant in the past,
// from its own dates: used for "what could operator X do on date D".
func (g Grant) LiveAt(at time.Time) bool {
	if g.ValidFrom.IsZero() || at.Before(g.ValidFrom) {
		return false
	}
	if !g.ValidUntil.IsZero() && !at.Before(g.ValidUntil) {
		return false
	}
	if !g.EndedAt.IsZero() && !at.Before(g.EndedAt) {
		return false
	}
	return g.Status != PendingApproval
}

// GrantFilter selects grants; zero fields do not filter.
type GrantFilter struct {
	OperatorID opgate.OperatorID
	RoleID     opgate.RoleID
	SiteID     opgate.SiteID
	Status     GrantStatus
	After      opgate.GrantID
	Limit      int
}

// ApprovalStatus is where a per-use approval stands.
type ApprovalStatus string

// Approval states. An approved approval is used once, by the decision that
// allows the action.
const (
	ApprovalPending  ApprovalStatus = "pending"
	ApprovalApproved ApprovalStatus = "approved"
	ApprovalUsed     ApprovalStatus = "used"
)

// Approval is a per-use approval of bulk output (R3.6).
type Approval struct {
	ID          string
	Action      opgate.Permission
	SiteID      opgate.SiteID
	RequestedBy opgate.OperatorID
	Reason      string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	Status      ApprovalStatus
	ApprovedBy  opgate.OperatorID
	ApprovedAt  time.Time
	UsedAt      time.Time
	UsedBy      string // the decision that used it
}
