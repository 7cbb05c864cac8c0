package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Cookie names. Every cookie is HttpOnly and SameSite=Strict, and Secure
// when the request came over TLS or the browsers' origin is HTTPS
// (Config.SecureCookies): no script reads them and no other site sends
// them.
const (
	cookieAccess   = "opgate_at"
	cookieRefresh  = "opgate_rt"
	cookieCSRF     = "opgate_csrf"
	cookieLang     = "opgate_lang"
	cookieTerminal = "opgate_terminal"
	csrfField      = "csrf"
	csrfHeader     = "X-CSRF-Token"
)

const year = 365 * 24 * time.Hour

func (w *Web) setCookie(rw http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || w.cfg.SecureCookies}
	switch {
	case value == "":
		c.MaxAge = -1
	case maxAge > 0:
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(rw, c)
}

func cookie(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// page is one request to a page: the browser's language, its CSRF token
// and, once authenticated, the session's token and operator.
type page struct {
	w     *Web
	rw    http.ResponseWriter
	r     *http.Request
	lang  language.Tag
	pr    *message.Printer
	csrf  string
	token string
	me    *me
	perms map[string][]string // permission → sites where it is held
	// errMsg is a refusal shown on the page a form came from.
	errMsg string
}

// me is the API's GET /v1/me.
type me struct {
	Operator operatorView `json:"operator"`
	Session  struct {
		SessionID              string   `json:"session_id"`
		SiteID                 string   `json:"site_id"`
		TerminalID             string   `json:"terminal_id"`
		AMR                    []string `json:"amr"`
		ExpiresAt              string   `json:"expires_at"`
		PasswordChangeRequired bool     `json:"password_change_required"`
		IdleTimeoutS           int64    `json:"idle_timeout_s"`
	} `json:"session"`
}

// newPage reads the language and gives the browser a CSRF cookie when it
// has none.
func (w *Web) newPage(rw http.ResponseWriter, r *http.Request) *page {
	p := &page{w: w, rw: rw, r: r}
	p.lang = w.cat.match(cookie(r, cookieLang), r.Header.Get("Accept-Language"))
	p.pr = w.cat.printer(p.lang)
	seed := cookie(r, cookieCSRF)
	if len(seed) < 32 {
		var b [32]byte
		_, _ = rand.Read(b[:])
		seed = base64.RawURLEncoding.EncodeToString(b[:])
		w.setCookie(rw, r, cookieCSRF, seed, 0)
	}
	p.csrf = w.csrfToken(seed)
	return p
}

// csrfToken is the form token of a browser: an HMAC of its CSRF cookie, so
// that a page of another site can neither read nor forge it (a signed
// double submit; the cookie itself never appears in a page).
func (w *Web) csrfToken(seed string) string {
	m := hmac.New(sha256.New, w.cfg.Secret)
	m.Write([]byte("opgate web csrf\x00"))
	m.Write([]byte(seed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF refuses a POST whose token does not match its cookie, or that
// a browser says came from another site.
func (w *Web) checkCSRF(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	seed := cookie(r, cookieCSRF)
	if len(seed) < 32 {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return hmac.Equal([]byte(got), []byte(w.csrfToken(seed)))
}

// post wraps a POST handler with the CSRF check and a bounded form.
func (w *Web) post(h http.HandlerFunc) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(rw, r.Body, 1<<20)
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			if err := r.ParseForm(); err != nil {
				http.Error(rw, "bad form", http.StatusBadRequest)
				return
			}
		}
		if !w.checkCSRF(r) {
			p := w.newPage(rw, r)
			rw.WriteHeader(http.StatusForbidden)
			p.render("error", "csrf.title", map[string]any{"Message": p.T("csrf.refused")})
			return
		}
		h(rw, r)
	}
}

// public serves a page that needs no session.
func (w *Web) public(fn func(*page) error) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		p := w.newPage(rw, r)
		if err := fn(p); err != nil {
			p.fail(err)
		}
	}
}

// authFlags change what an authenticated page accepts.
type authFlags int

