package httpapi

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
)

func (s *Server) registerAuth() {
	s.handle("POST", "/v1/login/card/begin", public, "", s.cardBegin)
	s.handle("POST", "/v1/login/card/finish", public, "", s.cardFinish)
	s.handle("POST", "/v1/login/password", public, "", s.passwordLogin)
	s.handle("POST", "/v1/session/refresh", public, "", s.refresh)
	s.handle("POST", "/v1/me/password", bearerAny, "", s.changePassword)
	s.handle("POST", "/v1/operators/{id}/password/reset", bearer, roles.OperatorManage, s.resetPassword)

	s.handle("POST", "/v1/operators/{id}/cards/enrollments", bearer, roles.OperatorManage, s.startEnrollment)
	s.handle("POST", "/v1/enroll/begin", public, "", s.enrollBegin)
	s.handle("POST", "/v1/enroll/finish", public, "", s.enrollFinish)
	s.handle("POST", "/v1/operators/{id}/cards/{card_id}/report-lost", bearer, roles.OperatorManage, s.reportLost)
	s.handle("POST", "/v1/operators/{id}/cards/{card_id}/return", bearer, roles.OperatorManage, s.returnCard)

	s.handle("POST", "/v1/introspect", public, "", s.introspect)
	s.handle("GET", "/v1/emergency", bearer, "", s.emergencyList)
	s.handle("POST", "/v1/emergency/stop", bearer, roles.EmergencyStop, s.emergencyStop)
	s.handle("POST", "/v1/emergency/resume", bearer, roles.EmergencyStop, s.emergencyResume)
}

// client is where a login comes from. With terminal certificates, the
// terminal is the certificate's CN, a different terminal_id in the body is
// refused, and so is a login without a certificate (R2.9: the two
// computers authenticate each other).
func (s *Server) client(r *http.Request, bodyTerminal opgate.TerminalID) (authn.Client, error) {
	c := authn.Client{TerminalID: bodyTerminal}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		c.Addr = host
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		cn := opgate.TerminalID(r.TLS.VerifiedChains[0][0].Subject.CommonName)
		if bodyTerminal != "" && bodyTerminal != cn {
			return c, authn.ErrTerminalNotAllowed
		}
		c.TerminalID = cn
		return c, nil
	}
	if s.cfg.TerminalCertificates {
		return c, authn.ErrTerminalNotAllowed
	}
	return c, nil
}

// loginAnswer is the contract's login answer.
type loginAnswer struct {
	AccessToken            string            `json:"access_token"`
	TokenType              string            `json:"token_type"`
	ExpiresIn              int64             `json:"expires_in"`
	RefreshToken           string            `json:"refresh_token"`
	SessionID              opgate.SessionID  `json:"session_id"`
	OperatorID             opgate.OperatorID `json:"operator_id"`
	SiteID                 opgate.SiteID     `json:"site_id"`
	TerminalID             opgate.TerminalID `json:"terminal_id"`
	PasswordChangeRequired bool              `json:"password_change_required"`
	PasswordExpiresAt      Time              `json:"password_expires_at"`
	PasswordExpiresSoon    bool              `json:"password_expires_soon"`
}

func toLoginAnswer(l authn.Login) loginAnswer {
	return loginAnswer{l.AccessToken, "Bearer", int64(l.ExpiresIn / time.Second), l.RefreshToken, l.Session.ID, l.Session.OperatorID,
		l.Session.SiteID, l.Session.TerminalID, l.PasswordChangeRequired, ts(l.PasswordExpiresAt), l.PasswordExpiresSoon}
}

func (s *Server) cardBegin(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		TerminalID opgate.TerminalID `json:"terminal_id"`
		OperatorID string            `json:"operator_id"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	c, err := s.client(r, in.TerminalID)
	if err != nil {
		return err
	}
	if c.TerminalID == "" {
		return invalid("terminal_id", "required")
	}
	if len(in.OperatorID) > 64 {
		return invalid("operator_id", "at most 64 bytes")
	}
	id, options, err := s.cfg.Logins.BeginCard(r.Context(), c, in.OperatorID)
	if err != nil {
		return err
	}
	pol, err := s.cfg.Policies.Policy(r.Context())
	if err != nil {
		return err
	}
	// Said before the card is touched, so that a terminal asks for the
	// password in the same step (R2.2).
	needsPassword := !pol.Allows(policy.MethodCard) && pol.Allows(policy.MethodCardPassword)
	return writeJSON(w, 200, map[string]any{"login_id": id, "publicKey": publicKeyOf(options), "password_required": needsPassword})
}

// publicKeyOf takes the publicKey member out of the ceremony's options.
func publicKeyOf(options []byte) json.RawMessage {
	var o struct {
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if json.Unmarshal(options, &o) == nil && len(o.PublicKey) > 0 {
		return o.PublicKey
	}
	return json.RawMessage(options)
}

func (s *Server) cardFinish(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		LoginID    string          `json:"login_id"`
		Credential json.RawMessage `json:"credential"`
		Password   *string         `json:"password"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.LoginID == "" || len(in.Credential) == 0 {
		return invalid("credential", "login_id and credential are required")
	}
	c, err := s.client(r, "")
	if err != nil {
		return err
	}
	l, err := s.cfg.Logins.FinishCard(r.Context(), c, in.LoginID, in.Credential, in.Password)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toLoginAnswer(l))
}

