package httpapi

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
)

func (s *Server) register() {
	s.handle("GET", "/healthz", public, "", s.healthz)
	s.handle("GET", "/readyz", public, "", s.readyz)
	s.handle("GET", "/metrics", public, "", func(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
		s.metricsHandler().ServeHTTP(w, r)
		return nil
	})
	s.handle("GET", "/openapi.json", public, "", s.openapi)
	s.handle("GET", "/.well-known/jwks.json", public, "", s.jwks)

	s.handle("GET", "/v1/me", bearerAny, "", s.me)
	s.handle("POST", "/v1/logout", bearerAny, "", s.logout)

	s.handle("GET", "/v1/policy", bearer, "", s.getPolicy)
	s.handle("PUT", "/v1/policy", bearer, roles.PolicyManage, s.putPolicy)

	s.handle("GET", "/v1/sites", bearer, "", s.listSites)
	s.handle("POST", "/v1/sites", bearer, roles.SiteManage, s.createSite)
	s.handle("GET", "/v1/terminals", bearer, roles.TerminalManage, s.listTerminals)
	s.handle("POST", "/v1/terminals", bearer, roles.TerminalManage, s.createTerminal)
	s.handle("DELETE", "/v1/terminals/{id}", bearer, roles.TerminalManage, s.deleteTerminal)

	s.handle("GET", "/v1/permissions", bearer, "", s.listPermissions)
	s.handle("GET", "/v1/roles", bearer, "", s.listRoles)
	s.handle("POST", "/v1/roles", bearer, roles.RoleManage, s.createRole)
	s.handle("PUT", "/v1/roles/{id}", bearer, roles.RoleManage, s.updateRole)

	s.handle("POST", "/v1/operators", bearer, roles.OperatorManage, s.issueOperator)
	s.handle("GET", "/v1/operators", bearer, roles.OperatorManage, s.listOperators)
	s.handle("GET", "/v1/operators/{id}", bearer, roles.OperatorManage, s.getOperator)
	s.handle("POST", "/v1/operators/{id}/transfer", bearer, roles.OperatorManage, s.transfer)
	s.handle("POST", "/v1/operators/{id}/retire", bearer, roles.OperatorManage, s.retire)
	s.handle("POST", "/v1/operators/{id}/suspend", bearer, roles.OperatorManage, s.suspend)
	s.handle("POST", "/v1/operators/{id}/reinstate", bearer, roles.OperatorManage, s.reinstate)
	s.handle("POST", "/v1/operators/{id}/unlock", bearer, roles.OperatorManage, s.unlock)
	s.handle("GET", "/v1/operators/{id}/history", bearer, "", s.operatorHistory)
	s.handle("GET", "/v1/operators/{id}/permissions", bearer, "", s.operatorPermissions)
	s.handle("GET", "/v1/scheduled-changes", bearer, roles.OperatorManage, s.listChanges)
	s.handle("DELETE", "/v1/scheduled-changes/{id}", bearer, roles.OperatorManage, s.cancelChange)

	s.handle("POST", "/v1/operators/{id}/grants", bearer, roles.GrantManage, s.createGrant)
	s.handle("GET", "/v1/grants", bearer, roles.GrantManage, s.listGrants)
	s.handle("POST", "/v1/grants/{id}/approve", bearer, "", s.approveGrant)
	s.handle("POST", "/v1/grants/{id}/revoke", bearer, roles.GrantManage, s.revokeGrant)

	s.handle("GET", "/v1/audit/events", bearer, roles.AuditRead, s.auditEvents)
	s.handle("GET", "/v1/audit/verify", bearer, roles.AuditRead, s.auditVerify)
}