// allowChange lets a session that must change its password in.
const allowChange authFlags = 1

// authed serves a page for a live session. An expired access token is
// renewed with the refresh cookie; a session the server ended (idle,
// logout, revocation) sends the browser to the login page saying so.
func (w *Web) authed(fn func(*page) error, flags authFlags) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		p := w.newPage(rw, r)
		ok, err := p.authenticate()
		if err != nil {
			p.fail(err)
			return
		}
		if !ok {
			w.clearSession(rw, r)
			target := "/login"
			if cookie(r, cookieAccess) != "" || cookie(r, cookieRefresh) != "" {
				target += "?m=ended"
			}
			http.Redirect(rw, r, target, http.StatusSeeOther)
			return
		}
		if p.me.Session.PasswordChangeRequired && flags&allowChange == 0 {
			http.Redirect(rw, r, "/password", http.StatusSeeOther)
			return
		}
		if err := fn(p); err != nil {
			p.fail(err)
		}
	}
}

// authenticate loads the session's operator, renewing the access token
// once when it has expired.
func (p *page) authenticate() (bool, error) {
	p.token = cookie(p.r, cookieAccess)
	for try := 0; try < 2; try++ {
		if p.token != "" {
			var m me
			res := p.call("GET", "/v1/me", nil)
			if res.ok() {
				if err := res.decode(&m); err != nil {
					return false, err
				}
				p.me = &m
				return true, p.loadPermissions()
			}
			if res.Status != http.StatusUnauthorized {
				return false, res.err()
			}
		}
		if try > 0 || !p.refresh() {
			return false, nil
		}
	}
	return false, nil
}

// refresh rotates the refresh token (API: POST /v1/session/refresh).
func (p *page) refresh() bool {
	rt := cookie(p.r, cookieRefresh)
	if rt == "" {
		return false
	}
	p.token = ""
	res := p.call("POST", "/v1/session/refresh", map[string]string{"refresh_token": rt})
	var out struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if !res.ok() || res.decode(&out) != nil {
		return false
	}
	p.setSession(out.AccessToken, out.RefreshToken)
	return true
}

func (p *page) setSession(access, refresh string) {
	p.token = access
	p.w.setCookie(p.rw, p.r, cookieAccess, access, 0)
	p.w.setCookie(p.rw, p.r, cookieRefresh, refresh, 0)
}

func (w *Web) clearSession(rw http.ResponseWriter, r *http.Request) {
	w.setCookie(rw, r, cookieAccess, "", 0)
	w.setCookie(rw, r, cookieRefresh, "", 0)
}

// loadPermissions asks which permissions the operator holds now, to show
// only the pages it may use (the API still decides every action).
func (p *page) loadPermissions() error {
	var out struct {
		Permissions []struct {
			Permission string `json:"permission"`
			SiteID     string `json:"site_id"`
		} `json:"permissions"`
	}
	p.perms = map[string][]string{}
	if p.me.Session.PasswordChangeRequired {
		return nil
	}
	res := p.call("GET", "/v1/operators/"+url.PathEscape(p.me.Operator.OperatorID)+"/permissions", nil)
	if !res.ok() {
		return nil // the pages still work; the API refuses what is not held
	}
	if err := res.decode(&out); err != nil {
		return err
	}
	for _, x := range out.Permissions {
		if !slices.Contains(p.perms[x.Permission], x.SiteID) {
			p.perms[x.Permission] = append(p.perms[x.Permission], x.SiteID)
		}
	}
	return nil
}

// Holds reports whether the operator holds one of perms somewhere; a
// permission written "perm@*" must be held at every site (the
// municipality-wide reports).
func (p *page) Holds(perms ...string) bool {
	for _, x := range perms {
		if perm, ok := strings.CutSuffix(x, "@*"); ok {
			if slices.Contains(p.perms[perm], "*") {
				return true
			}
			continue
		}
		if len(p.perms[x]) > 0 {
			return true
		}
	}
	return false
}

// writeJSON answers the pages' own scripts.
func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}
