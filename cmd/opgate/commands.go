package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/internal/bootstrap"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/internal/demo"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/store"
)

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("opgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfg := server.LoadConfig()
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (OPGATE_ADDR)")
	sweepEvery := fs.Duration("sweep-interval", time.Second, "how often dated changes and expiries are applied")
	demoMode := fs.Bool("demo", false, "serve a demonstration municipality from a fresh temporary SQLite file (passwords printed at start)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *demoMode {
		// Never the configured store: a fresh file that goes away at exit.
		dir, err := os.MkdirTemp("", "opgate-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DatabaseURL, cfg.RedisURL = "sqlite:"+filepath.Join(dir, "opgate-demo.db"), ""
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	clk := clock.Real{}
	st, err := server.OpenStore(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	eph, closeEph, err := server.OpenEphemeral(ctx, cfg.RedisURL, clk)
	if err != nil {
		return err
	}
	defer closeEph()
	a, err := server.Wire(ctx, cfg, st, eph, clk, log)
	if err != nil {
		return err
	}
	if *demoMode {
		if err := seedDemo(ctx, a, cfg, stdout); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return err
		}
		srv.TLSConfig = tc
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	sctx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	go a.Scheduler(sctx, *sweepEvery)
	// Serve and ServeTLS write srv.TLSConfig (HTTP/2 set-up) in their own
	// goroutine: decide once, before, and never read the field again here.
	useTLS := srv.TLSConfig != nil
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	store := "sqlite"
	if cfg.DatabaseURL[:6] != "sqlite" {
		store = "postgres"
	}
	eph2 := "in-process"
	if cfg.RedisURL != "" {
		eph2 = "redis"
	}
	log.Info("opgate listening", "addr", ln.Addr().String(), "store", store, "ephemeral", eph2, "tls", useTLS)
	select {
	case err := <-errc:
		stopSched()
		return err
	case <-ctx.Done():
	}
	// Graceful shutdown: stop accepting, let requests in flight finish
	// (their transactions commit or roll back whole), then stop the
	// scheduler between batches.
	log.Info("shutting down")
	shctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = srv.Shutdown(shctx)
	stopSched()
	if err != nil {
		return err
	}
	return nil
}

// seedDemo fills the demonstration store and prints how to use it.
func seedDemo(ctx context.Context, a *server.App, cfg server.Config, stdout io.Writer) error {
	params := cfg.PasswordParams
	if params == (authn.PasswordParams{}) {
		params = authn.DefaultPasswordParams
	}
	res, err := demo.Seed(ctx, a.Store, demo.Services{Lifecycle: a.Lifecycle, Authz: a.Authz, Policies: a.Policies}, clock.Real{}, params)
	if err != nil {
		return err
	}
	origin := "http://localhost:8080"
	if len(cfg.RPOrigins) > 0 {
		origin = cfg.RPOrigins[0]
	}
	fmt.Fprintf(stdout, "opgate demonstration (a temporary store, deleted at exit)\n\n"+
		"Open %s/login, set the terminal shown beside the operator, and log in with\n"+
		"\"パスワードでログイン\" using the operator ID and the password %s.\n\n", origin, demo.Password)
	// The name last: its width in a terminal is not its length.
	fmt.Fprintf(stdout, "  %-14s %-16s %-8s %-15s %s\n", "operator ID", "role", "site", "terminal", "name")
	for _, o := range res.Operators {
		fmt.Fprintf(stdout, "  %-14s %-16s %-8s %-15s %s\n", o.ID, o.Role, o.SiteID, o.Terminal, o.Name)
	}
	fmt.Fprintf(stdout, "\nCard enrollment code of %s (for a real or virtual FIDO2 card at %s/enroll): %s\n\n",
		res.Operators[0].ID, origin, res.EnrollmentCode)
	return nil
}

func tlsConfig(cfg server.Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSClientCA != "" {
		pem, err := os.ReadFile(cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("OPGATE_TLS_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("OPGATE_TLS_CLIENT_CA: no certificate found")
		}
		tc.ClientCAs = pool
		// Terminals present certificates; browsers of the console may not,
		// so a missing certificate is allowed and a wrong one refused.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintln(stdout, "migrations applied")
	return nil
}

func cmdBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bootstrap", stderr)
	var p bootstrap.Params
	var site, terminal string
	fs.StringVar(&site, "site-id", "", "ID of the first site (required)")
	fs.StringVar(&p.SiteName, "site-name", "", "name of the first site (required)")
	fs.StringVar(&p.MunicipalityCode, "municipality", "", "6-digit local government code (required)")
	fs.StringVar(&terminal, "terminal-id", "admin-console", "ID of the first terminal")
	fs.StringVar(&p.StaffNumber, "staff-number", "", "staff number of the first security administrator (required)")
	fs.StringVar(&p.Name, "name", "", "name of the first security administrator (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p.SiteID, p.TerminalID = opgate.SiteID(site), opgate.TerminalID(terminal)
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := bootstrap.Run(ctx, st, clock.Real{}, p)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{"operator_id": res.OperatorID, "temporary_password": res.TemporaryPassword,
			"enrollment_code": res.EnrollmentCode, "enrollment_expires_at": res.EnrollmentExpires.Format(time.RFC3339)})
	}
	fmt.Fprintf(stdout, "opgate is set up. Keep these once; they are not shown again.\n\n"+
		"  operator ID          %s  (security_admin at every site)\n"+
		"  temporary password   %s  (must be changed at first login)\n"+
		"  card enrollment code %s  (single use, until %s)\n",
		res.OperatorID, res.TemporaryPassword, res.EnrollmentCode, res.EnrollmentExpires.Format(time.RFC3339))
	return nil
}

func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verify", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		fmt.Fprintf(stderr, "opgate: %v\n", err)
		return 1
	}
	defer st.Close()
	start := time.Now()
	res, err := audit.VerifyChain(ctx, st)
	if err != nil {
		fmt.Fprintf(stderr, "opgate: audit verify: %v\n", err)
		return 1
	}
	if !res.OK {
		fmt.Fprintf(stdout, "audit chain BROKEN at seq %d: %s (%d events verified before it)\n", res.FirstBadSeq, res.Problem, res.Events)
		return 3
	}
	fmt.Fprintf(stdout, "audit chain intact: %d events, head seq %d, head hash %s (%s)\n",
		res.Events, res.HeadSeq, hex.EncodeToString(res.HeadHash), time.Since(start).Round(time.Millisecond))
	return 0
}

func cmdKeysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys rotate", stderr)
	retire := fs.Duration("retire-after", 24*time.Hour, "how long the old keys keep verifying (at least the access token TTL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := server.LoadConfig()
	sealer, err := cfg.KeySealer()
	if err != nil {
		return err
	}
	st, err := server.OpenStore(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	k, err := authn.RotateSigningKeys(ctx, store.Runner[authn.KeyTx]{S: st}, sealer, clock.Real{}.Now(), *retire)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new signing key %s; running servers pick it up within one sweep interval\n", k.ID)
	return nil
}

func cmdServiceAdd(ctx context.Context, name string, stdout io.Writer) error {
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	key, err := authn.AddServiceKey(ctx, store.Runner[authn.ServiceTx]{S: st}, name, clock.Real{}.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "service key for %s (shown once; keep it secret):\n%s\n", name, key)
	return nil
}

// cmdEmergencyResume lifts a stop without an API session: when everyone
// who could resume is locked out, the server's host is the last resort.
func cmdEmergencyResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("emergency resume", stderr)
	site := fs.String("site-id", "", "the site whose stop to lift (default: the stop of every site)")
	reason := fs.String("reason", "", "why (required; recorded in the history)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *reason == "" {
		return errors.New("--reason is required")
	}
	scope := opgate.AllSites
	if *site != "" {
		scope = opgate.SiteID(*site)
	}
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	e := authn.NewEmergencies(store.Runner[authn.EmergencyTx]{S: st}, nil, clock.Real{})
	if err := e.Resume(ctx, lifecycle.Actor{TerminalID: "host"}, scope, *reason); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "emergency stop for %s lifted\n", scope)
	return nil
}