// ---- operability

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ authn.Principal) error {
	return writeJSON(w, 200, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Ready(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready", "error", err.Error())
		return writeJSON(w, 503, map[string]string{"status": "unavailable"})
	}
	return writeJSON(w, 200, map[string]string{"status": "ok"})
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request, _ authn.Principal) error {
	b, err := s.cfg.Sessions.Tokens().JWKS()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	_, err = w.Write(b)
	return err
}

// ---- me

func (s *Server) me(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	o, l, err := s.cfg.Lifecycle.Self(r.Context(), p.OperatorID)
	if err != nil {
		return err
	}
	d := toOperatorDTO(o, l, s.clk.Now())
	// The idle timeout is shown so that a terminal can lock its screen when
	// the server is about to end the session (R2.8).
	pol, err := s.cfg.Policies.Policy(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"operator": d, "session": map[string]any{
		"session_id": p.SessionID, "site_id": p.SiteID, "terminal_id": p.TerminalID, "amr": nonNil(p.AMR),
		"expires_at": ts(p.ExpiresAt), "password_change_required": p.PasswordChangeRequired,
		"idle_timeout_s": int64(pol.Session.IdleTimeout / time.Second)}})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.cfg.Sessions.End(r.Context(), p.SessionID, "logout"); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- policy

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.PolicyManage, roles.AuditRead, roles.ReportRead); err != nil {
		return err
	}
	pol, err := policy.Load(r.Context(), s.cfg.Policy)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(policy.Encode(pol))
	return err
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.cfg.Authz.Require(r.Context(), p.OperatorID, roles.PolicyManage, opgate.AllSites); err != nil {
		return err
	}
	var raw rawBody
	if err := decode(r, &raw, false); err != nil {
		return err
	}
	pol, err := policy.Decode(raw)
	if err != nil {
		return err // a *policy.ValidationError naming the field
	}
	pol, err = policy.Save(r.Context(), s.cfg.Policy, s.clk, p.OperatorID, p.TerminalID, pol)
	if err != nil {
		return err
	}
	s.cfg.Policies.Set(pol)
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(policy.Encode(pol))
	return err
}

// rawBody keeps a JSON object as it came, for documents with their own
// decoder.
type rawBody []byte

func (b *rawBody) UnmarshalJSON(v []byte) error {
	*b = append((*b)[:0], v...)
	return nil
}

// anyOf allows a caller holding one of perms at some site.
func (s *Server) anyOf(ctx context.Context, p authn.Principal, perms ...opgate.Permission) error {
	for _, perm := range perms {
		ok, err := s.cfg.Authz.HoldsAnywhere(ctx, p.OperatorID, perm)
		if err != nil || ok {
			return err
		}
	}
	return authz.ErrForbidden
}

// ---- sites and terminals

func (s *Server) listSites(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	sites, err := s.cfg.Lifecycle.ListSites(r.Context())
	if err != nil {
		return err
	}
	return pageOf(w, r, sites, func(x lifecycle.Site) string { return string(x.ID) }, toSiteDTO)
}

func (s *Server) createSite(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		SiteID           opgate.SiteID `json:"site_id"`
		Name             string        `json:"name"`
		MunicipalityCode string        `json:"municipality_code"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	site, err := s.cfg.Lifecycle.CreateSite(r.Context(), actorOf(r, p), lifecycle.Site{ID: in.SiteID, Name: in.Name, MunicipalityCode: in.MunicipalityCode})
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toSiteDTO(site))
}

func (s *Server) listTerminals(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	ts, err := s.cfg.Lifecycle.ListTerminals(r.Context(), opgate.SiteID(r.URL.Query().Get("site_id")))
	if err != nil {
		return err
	}
	return pageOf(w, r, ts, func(x lifecycle.Terminal) string { return string(x.ID) }, toTerminalDTO)
}

func (s *Server) createTerminal(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		TerminalID opgate.TerminalID `json:"terminal_id"`
		SiteID     opgate.SiteID     `json:"site_id"`
		Name       string            `json:"name"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	t, err := s.cfg.Lifecycle.RegisterTerminal(r.Context(), actorOf(r, p), lifecycle.Terminal{ID: in.TerminalID, SiteID: in.SiteID, Name: in.Name})
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toTerminalDTO(t))
}