func (s *Server) passwordLogin(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		OperatorID string            `json:"operator_id"`
		Password   string            `json:"password"`
		TerminalID opgate.TerminalID `json:"terminal_id"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	c, err := s.client(r, in.TerminalID)
	if err != nil {
		return err
	}
	if c.TerminalID == "" {
		return invalid("terminal_id", "required")
	}
	l, err := s.cfg.Logins.Password(r.Context(), c, in.OperatorID, in.Password)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toLoginAnswer(l))
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	iss, err := s.cfg.Logins.Refresh(r.Context(), in.RefreshToken)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"access_token": iss.AccessToken, "token_type": "Bearer", "expires_in": int64(iss.ExpiresIn / time.Second),
		"refresh_token": iss.RefreshToken, "session_id": iss.Session.ID})
}

func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		CurrentPassword string `json:"current_password"`
		NewPassword     string `json:"new_password"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.NewPassword == "" {
		return invalid("new_password", "required")
	}
	if err := s.cfg.Logins.ChangePassword(r.Context(), p, in.CurrentPassword, in.NewPassword); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// managedOperator loads an operator the caller manages (operator.manage
// at its site).
func (s *Server) managedOperator(r *http.Request, p authn.Principal) (lifecycle.Operator, error) {
	o, _, err := s.cfg.Lifecycle.GetOperator(r.Context(), actorOf(r, p), opgate.OperatorID(r.PathValue("id")))
	return o, err
}

func (s *Server) resetPassword(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := decode(r, &struct{}{}, true); err != nil {
		return err
	}
	o, err := s.managedOperator(r, p)
	if err != nil {
		return err
	}
	if o.ID == p.OperatorID {
		return authz403("a password is reset by someone else")
	}
	temp, err := s.cfg.Logins.ResetPassword(r.Context(), actorOf(r, p), o.ID, o.SiteID)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]string{"temporary_password": temp})
}

func (s *Server) startEnrollment(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		CardSerial string `json:"card_serial"`
		Label      string `json:"label"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if strings.TrimSpace(in.CardSerial) == "" || len(in.CardSerial) > 64 {
		return invalid("card_serial", "required, at most 64 bytes")
	}
	if len(in.Label) > 200 {
		return invalid("label", "at most 200 bytes")
	}
	o, err := s.managedOperator(r, p)
	if err != nil {
		return err
	}
	code, exp, err := s.cfg.Logins.StartEnrollment(r.Context(), actorOf(r, p), o.ID, in.CardSerial, in.Label)
	if err != nil {
		return err
	}
	return writeJSON(w, 201, map[string]any{"enrollment_code": code, "expires_at": ts(exp), "operator_id": o.ID, "card_serial": in.CardSerial})
}

func (s *Server) enrollBegin(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		EnrollmentCode string `json:"enrollment_code"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.EnrollmentCode == "" || len(in.EnrollmentCode) > 64 {
		return invalid("enrollment_code", "required")
	}
	id, options, err := s.cfg.Logins.BeginEnrollment(r.Context(), in.EnrollmentCode)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"enrollment_id": id, "publicKey": publicKeyOf(options)})
}