// cmdAuditPurge removes the history past its retention (policy
// retention_s) and older than --before, leaving the chain verifiable from
// the anchored checkpoint, and verifies it afterwards.
func cmdAuditPurge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit purge", stderr)
	beforeS := fs.String("before", "", "remove only events older than this RFC 3339 time (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	before, err := time.Parse(time.RFC3339, *beforeS)
	if err != nil {
		fmt.Fprint(stderr, "opgate: audit purge: --before must be an RFC 3339 time, e.g. 2019-04-01T00:00:00+09:00\n")
		return 2
	}
	st, err := server.OpenStore(ctx, server.LoadConfig().DatabaseURL)
	if err != nil {
		fmt.Fprintf(stderr, "opgate: %v\n", err)
		return 1
	}
	defer st.Close()
	pol, err := policy.Load(ctx, store.Runner[policy.Tx]{S: st})
	if err != nil {
		fmt.Fprintf(stderr, "opgate: audit purge: %v\n", err)
		return 1
	}
	res, err := report.Purge(ctx, store.Runner[report.PurgeTx]{S: st}, pol, before, time.Now(), "")
	if err != nil {
		fmt.Fprintf(stderr, "opgate: audit purge: %v\n", err)
		return 1
	}
	if res.Removed == 0 {
		fmt.Fprintln(stdout, "nothing to purge: no event is both older than --before and past its retention")
		return 0
	}
	fmt.Fprintf(stdout, "purged %d events through seq %d; the chain is anchored there (hash %s)\n", res.Removed, res.AnchorSeq, hex.EncodeToString(res.AnchorHash))
	for typ, n := range res.ByType {
		fmt.Fprintf(stdout, "  %-24s %d\n", typ, n)
	}
	return cmdAuditVerify(ctx, nil, stdout, stderr)
}