func (s *Server) deleteTerminal(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.cfg.Lifecycle.RemoveTerminal(r.Context(), actorOf(r, p), opgate.TerminalID(r.PathValue("id"))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- permissions and roles

func (s *Server) listPermissions(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	type entry struct {
		Permission  opgate.Permission `json:"permission"`
		Description string            `json:"description"`
		HighRisk    bool              `json:"high_risk"`
	}
	cat := roles.Catalog()
	return pageOf(w, r, cat, func(e roles.Entry) string { return string(e.Permission) }, func(e roles.Entry) entry { return entry{e.Permission, e.Description, e.HighRisk} })
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	rs, err := s.cfg.Authz.ListRoles(r.Context())
	if err != nil {
		return err
	}
	return pageOf(w, r, rs, func(x roles.Role) string { return string(x.ID) }, toRoleDTO)
}

type roleIn struct {
	RoleID        opgate.RoleID       `json:"role_id"`
	Name          string              `json:"name"`
	Permissions   []opgate.Permission `json:"permissions"`
	ConflictsWith []opgate.RoleID     `json:"conflicts_with"`
}

func (s *Server) createRole(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in roleIn
	if err := decode(r, &in, false); err != nil {
		return err
	}
	role, err := s.cfg.Authz.PutRole(r.Context(), actorOf(r, p), roles.Role{ID: in.RoleID, Name: in.Name, Permissions: in.Permissions, ConflictsWith: in.ConflictsWith}, true)
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toRoleDTO(role))
}

func (s *Server) updateRole(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in roleIn
	if err := decode(r, &in, false); err != nil {
		return err
	}
	id := opgate.RoleID(r.PathValue("id"))
	if in.RoleID != "" && in.RoleID != id {
		return invalid("role_id", "must match the path")
	}
	role, err := s.cfg.Authz.PutRole(r.Context(), actorOf(r, p), roles.Role{ID: id, Name: in.Name, Permissions: in.Permissions, ConflictsWith: in.ConflictsWith}, false)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toRoleDTO(role))
}

// ---- operators

func (s *Server) issueOperator(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		StaffNumber    string                   `json:"staff_number"`
		Name           string                   `json:"name"`
		SiteID         opgate.SiteID            `json:"site_id"`
		EmploymentType lifecycle.EmploymentType `json:"employment_type"`
		ValidUntil     Time                     `json:"valid_until"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	o, err := s.cfg.Lifecycle.Issue(r.Context(), actorOf(r, p), lifecycle.IssueRequest{StaffNumber: in.StaffNumber, Name: in.Name,
		SiteID: in.SiteID, EmploymentType: in.EmploymentType, ValidUntil: in.ValidUntil.Time})
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toOperatorDTO(o, lifecycle.Lock{}, s.clk.Now()))
}

func (s *Server) listOperators(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := lifecycle.OperatorFilter{SiteID: opgate.SiteID(q.Get("site_id")), Status: lifecycle.Status(q.Get("status")), Query: strings.TrimSpace(q.Get("q")),
		After: opgate.OperatorID(after), Limit: limit + 1}
	if len(f.Query) > 100 || !utf8.ValidString(f.Query) {
		return invalid("q", "at most 100 bytes of UTF-8")
	}
	switch f.Status {
	case "", lifecycle.Active, lifecycle.Suspended, lifecycle.Locked, lifecycle.Expired, lifecycle.Retired:
	default:
		return invalid("status", "one of active, suspended, locked, expired, retired")
	}
	ops, locks, err := s.cfg.Lifecycle.ListOperators(r.Context(), actorOf(r, p), f)
	if err != nil {
		return err
	}
	now := s.clk.Now()
	return writeJSON(w, 200, listOf(ops, limit, func(o lifecycle.Operator) string { return string(o.ID) },
		func(o lifecycle.Operator) operatorDTO { return toOperatorDTO(o, locks[o.ID], now) }))
}

func (s *Server) getOperator(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	ctx := r.Context()
	o, l, err := s.cfg.Lifecycle.GetOperator(ctx, actorOf(r, p), opgate.OperatorID(r.PathValue("id")))
	if err != nil {
		return err
	}
	now := s.clk.Now()
	d := toOperatorDTO(o, l, now)
	cards, err := s.cfg.Views.CardsOf(ctx, o.ID)
	if err != nil {
		return err
	}
	grants, err := s.cfg.Authz.GrantsOf(ctx, o.ID)
	if err != nil {
		return err
	}
	pw, ok, err := s.cfg.Views.PasswordOf(ctx, o.ID)
	if err != nil {
		return err
	}
	if ok {
		d.PasswordExpiresAt = ts(pw.ExpiresAt)
	}
	cs, gs := make([]cardDTO, 0, len(cards)), make([]grantDTO, 0, len(grants))
	for _, c := range cards {
		cs = append(cs, toCardDTO(c))
	}
	for _, g := range grants {
		gs = append(gs, toGrantDTO(g, now))
	}
	d.Cards, d.Grants = &cs, &gs
	return writeJSON(w, 200, d)
}

type changeIn struct {
	ToSiteID    opgate.SiteID `json:"to_site_id"`
	Reason      string        `json:"reason"`
	EffectiveAt Time          `json:"effective_at"`
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in changeIn
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.ToSiteID == "" {
		return invalid("to_site_id", "required")
	}
	out, err := s.cfg.Lifecycle.Transfer(r.Context(), actorOf(r, p), opgate.OperatorID(r.PathValue("id")), in.ToSiteID, in.Reason, in.EffectiveAt.Time)
	return s.outcome(w, out, err)
}

func (s *Server) retire(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		Reason      string `json:"reason"`
		EffectiveAt Time   `json:"effective_at"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	out, err := s.cfg.Lifecycle.Retire(r.Context(), actorOf(r, p), opgate.OperatorID(r.PathValue("id")), in.Reason, in.EffectiveAt.Time)
	return s.outcome(w, out, err)
}

