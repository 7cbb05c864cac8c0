// Package server wires one opgate server: the store and ephemeral state
// named by the configuration, the domain services on top, the HTTP API and
// the scheduler. The command and the end-to-end tests both build servers
// through it, so that what is tested is what runs.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/x/revoke"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/httpapi"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/web"
)

// App is one wired server.
type App struct {
	Store     store.Store
	Eph       ephemeral.Store
	Lifecycle *lifecycle.Service
	Authz     *authz.Service
	Sessions  *authn.Sessions
	Policies  *policy.Source
	Logins    *authn.Logins
	Emergency *authn.Emergencies
	Reviews   *review.Service
	Reports   *report.Service
	API       *httpapi.Server
	// Web is the pages (login, enrollment, console), served beside the
	// API by Handler.
	Web *web.Web
	clk clock.Clock
	// keysFromStore is false when a key file pins the signing key.
	keysFromStore bool
	sealer        *authn.KeySealer
	log           *slog.Logger
	// lastDormant is when dormant operators were last looked for: a scan
	// of every operator is worth doing once a minute, not every sweep.
	dormantMu   sync.Mutex
	lastDormant time.Time
}

// wire builds every service on an open store and ephemeral state.
func Wire(ctx context.Context, cfg Config, st store.Store, eph ephemeral.Store, clk clock.Clock, log *slog.Logger) (*App, error) {
	cfg = cfg.withDefaults()
	a := &App{Store: st, Eph: eph, clk: clk, log: log, keysFromStore: cfg.SigningKeyFile == ""}
	var err error
	if a.sealer, err = cfg.KeySealer(); err != nil {
		return nil, err
	}
	keys, err := authn.LoadSigningKeys(ctx, store.Runner[authn.KeyTx]{S: st}, cfg.SigningKeyFile, a.sealer, clk.Now())
	if err != nil {
		return nil, err
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{Issuer: cfg.Issuer, Keys: keys, Clock: clk})
	if err != nil {
		return nil, err
	}
	polDB := store.Runner[policy.Tx]{S: st}
	a.Policies = policy.NewSource(func(ctx context.Context) (policy.Policy, error) { return policy.Load(ctx, polDB) }, clk, 0)
	if a.Authz, err = authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: st}, Clock: clk}); err != nil {
		return nil, err
	}
	// The decision index is checked against the store on every decision,
	// so loading it is only a head start; it is loaded before serving so
	// that the first decisions do not each read their operator's grants.
	began := time.Now()
	n, err := a.Authz.LoadIndex(ctx)
	if err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "decision index loaded", "operators", n, "took", time.Since(began).String())
	if a.Sessions, err = authn.NewSessions(authn.SessionConfig{DB: store.Runner[authn.SessionTx]{S: st}, Cache: eph, Tokens: tokens,
		Policy: a.Policies, IsNotFound: func(err error) bool { return errors.Is(err, ephemeral.ErrNotFound) }, Clock: clk}); err != nil {
		return nil, err
	}
	a.Emergency = authn.NewEmergencies(store.Runner[authn.EmergencyTx]{S: st}, a.Sessions, clk)
	mdsRoot, err := cfg.FIDOMetadataRoot()
	if err != nil {
		return nil, err
	}
	offlineRevocation()
	cer, err := authn.NewCeremonies(authn.CeremonyConfig{RPID: cfg.RPID, RPName: "opgate", Origins: cfg.RPOrigins, Clock: clk,
		MetadataFile: cfg.FIDOMetadataFile, MetadataRoot: mdsRoot})
	if err != nil {
		return nil, err
	}
	// Decoy credential IDs for unknown operators are keyed by the signing
	// key, which every replica shares.
	secret := sha256.Sum256(append([]byte("opgate decoy credential\x00"), keys[0].Private.D.Bytes()...))
	if a.Logins, err = authn.NewLogins(authn.LoginConfig{DB: store.Runner[authn.LoginTx]{S: st}, Challenges: eph, Ceremonies: cer, Sessions: a.Sessions,
		Policy: a.Policies, Access: a.Authz, Emergency: a.Emergency, Secret: secret[:], Clock: clk,
		IsNotFound: func(err error) bool { return errors.Is(err, ephemeral.ErrNotFound) }, PasswordParams: cfg.PasswordParams}); err != nil {
		return nil, err
	}
	if a.Lifecycle, err = lifecycle.New(lifecycle.Config{DB: store.Runner[lifecycle.Tx]{S: st}, Authorizer: a.Authz, Sessions: a.Sessions, Clock: clk}); err != nil {
		return nil, err
	}
	if a.Reviews, err = review.New(review.Config{DB: store.Runner[review.Tx]{S: st}, Authorizer: a.Authz, Policies: a.Policies, Clock: clk}); err != nil {
		return nil, err
	}
	if a.Reports, err = report.New(report.Config{Source: st, Authorizer: a.Authz, Policies: a.Policies, Recorder: store.Runner[report.AuditTx]{S: st}, Clock: clk}); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.API, err = httpapi.New(httpapi.Config{
		Lifecycle: a.Lifecycle, Authz: a.Authz, Sessions: a.Sessions, Policy: polDB, Policies: a.Policies, Chain: st,
		Views: views{st}, Ready: a.ready, Logins: a.Logins, Emergencies: a.Emergency, Services: store.Runner[authn.ServiceTx]{S: st},
		TerminalCertificates: cfg.TLSClientCA != "", Logger: log, Registry: reg, Clock: clk, Reviews: a.Reviews, Reports: a.Reports,
	})
	if err != nil {
		return nil, err
	}
	// The pages' CSRF key, like the decoys', follows the shared signing
	// key so that every replica accepts every replica's forms.
	csrf := sha256.Sum256(append([]byte("opgate web csrf\x00"), keys[0].Private.D.Bytes()...))
	// Behind a proxy that ends TLS, the request reaching opgate is plain
	// HTTP while the browser's origin is HTTPS: its cookies must still be
	// Secure.
	secure := slices.ContainsFunc(cfg.RPOrigins, func(o string) bool { return strings.HasPrefix(o, "https://") })
	if a.Web, err = web.New(web.Config{API: a.API.Handler(), Secret: csrf[:], Logger: log, Clock: clk, SecureCookies: secure}); err != nil {
		return nil, err
	}
	return a, nil
}

