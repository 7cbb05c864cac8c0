// Package httpapi owns the HTTP edge: routes, bearer authentication,
// request decoding, the DTOs of the contract, the one table that turns
// errors into RFC 9457 problems, /openapi.json, health, readiness and
// metrics. Handlers decode, call a domain service and encode; rules live in
// the domain packages.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
)

// maxBody is the largest request body read (API.md: 413 above 1 MiB).
const maxBody = 1 << 20

// Views reads what the API shows beside the domain services' answers.
type Views interface {
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	CardsOf(ctx context.Context, op opgate.OperatorID) ([]authn.Card, error)
	PasswordOf(ctx context.Context, op opgate.OperatorID) (authn.PasswordRecord, bool, error)
}

// Config wires the server. Every field but Logger, Registry and Clock is
// required.
type Config struct {
	Lifecycle   *lifecycle.Service
	Authz       *authz.Service
	Sessions    *authn.Sessions
	Policy      policy.DB
	Policies    *policy.Source
	Chain       audit.Source
	Views       Views
	Logins      *authn.Logins
	Emergencies *authn.Emergencies
	Services    authn.ServiceDB
	// Reviews and Reports serve API.md "Reviews and reports"; when either
	// is nil those routes are not registered.
	Reviews *review.Service
	Reports *report.Service
	// TerminalCertificates says terminals present TLS client certificates
	// (OPGATE_TLS_CLIENT_CA): logins without one are refused.
	TerminalCertificates bool
	// Ready reports whether the store and the ephemeral state answer.
	Ready func(ctx context.Context) error
	// Logger receives JSON logs. If nil, slog.Default() is used.
	Logger *slog.Logger
	// Registry receives the metrics. If nil, a new registry is used.
	Registry *prometheus.Registry
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	clk     clock.Clock
	mux     *http.ServeMux
	routes  []Route
	metrics *metrics
	reg     *prometheus.Registry
}

// Route is one method and path the server answers.
type Route struct{ Method, Path string }

