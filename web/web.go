// Package web owns the pages people use: the terminal login, card
// enrollment, the section chief's console and the security administrator's
// and auditor's views. Pages are rendered on the server with html/template
// and act only through the JSON API, called in-process with the session's
// own bearer token, so that every rule, permission check and audit event is
// the API's; this package holds no rule of its own besides the browser's
// needs (cookies, CSRF, language, CSP). Texts live in the message catalogs
// (catalog/*.json), Japanese first (R6.3).
package web

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/opgate/opgate/internal/clock"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the pages.
type Config struct {
	// API is the JSON API's handler; every action goes through it.
	API http.Handler
	// Secret keys the CSRF tokens. Replicas behind one load balancer must
	// share it. Required, at least 32 bytes.
	Secret []byte
	// Logger receives errors of the pages. If nil, slog.Default() is used.
	Logger *slog.Logger
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
	// SecureCookies marks every cookie Secure even on a request that
	// reached opgate without TLS: the browser's side is HTTPS and a proxy
	// ends TLS in front of opgate. Cookies are Secure on TLS requests in
	// any case.
	SecureCookies bool
}

// Web is the pages' handler.
type Web struct {
	cfg   Config
	log   *slog.Logger
	clk   clock.Clock
	mux   *http.ServeMux
	pages map[string]*template.Template
	cat   *catalogs
	table []consolePage
}

// New validates cfg and parses the templates and catalogs.
func New(cfg Config) (*Web, error) {
	var errs []error
	if cfg.API == nil {
		errs = append(errs, errors.New("API is required"))
	}
	if len(cfg.Secret) < 32 {
		errs = append(errs, errors.New("Secret of at least 32 bytes is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("web: config: %w", err)
	}
	w := &Web{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, mux: http.NewServeMux()}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.clk == nil {
		w.clk = clock.Real{}
	}
	var err error
	if w.cat, err = loadCatalogs(); err != nil {
		return nil, err
	}
	if w.pages, err = parseTemplates(); err != nil {
		return nil, err
	}
	w.routes()
	return w, nil
}

// Prefixes are the paths the pages answer; the server sends everything
// else to the API.
var Prefixes = []string{"/login", "/logout", "/password", "/enroll", "/terminal", "/lang", "/console", "/admin", "/static/"}

// Handles reports whether path belongs to the pages.
func Handles(path string) bool {
	if path == "/" {
		return true
	}
	for _, p := range Prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// Mount returns a handler that serves the pages and sends every other
// request to api.
func (w *Web) Mount(api http.Handler) http.Handler {
	pages := w.Handler()
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if Handles(r.URL.Path) {
			pages.ServeHTTP(rw, r)
			return
		}
		api.ServeHTTP(rw, r)
	})
}

// Handler serves the pages with their security headers.
func (w *Web) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		// External scripts and styles only: no inline code can run even
		// if a value escaped its context.
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
			// One ID for the page and the API calls it makes, so that the
			// API's log lines of one page can be found together.
			var b [8]byte
			_, _ = rand.Read(b[:])
			h.Set("X-Request-ID", hex.EncodeToString(b[:]))
		}
		w.mux.ServeHTTP(rw, r)
	})
}

// CSP is the pages' Content-Security-Policy.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (w *Web) routes() {
	static, _ := fs.Sub(staticFS, "static")
	w.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	w.mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, r *http.Request) { http.Redirect(rw, r, "/console", http.StatusSeeOther) })
	w.mux.HandleFunc("POST /lang", w.post(w.setLang))

	w.mux.HandleFunc("GET /login", w.public(w.loginPage))
	w.mux.HandleFunc("POST /login", w.post(w.passwordLogin))
	w.mux.HandleFunc("POST /login/card/begin", w.post(w.cardBegin))
	w.mux.HandleFunc("POST /login/card/finish", w.post(w.cardFinish))
	w.mux.HandleFunc("POST /logout", w.post(w.logout))
	w.mux.HandleFunc("GET /terminal", w.public(w.terminalPage))
	w.mux.HandleFunc("POST /terminal", w.post(w.setTerminal))
	w.mux.HandleFunc("GET /enroll", w.public(w.enrollPage))
	w.mux.HandleFunc("POST /enroll/begin", w.post(w.enrollBegin))
	w.mux.HandleFunc("POST /enroll/finish", w.post(w.enrollFinish))
	w.mux.HandleFunc("GET /password", w.authed(w.passwordPage, allowChange))
	w.mux.HandleFunc("POST /password", w.post(w.authed(w.changePassword, allowChange)))

	w.table = consolePages()
	for _, p := range w.table {
		h := w.authed(p.handle(w), 0)
		if p.method == "POST" {
			h = w.post(h)
		}
		w.mux.HandleFunc(p.method+" "+p.path, h)
	}
}
