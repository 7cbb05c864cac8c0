package web

import (
	"encoding/json"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// The terminal a browser logs in from is remembered in a cookie set once
// on the terminal (the page /terminal, or the administrator's terminal
// list): counter staff then only touch their card. The API still checks
// that the terminal is registered at a site of the operator, and with
// OPGATE_TLS_CLIENT_CA the terminal is the client certificate's CN, which
// the cookie cannot override.

var terminalID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{1,62}$`)

// loginAnswer is the part of the API's login answer the pages use.
type loginAnswer struct {
	AccessToken            string  `json:"access_token"`
	RefreshToken           string  `json:"refresh_token"`
	PasswordChangeRequired bool    `json:"password_change_required"`
	PasswordExpiresAt      *string `json:"password_expires_at"`
	PasswordExpiresSoon    bool    `json:"password_expires_soon"`
}

// terminal is the browser's terminal: its cookie, or the one typed on a
// login page of a browser without one, which is then remembered.
func (w *Web) terminal(rw http.ResponseWriter, r *http.Request, typed string) string {
	if t := cookie(r, cookieTerminal); t != "" {
		return t
	}
	if terminalID.MatchString(typed) {
		w.setCookie(rw, r, cookieTerminal, typed, 10*year)
	}
	return typed
}

// notices are the messages a page shows for ?m= after a redirect.
var notices = map[string]string{
	"ended": "login.ended", "idle": "login.idle", "out": "login.loggedout", "pwchanged": "password.changed",
	"terminal": "terminal.saved", "done": "action.done", "scheduled": "action.scheduled",
}

func (p *page) notice() string {
	if k, ok := notices[p.r.URL.Query().Get("m")]; ok {
		return p.T(k)
	}
	return ""
}

type loginData struct {
	Terminal   string
	OperatorID string
}

func (w *Web) loginPage(p *page) error {
	p.renderWith("login", "login.title", loginData{Terminal: cookie(p.r, cookieTerminal)}, p.notice(), "")
	return nil
}

// passwordLogin is the form of a login with operator ID and password,
// where the policy admits it.
func (w *Web) passwordLogin(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	in := map[string]string{"operator_id": r.PostFormValue("operator_id"), "password": r.PostFormValue("password"),
		"terminal_id": w.terminal(rw, r, r.PostFormValue("terminal_id"))}
	res := p.call("POST", "/v1/login/password", in)
	if !res.ok() {
		rw.WriteHeader(res.Status)
		p.renderWith("login", "login.title", loginData{Terminal: in["terminal_id"], OperatorID: in["operator_id"]}, "", p.message(res.err()))
		return
	}
	var a loginAnswer
	if err := res.decode(&a); err != nil {
		p.fail(err)
		return
	}
	http.Redirect(rw, r, p.loggedIn(a), http.StatusSeeOther)
}

// loggedIn keeps the session in cookies and says where to go: the forced
// password change, or the console (saying when the password expires soon).
func (p *page) loggedIn(a loginAnswer) string {
	p.setSession(a.AccessToken, a.RefreshToken)
	if a.PasswordChangeRequired {
		return "/password"
	}
	if a.PasswordExpiresSoon && a.PasswordExpiresAt != nil {
		if t, err := time.Parse(time.RFC3339, *a.PasswordExpiresAt); err == nil {
			days := int(math.Ceil(t.Sub(p.w.clk.Now()).Hours() / 24))
			return "/console?pwdays=" + strconv.Itoa(max(days, 0))
		}
	}
	return "/console"
}

// cardBegin and cardFinish are the two halves of a card login for the
// page's script, which calls navigator.credentials.get between them.
func (w *Web) cardBegin(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	var in struct {
		OperatorID string `json:"operator_id"`
		TerminalID string `json:"terminal_id"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeJSON(rw, 400, map[string]string{"error": p.T("err.validation_failed")})
		return
	}
	res := p.call("POST", "/v1/login/card/begin", map[string]string{"operator_id": in.OperatorID, "terminal_id": w.terminal(rw, r, in.TerminalID)})
	p.relay(res, func() any { return json.RawMessage(res.Body) })
}

