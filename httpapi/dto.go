package httpapi

import (
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

type siteDTO struct {
	SiteID           opgate.SiteID `json:"site_id"`
	Name             string        `json:"name"`
	MunicipalityCode string        `json:"municipality_code"`
	CreatedAt        Time          `json:"created_at"`
}

func toSiteDTO(s lifecycle.Site) siteDTO {
	return siteDTO{s.ID, s.Name, s.MunicipalityCode, ts(s.CreatedAt)}
}

type terminalDTO struct {
	TerminalID opgate.TerminalID `json:"terminal_id"`
	SiteID     opgate.SiteID     `json:"site_id"`
	Name       string            `json:"name"`
	CreatedAt  Time              `json:"created_at"`
}

func toTerminalDTO(t lifecycle.Terminal) terminalDTO {
	return terminalDTO{t.ID, t.SiteID, t.Name, ts(t.CreatedAt)}
}

type roleDTO struct {
	RoleID        opgate.RoleID       `json:"role_id"`
	Name          string              `json:"name"`
	Permissions   []opgate.Permission `json:"permissions"`
	ConflictsWith []opgate.RoleID     `json:"conflicts_with"`
	HighRisk      bool                `json:"high_risk"`
	BuiltIn       bool                `json:"built_in"`
}

func toRoleDTO(r roles.Role) roleDTO {
	return roleDTO{r.ID, r.Name, nonNil(r.Permissions), nonNil(r.ConflictsWith), r.HighRisk(), r.BuiltIn}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type grantDTO struct {
	GrantID    opgate.GrantID    `json:"grant_id"`
	OperatorID opgate.OperatorID `json:"operator_id"`
	RoleID     opgate.RoleID     `json:"role_id"`
	SiteID     opgate.SiteID     `json:"site_id"`
	Status     authz.GrantStatus `json:"status"`
	GrantedBy  opgate.OperatorID `json:"granted_by"`
	ApprovedBy *string           `json:"approved_by"`
	Reason     string            `json:"reason"`
	CreatedAt  Time              `json:"created_at"`
	ValidFrom  Time              `json:"valid_from"`
	ValidUntil Time              `json:"valid_until"`
	EndedAt    Time              `json:"ended_at"`
	EndedBy    *string           `json:"ended_by"`
	EndReason  string            `json:"end_reason,omitempty"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// toGrantDTO shows the grant as it stands now: an active grant past
// valid_until is expired from that instant, whether or not the sweep has
// marked it yet.
func toGrantDTO(g authz.Grant, now time.Time) grantDTO {
	status := g.Status
	if status == authz.Active && !g.ValidUntil.IsZero() && !now.Before(g.ValidUntil) {
		status = authz.Expired
	}
	return grantDTO{g.ID, g.OperatorID, g.RoleID, g.SiteID, status, g.GrantedBy, optional(string(g.ApprovedBy)), g.Reason,
		ts(g.CreatedAt), ts(g.ValidFrom), ts(g.ValidUntil), ts(g.EndedAt), optional(string(g.EndedBy)), g.EndReason}
}

type cardDTO struct {
	CardID         opgate.CardID    `json:"card_id"`
	CardSerial     string           `json:"card_serial"`
	Label          string           `json:"label"`
	Status         authn.CardStatus `json:"status"`
	EnrolledAt     Time             `json:"enrolled_at"`
	StatusChanged  Time             `json:"status_changed_at"`
	AAGUID         string           `json:"aaguid,omitempty"`
	CloneSuspected bool             `json:"clone_suspected"`
}

func toCardDTO(c authn.Card) cardDTO {
	return cardDTO{c.ID, c.Serial, c.Label, c.Status, ts(c.EnrolledAt), ts(c.StatusChanged), aaguid(c.AAGUID), c.CloneSuspected}
}

func aaguid(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

type operatorDTO struct {
	OperatorID        opgate.OperatorID        `json:"operator_id"`
	StaffNumber       string                   `json:"staff_number"`
	Name              string                   `json:"name"`
	SiteID            opgate.SiteID            `json:"site_id"`
	EmploymentType    lifecycle.EmploymentType `json:"employment_type"`
	Status            lifecycle.Status         `json:"status"`
	ValidUntil        Time                     `json:"valid_until"`
	LockedUntil       Time                     `json:"locked_until"`
	LockPermanent     bool                     `json:"lock_permanent"`
	PasswordExpiresAt Time                     `json:"password_expires_at"`
	LastLoginAt       Time                     `json:"last_login_at"`
	IssuedAt          Time                     `json:"issued_at"`
	IssuedBy          *string                  `json:"issued_by"`
	// Cards and Grants are shown on the operator's own page, not in
	// lists: nil leaves them out, an empty list shows [].
	Cards  *[]cardDTO  `json:"cards,omitempty"`
	Grants *[]grantDTO `json:"grants,omitempty"`
}

func toOperatorDTO(o lifecycle.Operator, l lifecycle.Lock, now time.Time) operatorDTO {
	d := operatorDTO{OperatorID: o.ID, StaffNumber: o.StaffNumber, Name: o.Name, SiteID: o.SiteID, EmploymentType: o.EmploymentType,
		Status: lifecycle.DisplayStatus(o, l, now), ValidUntil: ts(o.ValidUntil), LockPermanent: l.Permanent,
		LastLoginAt: ts(o.LastLoginAt), IssuedAt: ts(o.IssuedAt), IssuedBy: optional(string(o.IssuedBy))}
	if l.Locked(now) && !l.Permanent {
		d.LockedUntil = ts(l.Until)
	}
	return d
}

type changeDTO struct {
	ChangeID    opgate.ChangeID        `json:"change_id"`
	OperatorID  opgate.OperatorID      `json:"operator_id"`
	Kind        lifecycle.ChangeKind   `json:"kind"`
	ToSiteID    *string                `json:"to_site_id"`
	Reason      string                 `json:"reason"`
	EffectiveAt Time                   `json:"effective_at"`
	CreatedBy   opgate.OperatorID      `json:"created_by"`
	CreatedAt   Time                   `json:"created_at"`
	Status      lifecycle.ChangeStatus `json:"status"`
	DoneAt      Time                   `json:"done_at"`
	Error       string                 `json:"error,omitempty"`
}

func toChangeDTO(c lifecycle.Change) changeDTO {
	return changeDTO{c.ID, c.OperatorID, c.Kind, optional(string(c.ToSiteID)), c.Reason, ts(c.EffectiveAt), c.CreatedBy,
		ts(c.CreatedAt), c.Status, ts(c.DoneAt), c.Error}
}

type eventDTO struct {
	Seq        int64           `json:"seq"`
	At         Time            `json:"at"`
	Type       audit.Type      `json:"type"`
	ActorID    *string         `json:"actor_id"`
	OperatorID *string         `json:"operator_id"`
	SiteID     *string         `json:"site_id"`
	TerminalID *string         `json:"terminal_id"`
	Resource   string          `json:"resource"`
	Reason     string          `json:"reason"`
	Data       json.RawMessage `json:"data"`
	PrevHash   string          `json:"prev_hash"`
	Hash       string          `json:"hash"`
}

func toEventDTO(e audit.Event) eventDTO {
	data := json.RawMessage(e.Data)
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return eventDTO{e.Seq, ts(e.At), e.Type, optional(string(e.ActorID)), optional(string(e.OperatorID)), optional(string(e.SiteID)),
		optional(string(e.TerminalID)), e.Resource, e.Reason, data, hex.EncodeToString(e.PrevHash), hex.EncodeToString(e.Hash)}
}
