// Package servertest starts whole opgate servers for tests: the real
// wiring of internal/server on a real store (a SQLite file, or a fresh
// PostgreSQL database) and real ephemeral state (in-process, or Redis
// under a fresh prefix), with a settable clock, bootstrapped, behind an
// httptest server.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/bootstrap"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/sqlite"
)

// Backend names a store and ephemeral pair.
type Backend struct {
	Name     string
	Postgres bool // else SQLite
	Redis    bool // else in-process
}

// Backends are the pairs every end-to-end test runs on.
var Backends = []Backend{{Name: "sqlite"}, {Name: "postgres+redis", Postgres: true, Redis: true}}

// Server is a running test server.
type Server struct {
	T     testing.TB
	App   *server.App
	HTTP  *httptest.Server
	Clock *clocktest.Clock
	Boot  bootstrap.Result
	// Admin is a token of the bootstrap security administrator.
	Admin string
	// Redis and RedisPrefix are the client and key prefix of the
	// ephemeral state on the Redis backend (nil and empty otherwise), for
	// tests that lose that state on purpose (testenv.DeletePrefix).
	Redis       *goredis.Client
	RedisPrefix string
}

// Option changes how Start and Join build a server.
type Option func(*options)

type options struct {
	params authn.PasswordParams
	log    io.Writer
	kek    string
}

// WithKeyEncryptionKeyFile seals the signing keys the server keeps in the
// store with the key in file (OPGATE_KEY_ENCRYPTION_KEY_FILE).
func WithKeyEncryptionKeyFile(file string) Option {
	return func(o *options) { o.kek = file }
}

// WithPasswordParams sets the argon2id parameters of the server's new
// hashes and of its decoy work for unknown operators. Without it servers
// use small, fast ones.
func WithPasswordParams(p authn.PasswordParams) Option {
	return func(o *options) { o.params = p }
}

// WithLog sends the server's JSON log to w, which must be safe for
// concurrent writes. Without it the log is discarded.
func WithLog(w io.Writer) Option {
	return func(o *options) { o.log = w }
}

// Origin is the WebAuthn origin test servers accept.
const Origin = "http://localhost:8080"

// Shared is what a second replica needs to join the first.
type Shared struct {
	Store store.Store
	Eph   ephemeral.Store
}

// Start opens the backend, bootstraps it and serves it.
func Start(t testing.TB, b Backend, opts ...Option) *Server {
	t.Helper()
	clk := clocktest.New()
	st := OpenStore(t, b)
	eph, rc, prefix := openEphemeral(t, b, clk)
	s := Join(t, Shared{st, eph}, clk, opts...)
	s.Redis, s.RedisPrefix = rc, prefix
	res, err := bootstrap.Run(context.Background(), st, clk, bootstrap.Params{SiteID: "honcho", SiteName: "本町市民課", MunicipalityCode: "132152",
		StaffNumber: "0001", Name: "管理 花子"})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	s.Boot = res
	s.Admin = s.Token(res.OperatorID, "honcho", "admin-console")
	return s
}

// Join starts another replica on the same store and ephemeral state.
func Join(t testing.TB, sh Shared, clk *clocktest.Clock, opts ...Option) *Server {
	t.Helper()
	o := options{params: authn.PasswordParams{Memory: 64, Time: 1, Threads: 1}, log: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}
	log := slog.New(slog.NewJSONHandler(o.log, nil))
	a, err := server.Wire(context.Background(), server.Config{Issuer: "opgate-test", RPID: "localhost", RPOrigins: []string{Origin},
		PasswordParams: o.params, KeyEncryptionKeyFile: o.kek}, sh.Store, sh.Eph, clk, log)
	if err != nil {
		t.Fatalf("wire: %v", err)
	}
	hs := httptest.NewServer(a.API.Handler())
	t.Cleanup(hs.Close)
	return &Server{T: t, App: a, HTTP: hs, Clock: clk}
}

// Shared returns what a second replica needs.
func (s *Server) Shared() Shared { return Shared{s.App.Store, s.App.Eph} }

// OpenStore opens a fresh store of the backend's kind.
func OpenStore(t testing.TB, b Backend) store.Store {
	t.Helper()
	ctx := context.Background()
	var st store.Store
	var err error
	if b.Postgres {
		st, err = postgres.Open(ctx, testenv.PostgresURL(t), postgres.Options{MaxConns: 10})
	} else {
		st, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "opgate.db"))
	}
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// OpenEphemeral opens fresh ephemeral state of the backend's kind.
func OpenEphemeral(t testing.TB, b Backend, clk *clocktest.Clock) ephemeral.Store {
	t.Helper()
	e, _, _ := openEphemeral(t, b, clk)
	return e
}

// openEphemeral is OpenEphemeral, also returning the Redis client and key
// prefix on the Redis backend.
func openEphemeral(t testing.TB, b Backend, clk *clocktest.Clock) (ephemeral.Store, *goredis.Client, string) {
	t.Helper()
	if !b.Redis {
		return memory.New(memory.Config{Clock: clk}), nil, ""
	}
	c, prefix := testenv.Redis(t)
	e, err := eredis.New(eredis.Config{Client: c, Prefix: prefix})
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	return e, c, prefix
}

// Token starts a session for op at a terminal, as a login would, and
// returns its access token.
func (s *Server) Token(op opgate.OperatorID, site opgate.SiteID, terminal opgate.TerminalID) string {
	s.T.Helper()
	iss, err := s.App.Sessions.Start(context.Background(), authn.Start{OperatorID: op, SiteID: site, TerminalID: terminal, AMR: []string{"hwk", "user"}})
	if err != nil {
		s.T.Fatalf("start session: %v", err)
	}
	return iss.AccessToken
}

// Response is a decoded answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the body as an object.
func (r Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// Do sends a request. body may be nil, a string (sent as is) or a value
// (sent as JSON).
func (s *Server) Do(method, path, token string, body any) Response {
	s.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.T.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.HTTP.URL+path, rd)
	if err != nil {
		s.T.Fatalf("request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		s.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: out}
}

// Must sends a request and fails the test unless the status is want.
func (s *Server) Must(want int, method, path, token string, body any) Response {
	s.T.Helper()
	r := s.Do(method, path, token, body)
	if r.Status != want {
		s.T.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}