func (s *Server) outcome(w http.ResponseWriter, out lifecycle.Outcome, err error) error {
	if err != nil {
		return err
	}
	if c := out.Scheduled; c != nil {
		d := toChangeDTO(*c)
		return writeJSON(w, 202, d)
	}
	return writeJSON(w, 200, toOperatorDTO(out.Operator, lifecycle.Lock{}, s.clk.Now()))
}

type reasonIn struct {
	Reason string `json:"reason"`
}

func (s *Server) statusChange(fn func(context.Context, lifecycle.Actor, opgate.OperatorID, string) (lifecycle.Operator, error)) handler {
	return func(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
		var in reasonIn
		if err := decode(r, &in, false); err != nil {
			return err
		}
		o, err := fn(r.Context(), actorOf(r, p), opgate.OperatorID(r.PathValue("id")), in.Reason)
		if err != nil {
			return err
		}
		return writeJSON(w, 200, toOperatorDTO(o, lifecycle.Lock{}, s.clk.Now()))
	}
}

func (s *Server) suspend(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	return s.statusChange(s.cfg.Lifecycle.Suspend)(w, r, p)
}

func (s *Server) reinstate(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	return s.statusChange(s.cfg.Lifecycle.Reinstate)(w, r, p)
}

func (s *Server) unlock(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	return s.statusChange(s.cfg.Lifecycle.Unlock)(w, r, p)
}

// canSeeOperator allows holders of operator.manage or audit.read at the
// operator's site to read an operator's history and rights. An unknown
// operator is not found for whoever holds one of them at every site, and
// forbidden to anybody else, like a refused one.
func (s *Server) canSeeOperator(ctx context.Context, p authn.Principal, id opgate.OperatorID) error {
	o, _, err := s.cfg.Lifecycle.Self(ctx, id)
	if err != nil && !errors.Is(err, lifecycle.ErrNotFound) {
		return err
	}
	holds := func(perm opgate.Permission, site opgate.SiteID) (bool, error) {
		err := s.cfg.Authz.Require(ctx, p.OperatorID, perm, site)
		if errors.Is(err, authz.ErrForbidden) {
			return false, nil
		}
		return err == nil, err
	}
	perms := []opgate.Permission{roles.OperatorManage, roles.AuditRead}
	for _, perm := range perms {
		if o.ID == "" {
			break
		}
		if ok, err := holds(perm, o.SiteID); err != nil || ok {
			return err
		}
	}
	for _, perm := range perms {
		if ok, err := holds(perm, opgate.AllSites); err != nil || ok {
			if err == nil {
				err = lifecycle.ErrNotFound
			}
			return err
		}
	}
	return authz.ErrForbidden
}