// Handler is what the server listens with: the pages and the API.
func (a *App) Handler() http.Handler { return a.Web.Mount(a.API.Handler()) }

func (a *App) ready(ctx context.Context) error {
	return errors.Join(a.Store.Ping(ctx), a.Eph.Ping(ctx))
}

// Sweep runs everything dated: changes due, IDs past their end, grants
// past valid_until, and tombstones for sessions whose end the cache may
// have missed. Each part is exported by its package so that tests call it
// after moving the clock.
func (a *App) Sweep(ctx context.Context, since time.Time) { a.sweep(ctx, since) }

// sweep reports whether the session tombstones of the window are all
// written: until they are, the scheduler keeps asking from the same time.
func (a *App) sweep(ctx context.Context, since time.Time) (reconciled bool) {
	if n, err := a.Lifecycle.Sweep(ctx); err != nil {
		a.log.ErrorContext(ctx, "lifecycle sweep", "error", err.Error())
	} else if n > 0 {
		a.log.InfoContext(ctx, "lifecycle sweep", "applied", n)
	}
	if n, err := a.Authz.Sweep(ctx); err != nil {
		a.log.ErrorContext(ctx, "grant sweep", "error", err.Error())
	} else if n > 0 {
		a.log.InfoContext(ctx, "grant sweep", "expired", n)
	}
	if opened, closed, err := a.Reviews.Sweep(ctx); err != nil {
		a.log.ErrorContext(ctx, "review sweep", "error", err.Error())
	} else if opened+closed > 0 {
		a.log.InfoContext(ctx, "review sweep", "opened", opened, "closed", closed)
	}
	if a.dormantDue() {
		if n, err := a.SuspendDormant(ctx); err != nil {
			a.log.ErrorContext(ctx, "dormant sweep", "error", err.Error())
		} else if n > 0 {
			a.log.InfoContext(ctx, "dormant sweep", "suspended", n)
		}
	}
	reconciled = true
	if err := a.Sessions.Reconcile(ctx, since); err != nil {
		a.log.WarnContext(ctx, "session reconcile", "error", err.Error())
		reconciled = false
	}
	// Keys rotated elsewhere (another replica, `opgate keys rotate`) are
	// picked up here, so that JWKS and verification follow the store.
	if a.keysFromStore {
		if err := authn.ReloadSigningKeys(ctx, store.Runner[authn.KeyTx]{S: a.Store}, a.Sessions.Tokens(), a.sealer, a.clk.Now()); err != nil {
			a.log.WarnContext(ctx, "signing key reload", "error", err.Error())
		}
	}
	return reconciled
}

