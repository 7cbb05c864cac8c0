package httpapi

import (
	"net/http"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/roles"
)

func (s *Server) registerCheck() {
	s.handle("POST", "/v1/authz/check", bearer, "", s.authzCheck)
	s.handle("POST", "/v1/approvals", bearer, "", s.requestApproval)
	s.handle("POST", "/v1/approvals/{id}/approve", bearer, "", s.approveApproval)
	s.handle("GET", "/v1/reports/holders", bearer, roles.ReportRead, s.holdersReport)
}

type approvalDTO struct {
	ApprovalID  string            `json:"approval_id"`
	Action      opgate.Permission `json:"action"`
	SiteID      opgate.SiteID     `json:"site_id"`
	Status      string            `json:"status"`
	RequestedBy opgate.OperatorID `json:"requested_by"`
	ApprovedBy  *string           `json:"approved_by"`
	Reason      string            `json:"reason"`
	CreatedAt   Time              `json:"created_at"`
	ExpiresAt   Time              `json:"expires_at"`
}

func toApprovalDTO(a authz.Approval) approvalDTO {
	return approvalDTO{a.ID, a.Action, a.SiteID, string(a.Status), a.RequestedBy, optional(string(a.ApprovedBy)), a.Reason, ts(a.CreatedAt), ts(a.ExpiresAt)}
}

func (s *Server) requestApproval(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		Action string        `json:"action"`
		SiteID opgate.SiteID `json:"site_id"`
		Reason string        `json:"reason"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	a, err := s.cfg.Authz.RequestApproval(r.Context(), actorOf(r, p), opgate.Permission(in.Action), in.SiteID, in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toApprovalDTO(a))
}

func (s *Server) approveApproval(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.GrantApprove, roles.GrantManage); err != nil {
		return err
	}
	var in reasonIn
	if err := decode(r, &in, true); err != nil {
		return err
	}
	a, err := s.cfg.Authz.ApproveApproval(r.Context(), actorOf(r, p), r.PathValue("id"), in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toApprovalDTO(a))
}

// authzCheck is the decision point every counter screen asks. A refusal
// is an answer (200), not an error; every answer is recorded first.
func (s *Server) authzCheck(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		Action   string `json:"action"`
		Resource struct {
			Type       string        `json:"type"`
			ID         string        `json:"id"`
			SiteID     opgate.SiteID `json:"site_id"`
			Restricted bool          `json:"restricted"`
		} `json:"resource"`
		Purpose    string `json:"purpose"`
		ApprovalID string `json:"approval_id"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	var fe []fieldError
	if in.Action == "" || len(in.Action) > 64 {
		fe = append(fe, fieldError{"action", "required, at most 64 bytes"})
	}
	if in.Resource.Type == "" || len(in.Resource.Type) > 64 {
		fe = append(fe, fieldError{"resource.type", "required, at most 64 bytes"})
	}
	if in.Resource.ID == "" || len(in.Resource.ID) > 128 {
		fe = append(fe, fieldError{"resource.id", "required, at most 128 bytes"})
	}
	if !roles.ValidID(string(in.Resource.SiteID)) {
		fe = append(fe, fieldError{"resource.site_id", "required, a site ID"})
	}
	if len(in.Purpose) > 500 {
		fe = append(fe, fieldError{"purpose", "at most 500 bytes"})
	}
	if len(in.ApprovalID) > 64 {
		fe = append(fe, fieldError{"approval_id", "at most 64 bytes"})
	}
	if fe != nil {
		return &badRequest{fields: fe}
	}
	pol, err := s.cfg.Policies.Policy(r.Context())
	if err != nil {
		return err
	}
	d, err := s.cfg.Authz.Check(r.Context(), authz.CheckRequest{OperatorID: p.OperatorID, SessionID: p.SessionID, TerminalID: p.TerminalID,
		TerminalSite: p.SiteID, Action: opgate.Permission(in.Action), Resource: authz.Resource{Type: in.Resource.Type, ID: in.Resource.ID,
			SiteID: in.Resource.SiteID, Restricted: in.Resource.Restricted}, Purpose: in.Purpose, ApprovalID: in.ApprovalID}, pol.RestrictedPurposeRequired)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"allowed": d.Allowed, "reason": d.Reason, "decision_id": d.ID, "at": ts(d.At)})
}