func (s *Server) operatorHistory(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	id := opgate.OperatorID(r.PathValue("id"))
	if err := s.canSeeOperator(r.Context(), p, id); err != nil {
		return err
	}
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	var afterSeq int64
	if after != "" {
		if afterSeq, err = strconv.ParseInt(after, 10, 64); err != nil || afterSeq < 0 {
			return invalid("cursor", "not a cursor this server gave")
		}
	}
	evs, err := s.cfg.Views.ListAudit(r.Context(), audit.Filter{OperatorID: id, AfterSeq: afterSeq, Limit: limit + 1})
	if err != nil {
		return err
	}
	return writeJSON(w, 200, listOf(evs, limit, seqKey, toEventDTO))
}

func seqKey(e audit.Event) string { return strconv.FormatInt(e.Seq, 10) }

// operatorPermissions answers what the operator could do at an instant,
// from the grants' own dates (grants are never deleted, only ended) and
// the roles as the history says they were defined then.
func (s *Server) operatorPermissions(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	id := opgate.OperatorID(r.PathValue("id"))
	if err := s.canSeeOperator(r.Context(), p, id); err != nil {
		return err
	}
	at := s.clk.Now()
	if v := r.URL.Query().Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return invalid("at", "an RFC 3339 time")
		}
		at = t.UTC()
	}
	grants, err := s.cfg.Authz.GrantsOf(r.Context(), id)
	if err != nil {
		return err
	}
	rs, err := s.cfg.Authz.RolesAt(r.Context(), at)
	if err != nil {
		return err
	}
	type permDTO struct {
		Permission opgate.Permission `json:"permission"`
		SiteID     opgate.SiteID     `json:"site_id"`
	}
	out := struct {
		At          Time       `json:"at"`
		Grants      []grantDTO `json:"grants"`
		Permissions []permDTO  `json:"permissions"`
	}{At: ts(at), Grants: []grantDTO{}, Permissions: []permDTO{}}
	for _, g := range grants {
		if !g.LiveAt(at) {
			continue
		}
		out.Grants = append(out.Grants, toGrantDTO(g, at))
		for _, perm := range rs[g.RoleID].Permissions {
			pd := permDTO{perm, g.SiteID}
			if !slices.Contains(out.Permissions, pd) {
				out.Permissions = append(out.Permissions, pd)
			}
		}
	}
	return writeJSON(w, 200, out)
}

func (s *Server) listChanges(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := lifecycle.ChangeFilter{OperatorID: opgate.OperatorID(q.Get("operator_id")), Status: lifecycle.ChangeStatus(q.Get("status")), After: opgate.ChangeID(after), Limit: limit + 1}
	switch f.Status {
	case "", lifecycle.ChangePending, lifecycle.ChangeApplied, lifecycle.ChangeCancelled, lifecycle.ChangeFailed:
	default:
		return invalid("status", "pending, applied, cancelled or failed")
	}
	cs, err := s.cfg.Lifecycle.ListChanges(r.Context(), actorOf(r, p), f)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, listOf(cs, limit, func(c lifecycle.Change) string { return string(c.ID) }, toChangeDTO))
}