func (a *App) dormantDue() bool {
	a.dormantMu.Lock()
	defer a.dormantMu.Unlock()
	now := a.clk.Now()
	if now.Sub(a.lastDormant) < time.Minute && !now.Before(a.lastDormant) {
		return false
	}
	a.lastDormant = now
	return true
}

// SuspendDormant suspends operators unused for the policy's
// dormant_after_s (R1.6).
func (a *App) SuspendDormant(ctx context.Context) (int, error) {
	p, err := a.Policies.Policy(ctx)
	if err != nil {
		return 0, err
	}
	return a.Lifecycle.SuspendDormant(ctx, p.DormantAfter)
}

// Purge removes the history past retention and older than before, with
// one audit.purged event (R4.3).
func (a *App) Purge(ctx context.Context, before time.Time) (report.Purged, error) {
	p, err := a.Policies.Policy(ctx)
	if err != nil {
		return report.Purged{}, err
	}
	return report.Purge(ctx, store.Runner[report.PurgeTx]{S: a.Store}, p, before, a.clk.Now(), "")
}

// Scheduler calls Sweep on a ticker until ctx ends.
func (a *App) Scheduler(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	a.Schedule(ctx, t.C)
}

// Schedule sweeps on every tick until ctx ends, each time on the window
// since the last sweep that reconciled; the time is the App's clock, not
// the tick's.
func (a *App) Schedule(ctx context.Context, ticks <-chan time.Time) {
	last := a.clk.Now().Add(-time.Minute)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			now := a.clk.Now()
			// A window whose tombstones could not all be written (the
			// cache unreachable) is asked for again next time.
			if a.sweep(ctx, last.Add(-5*time.Second)) {
				last = now
			}
		}
	}
}

// views reads what the API shows beside the services' answers.
type views struct{ s store.Store }

func (v views) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error) {
	var out []audit.Event
	err := v.s.View(ctx, func(tx store.Tx) (err error) { out, err = tx.ListAudit(ctx, f); return })
	return out, err
}

func (v views) CardsOf(ctx context.Context, op opgate.OperatorID) ([]authn.Card, error) {
	var out []authn.Card
	err := v.s.View(ctx, func(tx store.Tx) (err error) { out, err = tx.ListCards(ctx, op); return })
	return out, err
}

func (v views) PasswordOf(ctx context.Context, op opgate.OperatorID) (authn.PasswordRecord, bool, error) {
	var p authn.PasswordRecord
	err := v.s.View(ctx, func(tx store.Tx) (err error) { p, err = tx.GetPassword(ctx, op); return })
	if errors.Is(err, opgate.ErrNotFound) {
		return p, false, nil
	}
	return p, err == nil, err
}

// offlineRevocation keeps go-webauthn's certificate revocation checks
// (package revoke, whose HTTP client is process-wide) off the network: a
// request fails at once, and the check then reports that it cannot tell,
// which the metadata decoder takes as not revoked. opgate makes no
// network calls; the metadata blob's signature and trust anchor are still
// verified.
var offlineRevocation = sync.OnceFunc(func() {
	revoke.HTTPClient = &http.Client{Transport: refuseTransport{}}
})

type refuseTransport struct{}

func (refuseTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("opgate makes no network calls")
}
