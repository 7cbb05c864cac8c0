package web_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral/memory"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/demo"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/store/sqlite"
)

// rig is a whole server, pages and API, with the demonstration
// municipality, at http://localhost:PORT (a WebAuthn origin browsers
// accept without TLS).
type rig struct {
	t    testing.TB
	app  *server.App
	clk  *clocktest.Clock
	URL  string
	demo demo.Result
}

var fastHash = authn.PasswordParams{Memory: 64, Time: 1, Threads: 1}

// newRig serves the demonstration municipality, pages and API, on SQLite.
func newRig(t testing.TB) *rig {
	t.Helper()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "opgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	clk := clocktest.New()
	eph := memory.New(memory.Config{Clock: clk})
	a, err := server.Wire(ctx, server.Config{RPID: "localhost", RPOrigins: []string{origin}, PasswordParams: fastHash}, st, eph, clk,
		slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	res, err := demo.Seed(ctx, st, demo.Services{Lifecycle: a.Lifecycle, Authz: a.Authz, Policies: a.Policies}, clk, fastHash)
	if err != nil {
		t.Fatal(err)
	}
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: a.Handler()}}
	hs.Start()
	t.Cleanup(hs.Close)
	return &rig{t: t, app: a, clk: clk, URL: origin, demo: res}
}

// logWriter shows the server's warnings and errors in the test's log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// op returns the demonstration operator with that name.
func (r *rig) op(name string) demo.Operator {
	for _, o := range r.demo.Operators {
		if o.Name == name {
			return o
		}
	}
	r.t.Fatalf("no demo operator %q", name)
	return demo.Operator{}
}

// client is a browser without script: a cookie jar that does not follow
// redirects, speaking a language.
type client struct {
	t    testing.TB
	r    *rig
	http *http.Client
	lang string
}

func (r *rig) client(lang string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: r.t, r: r, lang: lang, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

func (c *client) do(method, path string, form url.Values, header map[string]string) page {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.r.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.lang != "" {
		req.Header.Set("Accept-Language", c.lang)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, resp.Header, string(b)}
}

func (c *client) get(path string) page { c.t.Helper(); return c.do("GET", path, nil, nil) }

var csrfMeta = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)

// csrf reads the form token from a page.
func (c *client) csrf() string {
	c.t.Helper()
	p := c.get("/login")
	m := csrfMeta.FindStringSubmatch(p.Body)
	if m == nil {
		c.t.Fatalf("no CSRF token in the login page")
	}
	return m[1]
}

// post sends a form with the page's CSRF token.
func (c *client) post(path string, form url.Values) page {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", c.csrf())
	}
	return c.do("POST", path, form, nil)
}

// login logs in with the demonstration password at the operator's terminal.
func (c *client) login(o demo.Operator) {
	c.t.Helper()
	p := c.post("/login", url.Values{"terminal_id": {string(o.Terminal)}, "operator_id": {string(o.ID)}, "password": {demo.Password}})
	if p.Status != http.StatusSeeOther {
		c.t.Fatalf("login %s: status %d: %s", o.Name, p.Status, p.Body)
	}
}