// New validates cfg and builds the routes.
func New(cfg Config) (*Server, error) {
	var errs []error
	for name, v := range map[string]any{"Lifecycle": cfg.Lifecycle, "Authz": cfg.Authz, "Sessions": cfg.Sessions,
		"Policy": cfg.Policy, "Policies": cfg.Policies, "Chain": cfg.Chain, "Views": cfg.Views, "Ready": cfg.Ready,
		"Logins": cfg.Logins, "Emergencies": cfg.Emergencies, "Services": cfg.Services} {
		if isNil(v) {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("httpapi: config: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, mux: http.NewServeMux(), reg: cfg.Registry}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clk == nil {
		s.clk = clock.Real{}
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(s.reg)
	s.register()
	s.registerAuth()
	s.registerCheck()
	s.registerReports()
	return s, nil
}

func isNil(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case *lifecycle.Service:
		return x == nil
	case *authz.Service:
		return x == nil
	case *authn.Sessions:
		return x == nil
	case *policy.Source:
		return x == nil
	case *authn.Logins:
		return x == nil
	case *authn.Emergencies:
		return x == nil
	case func(context.Context) error:
		return x == nil
	}
	return false
}

// Handler is the whole API with its middleware.
func (s *Server) Handler() http.Handler { return s.withRequest(s.mux) }

// Routes lists every route, for the OpenAPI test.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// authMode says how a route authenticates.
type authMode int

const (
	public    authMode = iota // no token
	bearer                    // a live session
	bearerAny                 // a live session, even one that must change its password
)

// handler is what routes implement: errors are returned, never written.
type handler func(w http.ResponseWriter, r *http.Request, p authn.Principal) error

// handle registers a route. perm, when set, must be held at some site
// before the request's content is even read, so that a caller without it
// learns nothing about the target (API.md, Conventions).
func (s *Server) handle(method, path string, mode authMode, perm opgate.Permission, h handler) {
	s.routes = append(s.routes, Route{method, path})
	pattern := method + " " + path
	var wildcards []string
	for _, m := range wildcard.FindAllStringSubmatch(path, -1) {
		wildcards = append(wildcards, m[1])
	}
	s.mux.Handle(pattern, s.instrument(pattern, func(w http.ResponseWriter, r *http.Request) {
		var p authn.Principal
		if mode != public {
			var err error
			if p, err = s.authenticate(r); err != nil {
				s.writeProblem(w, r, err)
				return
			}
			if p.PasswordChangeRequired && mode != bearerAny {
				s.writeProblem(w, r, errPasswordChange)
				return
			}
			setActor(r.Context(), p.OperatorID)
			if perm != "" {
				ok, err := s.cfg.Authz.HoldsAnywhere(r.Context(), p.OperatorID, perm)
				if err == nil && !ok {
					err = authz.ErrForbidden
				}
				if err != nil {
					s.writeProblem(w, r, err)
					return
				}
			}
		}
		if err := cleanInput(r, wildcards); err != nil {
			s.writeProblem(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := h(w, r, p); err != nil {
			s.writeProblem(w, r, err)
		}
	}))
}

// wildcard finds the names of a route's path wildcards.
var wildcard = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(?:\.\.\.)?\}`)

// cleanInput refuses path values and query parameters that no stored
// value can equal: text that is not UTF-8 or that holds a NUL, which
// PostgreSQL refuses outright (an internal error) and SQLite would take.
// Such an ID names nothing (404); such a parameter is invalid (400).
func cleanInput(r *http.Request, wildcards []string) error {
	for _, name := range wildcards {
		if !cleanText(r.PathValue(name)) {
			return errNotFound
		}
	}
	for k, vs := range r.URL.Query() {
		if !cleanText(k) {
			return invalid("query", "parameters must be UTF-8 text without NUL")
		}
		for _, v := range vs {
			if !cleanText(v) {
				return invalid(truncate(k, 64), "must be UTF-8 text without NUL")
			}
		}
	}
	return nil
}

func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

func (s *Server) authenticate(r *http.Request) (authn.Principal, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return authn.Principal{}, errUnauthenticated
	}
	return s.cfg.Sessions.Authenticate(r.Context(), strings.TrimSpace(tok))
}

func actorOf(r *http.Request, p authn.Principal) lifecycle.Actor {
	return lifecycle.Actor{ID: p.OperatorID, TerminalID: p.TerminalID}
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyActor
)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

type actorSlot struct{ id opgate.OperatorID }

func setActor(ctx context.Context, id opgate.OperatorID) {
	if s, ok := ctx.Value(keyActor).(*actorSlot); ok {
		s.id = id
	}
}

// statusWriter remembers the status for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withRequest gives every request an ID, a JSON log line without secrets
// (no headers, no bodies, no query strings), recovery from panics as a
// plain 500, and answers for unknown paths in the problem format.
func (s *Server) withRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		slot := &actorSlot{}
		ctx := context.WithValue(context.WithValue(r.Context(), keyRequestID, id), keyActor, slot)
		r = r.WithContext(ctx)
		w.Header().Set("X-Request-ID", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(ctx, "panic", slog.String("request_id", id), slog.String("panic", fmt.Sprint(v)))
				if sw.status == 0 {
					s.writeProblem(sw, r, errors.New("panic"))
				}
			}
			s.log.InfoContext(ctx, "request", slog.String("request_id", id), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", sw.status), slog.Int("bytes", sw.bytes),
				slog.String("actor", string(slot.id)), slog.Duration("duration", time.Since(start)))
		}()
		if _, pattern := s.mux.Handler(r); pattern == "" {
			// No route: say so in the problem format (405 when the path
			// exists under another method).
			s.writeProblem(sw, r, s.noRoute(sw, r))
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// noRoute tells a path no route has (404) from a method the path does not
// take (405, with the methods it does take in Allow, RFC 9110 §15.5.6).
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) error {
	var allow []string
	for _, rt := range s.routes {
		if slices.Contains(allow, rt.Method) {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = rt.Method
		if _, p := s.mux.Handler(probe); p != "" {
			allow = append(allow, rt.Method)
		}
	}
	if len(allow) == 0 {
		return errNotFound
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return errMethod
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// metrics are request counts and latencies by route and status.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opgate_http_requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "opgate_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (s *Server) instrument(pattern string, h http.HandlerFunc) http.Handler {
	lat := s.metrics.latency.WithLabelValues(pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h(w, r)
		status := 0
		if sw, ok := w.(*statusWriter); ok {
			status = sw.status
		}
		lat.Observe(time.Since(start).Seconds())
		s.metrics.requests.WithLabelValues(pattern, fmt.Sprint(status)).Inc()
	})
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
}