func (s *Server) enrollFinish(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	var in struct {
		EnrollmentID string          `json:"enrollment_id"`
		Credential   json.RawMessage `json:"credential"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.EnrollmentID == "" || len(in.Credential) == 0 {
		return invalid("credential", "enrollment_id and credential are required")
	}
	card, err := s.cfg.Logins.FinishEnrollment(r.Context(), in.EnrollmentID, in.Credential)
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toCardDTO(card))
}

func (s *Server) reportLost(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		Kind   string `json:"kind"`
		Reason string `json:"reason"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	to := authn.CardLost
	switch in.Kind {
	case "lost":
	case "stolen":
		to = authn.CardStolen
	default:
		return invalid("kind", "lost or stolen")
	}
	return s.cardStatus(w, r, p, to, in.Reason)
}

func (s *Server) returnCard(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in reasonIn
	if err := decode(r, &in, false); err != nil {
		return err
	}
	return s.cardStatus(w, r, p, authn.CardCollected, in.Reason)
}

func (s *Server) cardStatus(w http.ResponseWriter, r *http.Request, p authn.Principal, to authn.CardStatus, reason string) error {
	if reason == "" || len(reason) > 1000 {
		return invalid("reason", "required, at most 1000 bytes")
	}
	o, err := s.managedOperator(r, p)
	if err != nil {
		return err
	}
	card, err := s.cfg.Logins.CardStatusChange(r.Context(), actorOf(r, p), o.ID, opgate.CardID(r.PathValue("card_id")), to, reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toCardDTO(card))
}

type emergencyIn struct {
	Scope  string        `json:"scope"`
	SiteID opgate.SiteID `json:"site_id"`
	Reason string        `json:"reason"`
}

func (in emergencyIn) site() (opgate.SiteID, error) {
	switch in.Scope {
	case "all":
		return opgate.AllSites, nil
	case "site":
		if !roles.ValidID(string(in.SiteID)) {
			return "", invalid("site_id", "required with scope site")
		}
		return in.SiteID, nil
	}
	return "", invalid("scope", "all or site")
}

func (s *Server) emergency(r *http.Request, p authn.Principal) (opgate.SiteID, emergencyIn, error) {
	var in emergencyIn
	if err := decode(r, &in, false); err != nil {
		return "", in, err
	}
	site, err := in.site()
	if err != nil {
		return "", in, err
	}
	if in.Reason == "" || len(in.Reason) > 1000 {
		return "", in, invalid("reason", "required, at most 1000 bytes")
	}
	return site, in, s.cfg.Authz.Require(r.Context(), p.OperatorID, roles.EmergencyStop, site)
}

func (s *Server) emergencyStop(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	site, in, err := s.emergency(r, p)
	if err != nil {
		return err
	}
	n, err := s.cfg.Emergencies.Stop(r.Context(), actorOf(r, p), p.SessionID, site, in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"scope": in.Scope, "site_id": optional(string(in.SiteID)), "stopped": true, "sessions_ended": n})
}

func (s *Server) emergencyResume(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	site, in, err := s.emergency(r, p)
	if err != nil {
		return err
	}
	if err := s.cfg.Emergencies.Resume(r.Context(), actorOf(r, p), site, in.Reason); err != nil {
		return err
	}
	return writeJSON(w, 200, map[string]any{"scope": in.Scope, "site_id": optional(string(in.SiteID)), "stopped": false})
}

// emergencyList shows the stops in force, to whoever may stop or resume
// logins and to auditors.
func (s *Server) emergencyList(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.EmergencyStop, roles.AuditRead); err != nil {
		return err
	}
	stops, err := s.cfg.Emergencies.List(r.Context())
	if err != nil {
		return err
	}
	type stopDTO struct {
		Scope     string            `json:"scope"`
		SiteID    *string           `json:"site_id"`
		Reason    string            `json:"reason"`
		StoppedBy opgate.OperatorID `json:"stopped_by"`
		StoppedAt Time              `json:"stopped_at"`
	}
	items := make([]stopDTO, 0, len(stops))
	for _, st := range stops {
		d := stopDTO{Scope: "all", Reason: st.Reason, StoppedBy: st.StoppedBy, StoppedAt: ts(st.StoppedAt)}
		if st.Scope != opgate.AllSites {
			d.Scope, d.SiteID = "site", optional(string(st.Scope))
		}
		items = append(items, d)
	}
	return writeJSON(w, 200, map[string]any{"items": items})
}

// introspect answers RFC 7662 for a holder of audit.read or a service key.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request, _ authn.Principal) error {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return errUnauthenticated
	}
	key = strings.TrimSpace(key)
	if authn.IsServiceKey(key) {
		name, err := authn.CheckServiceKey(r.Context(), s.cfg.Services, key)
		if err != nil {
			return err
		}
		setActor(r.Context(), opgate.OperatorID("service:"+name))
	} else {
		p, err := s.authenticate(r)
		if err != nil {
			return err
		}
		setActor(r.Context(), p.OperatorID)
		if p.PasswordChangeRequired {
			return errPasswordChange
		}
		if err := s.anyOf(r.Context(), p, roles.AuditRead); err != nil {
			return err
		}
	}
	var in struct {
		Token         string `json:"token"`
		TokenTypeHint string `json:"token_type_hint"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	p, live, err := s.cfg.Sessions.Inspect(r.Context(), in.Token)
	if err != nil {
		return err
	}
	if !live {
		return writeJSON(w, 200, map[string]any{"active": false})
	}
	return writeJSON(w, 200, map[string]any{"active": true, "sub": p.OperatorID, "sid": p.SessionID, "exp": p.TokenExpiresAt.Unix(),
		"site_id": p.SiteID, "terminal_id": p.TerminalID, "amr": nonNil(p.AMR), "token_type": "Bearer"})
}

// authz403 is a refusal the HTTP layer decides itself.
func authz403(why string) error { return errors.Join(errForbiddenHere, errors.New(why)) }