func (w *Web) cardFinish(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	var in struct {
		LoginID    string          `json:"login_id"`
		Credential json.RawMessage `json:"credential"`
		Password   *string         `json:"password,omitempty"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeJSON(rw, 400, map[string]string{"error": p.T("err.validation_failed")})
		return
	}
	res := p.call("POST", "/v1/login/card/finish", in)
	p.relay(res, func() any {
		var a loginAnswer
		if err := res.decode(&a); err != nil {
			return map[string]string{"error": p.T("err.internal")}
		}
		return map[string]string{"redirect": p.loggedIn(a)}
	})
}

// relay answers the page's script: what ok builds, or the refusal in the
// page's language.
func (p *page) relay(res result, ok func() any) {
	if !res.ok() {
		writeJSON(p.rw, res.Status, map[string]string{"error": p.message(res.err()), "code": res.Problem.Code})
		return
	}
	writeJSON(p.rw, 200, ok())
}

func (w *Web) logout(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	if ok, _ := p.authenticate(); ok {
		p.call("POST", "/v1/logout", nil)
	}
	w.clearSession(rw, r)
	m := "out"
	if r.PostFormValue("reason") == "idle" {
		m = "idle"
	}
	http.Redirect(rw, r, "/login?m="+m, http.StatusSeeOther)
}

func (w *Web) passwordPage(p *page) error {
	p.renderWith("password", "password.title", map[string]any{"Required": p.me.Session.PasswordChangeRequired}, "", "")
	return nil
}

func (w *Web) changePassword(p *page) error {
	cur, next := p.r.PostFormValue("current_password"), p.r.PostFormValue("new_password")
	data := map[string]any{"Required": p.me.Session.PasswordChangeRequired}
	if next != p.r.PostFormValue("confirm_password") {
		p.rw.WriteHeader(http.StatusBadRequest)
		p.renderWith("password", "password.title", data, "", p.T("password.mismatch"))
		return nil
	}
	res := p.call("POST", "/v1/me/password", map[string]string{"current_password": cur, "new_password": next})
	if !res.ok() {
		p.rw.WriteHeader(res.Status)
		p.renderWith("password", "password.title", data, "", p.message(res.err()))
		return nil
	}
	return p.redirect("/console?m=pwchanged")
}

func (w *Web) terminalPage(p *page) error {
	p.renderWith("terminal", "terminal.title", map[string]any{"Terminal": cookie(p.r, cookieTerminal)}, p.notice(), "")
	return nil
}

func (w *Web) setTerminal(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	id := r.PostFormValue("terminal_id")
	if !terminalID.MatchString(id) {
		rw.WriteHeader(http.StatusBadRequest)
		p.renderWith("terminal", "terminal.title", map[string]any{"Terminal": cookie(r, cookieTerminal)}, "", p.T("terminal.invalid"))
		return
	}
	w.setCookie(rw, r, cookieTerminal, id, 10*year)
	http.Redirect(rw, r, "/login?m=terminal", http.StatusSeeOther)
}

func (w *Web) setLang(rw http.ResponseWriter, r *http.Request) {
	lang := r.PostFormValue("lang")
	for _, tag := range Languages {
		if tag.String() == lang {
			w.setCookie(rw, r, cookieLang, lang, year)
		}
	}
	back := r.PostFormValue("back")
	if !Handles(back) || len(back) > 200 || back[0] != '/' || (len(back) > 1 && back[1] == '/') {
		back = "/login"
	}
	http.Redirect(rw, r, back, http.StatusSeeOther)
}

func (w *Web) enrollPage(p *page) error {
	p.render("enroll", "enroll.title", nil)
	return nil
}

// enrollBegin and enrollFinish are the two halves of a card enrollment
// for the page's script, which calls navigator.credentials.create.
func (w *Web) enrollBegin(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	var in struct {
		Code string `json:"enrollment_code"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeJSON(rw, 400, map[string]string{"error": p.T("err.validation_failed")})
		return
	}
	res := p.call("POST", "/v1/enroll/begin", map[string]string{"enrollment_code": in.Code})
	p.relay(res, func() any { return json.RawMessage(res.Body) })
}

func (w *Web) enrollFinish(rw http.ResponseWriter, r *http.Request) {
	p := w.newPage(rw, r)
	var in struct {
		EnrollmentID string          `json:"enrollment_id"`
		Credential   json.RawMessage `json:"credential"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeJSON(rw, 400, map[string]string{"error": p.T("err.validation_failed")})
		return
	}
	res := p.call("POST", "/v1/enroll/finish", in)
	p.relay(res, func() any {
		var c struct {
			CardSerial string `json:"card_serial"`
		}
		_ = res.decode(&c)
		return map[string]string{"message": p.T("enroll.done", c.CardSerial)}
	})
}