func (s *Server) cancelChange(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in reasonIn
	if err := decode(r, &in, true); err != nil {
		return err
	}
	if in.Reason == "" {
		in.Reason = "cancelled"
	}
	if err := s.cfg.Lifecycle.CancelChange(r.Context(), actorOf(r, p), opgate.ChangeID(r.PathValue("id")), in.Reason); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- grants

func (s *Server) createGrant(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		RoleID     opgate.RoleID `json:"role_id"`
		SiteID     opgate.SiteID `json:"site_id"`
		Reason     string        `json:"reason"`
		ValidUntil Time          `json:"valid_until"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	g, err := s.cfg.Authz.Grant(r.Context(), actorOf(r, p), authz.GrantRequest{OperatorID: opgate.OperatorID(r.PathValue("id")),
		RoleID: in.RoleID, SiteID: in.SiteID, Reason: in.Reason, ValidUntil: in.ValidUntil.Time})
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toGrantDTO(g, s.clk.Now()))
}

func (s *Server) listGrants(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := authz.GrantFilter{OperatorID: opgate.OperatorID(q.Get("operator_id")), SiteID: opgate.SiteID(q.Get("site_id")),
		Status: authz.GrantStatus(q.Get("status")), After: opgate.GrantID(after), Limit: limit + 1}
	switch f.Status {
	case "", authz.PendingApproval, authz.Active, authz.Revoked, authz.Expired:
	default:
		return invalid("status", "one of pending_approval, active, revoked, expired")
	}
	gs, err := s.cfg.Authz.ListGrants(r.Context(), actorOf(r, p), f)
	if err != nil {
		return err
	}
	now := s.clk.Now()
	return writeJSON(w, 200, listOf(gs, limit, func(g authz.Grant) string { return string(g.ID) },
		func(g authz.Grant) grantDTO { return toGrantDTO(g, now) }))
}

func (s *Server) approveGrant(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.GrantApprove, roles.GrantManage); err != nil {
		return err
	}
	var in reasonIn
	if err := decode(r, &in, true); err != nil {
		return err
	}
	g, err := s.cfg.Authz.Approve(r.Context(), actorOf(r, p), opgate.GrantID(r.PathValue("id")), in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toGrantDTO(g, s.clk.Now()))
}

func (s *Server) revokeGrant(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in reasonIn
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.Reason == "" {
		return invalid("reason", "required")
	}
	g, err := s.cfg.Authz.Revoke(r.Context(), actorOf(r, p), opgate.GrantID(r.PathValue("id")), in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toGrantDTO(g, s.clk.Now()))
}

// ---- audit

func (s *Server) auditEvents(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := audit.Filter{OperatorID: opgate.OperatorID(q.Get("operator_id")), ActorID: opgate.OperatorID(q.Get("actor_id")),
		Type: audit.Type(q.Get("type")), Resource: q.Get("resource_id"), SiteID: opgate.SiteID(q.Get("site_id")), Limit: limit + 1}
	if after != "" {
		if f.AfterSeq, err = strconv.ParseInt(after, 10, 64); err != nil {
			return invalid("cursor", "not a cursor this server gave")
		}
	}
	for name, dst := range map[string]*time.Time{"from": &f.From, "to": &f.To} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return invalid(name, "an RFC 3339 time")
			}
			*dst = t.UTC()
		}
	}
	sites, err := s.cfg.Authz.Sites(r.Context(), p.OperatorID, roles.AuditRead)
	if err != nil {
		return err
	}
	if !slices.Contains(sites, opgate.AllSites) {
		// A site's auditor reads the events of their site only.
		switch {
		case f.SiteID != "" && slices.Contains(sites, f.SiteID):
		case f.SiteID == "" && len(sites) == 1:
			f.SiteID = sites[0]
		default:
			return authz.ErrForbidden
		}
	}
	evs, err := s.cfg.Views.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, listOf(evs, limit, seqKey, toEventDTO))
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.cfg.Authz.Require(r.Context(), p.OperatorID, roles.AuditRead, opgate.AllSites); err != nil {
		return err
	}
	res, err := audit.VerifyChain(r.Context(), s.cfg.Chain)
	if err != nil {
		return err
	}
	out := map[string]any{"ok": res.OK, "events": res.Events, "head_seq": res.HeadSeq, "head_hash": hex.EncodeToString(res.HeadHash), "first_bad_seq": nil}
	if !res.OK {
		out["first_bad_seq"] = res.FirstBadSeq
		out["problem"] = res.Problem
	}
	return writeJSON(w, 200, out)
}
