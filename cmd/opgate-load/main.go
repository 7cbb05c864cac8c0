// Command opgate-load measures card logins. It starts a real opgate server
// (the same wiring as `opgate serve`) on a loopback port, on the embedded
// store or on PostgreSQL and Redis, issues operators and enrolls a virtual
// FIDO2 card for each through the API, then has the cards log in
// concurrently over HTTP — begin, the card's signature, finish — and prints
// logins/s with p50 and p99. In the same run it measures the floor: the
// WebAuthn assertion validation plus one token signature, in-process, with
// the same concurrency, and reports the ratio of whole logins to it.
//
// With -mode check it logs the cards in once and asks the decision point
// (POST /v1/authz/check, each decision durably recorded) over HTTP, beside
// GET /v1/me with the same sessions and clients; with -openfga it then asks
// an OpenFGA server the same questions twice, on plain RBAC with sites as
// domains and on an equivalent model (time-bound grants, the terminal's
// site, the operator's status, restricted records), and prints both ratios. With -mode password it measures
// password logins beside argon2id alone.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/bootstrap"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/internal/server"
)

const origin = "http://localhost:8080"

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "opgate-load: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	cards := flag.Int("cards", 64, "virtual cards (one operator each)")
	workers := flag.Int("concurrency", 32, "concurrent logins")
	duration := flag.Duration("duration", 10*time.Second, "how long to log in")
	dbURL := flag.String("db", "", "postgres:// URL of a server; a fresh database is made there and dropped after. Empty: a SQLite file in a temporary directory")
	redisURL := flag.String("redis", "", "redis:// URL; empty: in-process ephemeral state")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the measured phases to this file")
	openfga := flag.String("openfga", "", "with -mode check: the URL of an OpenFGA server to ask the same questions, in the same run")
	mode := flag.String("mode", "card", "card: card logins; password: password logins (policy allowing them); check: decisions (POST /v1/authz/check)")
	flag.Parse()
	if *cards < 1 || *workers < 1 || *duration <= 0 {
		return errors.New("-cards, -concurrency and -duration must be positive")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "opgate-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	url := "sqlite:" + filepath.Join(dir, "opgate.db")
	if *dbURL != "" {
		fresh, drop, err := freshDatabase(ctx, *dbURL)
		if err != nil {
			return err
		}
		defer drop()
		url = fresh
	}
	st, err := server.OpenStore(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	var eph ephemeral.Store = memory.New(memory.Config{})
	if *redisURL != "" {
		opt, err := goredis.ParseURL(*redisURL)
		if err != nil {
			return errors.New("-redis is not a redis:// URL")
		}
		c := goredis.NewClient(opt)
		defer c.Close()
		prefix := "opgate-load-" + randomHex() + ":"
		if eph, err = eredis.New(eredis.Config{Client: c, Prefix: prefix}); err != nil {
			return err
		}
		defer func() {
			// Leave nothing behind in a shared Redis.
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		}()
	}
	clk := clock.Real{}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	app, err := server.Wire(ctx, server.Config{RPID: "localhost", RPOrigins: []string{origin}}, st, eph, clk, log)
	if err != nil {
		return err
	}
	boot, err := bootstrap.Run(ctx, st, clk, bootstrap.Params{SiteID: "honcho", SiteName: "本町", MunicipalityCode: "132152",
		StaffNumber: "load-admin", Name: "負荷 管理"})
	if err != nil {
		return fmt.Errorf("bootstrap (use an empty database): %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: app.API.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	c := &client{base: "http://" + ln.Addr().String(), http: newHTTPClient(*workers)}
	iss, err := app.Sessions.Start(ctx, authn.Start{OperatorID: boot.OperatorID, SiteID: "honcho", TerminalID: "admin-console", AMR: []string{"hwk", "user"}})
	if err != nil {
		return err
	}
	admin := iss.AccessToken

	fmt.Printf("setting up %d operators with cards…\n", *cards)
	vcards, err := enrollAll(c, admin, *cards)
	if err != nil {
		return err
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	switch *mode {
	case "password":
		return passwordRun(c, admin, *cards, *workers, *duration)
	case "check":
		return checkRun(c, vcards, *workers, *duration, *openfga)
	}
	fmt.Printf("logging in for %s with %d concurrent clients…\n", *duration, *workers)
	lat, fails := loginLoad(c, vcards, *workers, *duration)
	pprof.StopCPUProfile()
	fmt.Println(report("whole login over HTTP", lat, fails, *duration))

	floor, err := floorLoad(*workers, *duration)
	if err != nil {
		return err
	}
	fmt.Println(report("floor: assertion validation + token signature, in-process", floor, 0, *duration))
	if len(floor) > 0 && len(lat) > 0 {
		fmt.Printf("ratio of whole logins to the floor: %.2f\n", float64(len(lat))/float64(len(floor)))
	}
	return nil
}

func newHTTPClient(workers int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers * 2}}
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type client struct {
	base string
	http *http.Client
}

func (c *client) do(method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func (c *client) must(want int, method, path, token string, body any) ([]byte, error) {
	status, out, err := c.do(method, path, token, body)
	if err != nil {
		return nil, err
	}
	if status != want {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, status, out)
	}
	return out, nil
}

// failer reports a virtual card's misuse as an error, not a test failure.
type failer struct {
	mu  sync.Mutex
	err error
}

func (f *failer) Helper() {}
func (f *failer) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
	panic(f)
}

// grantUntil ends every grant of the run: time-bound rights, which each
// decision (and the OpenFGA model's condition) evaluates.
var grantUntil = time.Now().AddDate(1, 0, 0).UTC().Truncate(time.Second)

func enrollAll(c *client, admin string, n int) ([]*authntest.Card, error) {
	f := &failer{}
	out := make([]*authntest.Card, 0, n)
	for i := range n {
		b, err := c.must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": fmt.Sprintf("L%05d", i), "name": "負荷 試験", "site_id": "honcho", "employment_type": "regular"})
		if err != nil {
			return nil, err
		}
		var op struct {
			OperatorID string `json:"operator_id"`
		}
		_ = json.Unmarshal(b, &op)
		if _, err := c.must(201, "POST", "/v1/operators/"+op.OperatorID+"/grants", admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "load",
			"valid_until": grantUntil.Format(time.RFC3339)}); err != nil {
			return nil, err
		}
		b, err = c.must(201, "POST", "/v1/operators/"+op.OperatorID+"/cards/enrollments", admin, map[string]any{"card_serial": fmt.Sprintf("CARD-%05d", i)})
		if err != nil {
			return nil, err
		}
		var e struct {
			Code string `json:"enrollment_code"`
		}
		_ = json.Unmarshal(b, &e)
		begin, err := c.must(200, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": e.Code})
		if err != nil {
			return nil, err
		}
		var bg struct {
			ID string `json:"enrollment_id"`
		}
		_ = json.Unmarshal(begin, &bg)
		card := authntest.NewCard(f)
		cred := card.Create(begin, origin)
		if _, err := c.must(201, "POST", "/v1/enroll/finish", "", map[string]any{"enrollment_id": bg.ID, "credential": json.RawMessage(cred)}); err != nil {
			return nil, err
		}
		out = append(out, card)
	}
	return out, nil
}

// timed runs op on workers goroutines until d is up and returns the
// latency of each success and the number of failures. Each worker first
// calls setup for its own op (a card of its own, say).
func timed(workers int, d time.Duration, setup func() (func() error, error)) ([]time.Duration, int64, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var fails atomic.Int64
	var setupErr error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			op, err := setup()
			if err != nil {
				mu.Lock()
				setupErr = err
				mu.Unlock()
				return
			}
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				if err := op(); err != nil {
					fails.Add(1)
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, fails.Load(), setupErr
}

// loginLoad runs whole logins until the duration is up. Each card is used
// by one client at a time, as a card is in one reader.
func loginLoad(c *client, cards []*authntest.Card, workers int, d time.Duration) ([]time.Duration, int64) {
	pool := make(chan *authntest.Card, len(cards))
	for _, cd := range cards {
		pool <- cd
	}
	lat, fails, _ := timed(workers, d, func() (func() error, error) {
		return func() error {
			card := <-pool
			defer func() { pool <- card }()
			return login(c, card)
		}, nil
	})
	return lat, fails
}

func login(c *client, card *authntest.Card) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("card: %v", v)
		}
	}()
	_, err = loginToken(c, card)
	return err
}

// floorLoad measures what no login can avoid: validating one assertion
// and signing one access token.
func floorLoad(workers int, d time.Duration) ([]time.Duration, error) {
	cer, err := authn.NewCeremonies(authn.CeremonyConfig{RPID: "localhost", RPName: "opgate", Origins: []string{origin}})
	if err != nil {
		return nil, err
	}
	key, err := authn.GenerateSigningKey(time.Now())
	if err != nil {
		return nil, err
	}
	tokens, err := authn.NewTokens(authn.TokenConfig{Issuer: "opgate", Keys: []authn.SigningKey{key}, CacheSize: -1})
	if err != nil {
		return nil, err
	}
	lat, fails, err := timed(workers, d, func() (func() error, error) {
		card := authntest.NewCard(&failer{})
		user := authn.EnrollUser{OperatorID: "OP-00000000", Name: "floor"}
		options, state, _, err := cer.BeginEnrollment(user)
		if err != nil {
			return nil, err
		}
		cred, err := cer.FinishEnrollment(state, card.Create(options, origin), user, authn.CardPolicy{})
		if err != nil {
			return nil, fmt.Errorf("floor enrollment: %w", err)
		}
		stored := authn.StoredCredential{OperatorID: user.OperatorID, CredentialID: cred.CredentialID, PublicKey: cred.PublicKey,
			AAGUID: cred.AAGUID, SignCount: cred.SignCount, Flags: cred.Flags}
		return func() error {
			options, state, _, err := cer.BeginLogin(nil)
			if err != nil {
				return err
			}
			a, err := cer.FinishLogin(state, card.Get(options, origin, card.UserHandle()), func(_, _ []byte) (authn.StoredCredential, error) { return stored, nil })
			if err != nil {
				return err
			}
			stored.SignCount = a.SignCount
			now := time.Now()
			_, err = tokens.Sign(authn.TokenClaims{OperatorID: "OP-00000000", SessionID: "S-floor", IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)})
			return err
		}, nil
	})
	if err == nil && fails > 0 {
		err = fmt.Errorf("floor: %d operations failed", fails)
	}
	return lat, err
}

func report(what string, lat []time.Duration, fails int64, d time.Duration) string {
	if len(lat) == 0 {
		return fmt.Sprintf("%s: no successful operation (%d failed)", what, fails)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return fmt.Sprintf("%s: %d ok, %d failed, %.0f/s, p50 %s, p99 %s", what, len(lat), fails,
		float64(len(lat))/d.Seconds(), p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond))
}

const loadPassword = "Madoguchi-2027-load"

// passwordRun measures password logins, with argon2id at the policy's
// parameters, against one argon2id verification alone in the same run.
func passwordRun(c *client, admin string, n, workers int, d time.Duration) error {
	b, err := c.must(200, "GET", "/v1/policy", admin, nil)
	if err != nil {
		return err
	}
	var pol map[string]any
	_ = json.Unmarshal(b, &pol)
	pol["login_methods"] = []string{"card", "password"}
	delete(pol, "version")
	if _, err := c.must(200, "PUT", "/v1/policy", admin, pol); err != nil {
		return err
	}
	b, err = c.must(200, "GET", "/v1/operators?site_id=honcho&limit=1000", admin, nil)
	if err != nil {
		return err
	}
	var list struct {
		Items []struct {
			OperatorID string `json:"operator_id"`
		} `json:"items"`
	}
	_ = json.Unmarshal(b, &list)
	var ops []string
	for _, o := range list.Items {
		if o.OperatorID == "" || len(ops) == n {
			continue
		}
		b, err := c.must(200, "POST", "/v1/operators/"+o.OperatorID+"/password/reset", admin, nil)
		if err != nil {
			continue // the bootstrap administrator cannot reset their own
		}
		var r struct {
			Temp string `json:"temporary_password"`
		}
		_ = json.Unmarshal(b, &r)
		b, err = c.must(200, "POST", "/v1/login/password", "", map[string]any{"operator_id": o.OperatorID, "password": r.Temp, "terminal_id": "admin-console"})
		if err != nil {
			return err
		}
		var l struct {
			Token string `json:"access_token"`
		}
		_ = json.Unmarshal(b, &l)
		if _, err := c.must(204, "POST", "/v1/me/password", l.Token, map[string]any{"current_password": r.Temp, "new_password": loadPassword}); err != nil {
			return err
		}
		ops = append(ops, o.OperatorID)
	}
	fmt.Printf("password logins for %s with %d concurrent clients…\n", d, workers)
	var next atomic.Int64
	lat, fails, _ := timed(workers, d, func() (func() error, error) {
		return func() error {
			op := ops[int(next.Add(1))%len(ops)]
			_, err := c.must(200, "POST", "/v1/login/password", "", map[string]any{"operator_id": op, "password": loadPassword, "terminal_id": "admin-console"})
			return err
		}, nil
	})
	fmt.Println(report("password login over HTTP", lat, fails, d))
	hash, err := authn.HashPassword(loadPassword, authn.DefaultPasswordParams)
	if err != nil {
		return err
	}
	hashes, _, _ := timed(workers, d/2, func() (func() error, error) {
		return func() error {
			_, err := authn.VerifyPassword(hash, loadPassword)
			return err
		}, nil
	})
	fmt.Println(report("argon2id verification alone", hashes, 0, d/2))
	if len(lat) > 0 && len(hashes) > 0 {
		perLogin := d.Seconds() / float64(len(lat))
		perHash := (d / 2).Seconds() / float64(len(hashes))
		fmt.Printf("share of a password login's time spent in argon2id: %.0f%%\n", 100*perHash/perLogin)
	}
	return nil
}

// freshDatabase creates an empty database on the server of base, so that
// a run never touches existing data, and returns its URL and a function
// that drops it.
func freshDatabase(ctx context.Context, base string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("-db: %w", err)
	}
	name := "opgate_load_" + randomHex()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		conn.Close(ctx)
		return "", nil, err
	}
	u, err := neturl.Parse(base)
	if err != nil {
		conn.Close(ctx)
		return "", nil, errors.New("-db is not a URL")
	}
	u.Path = "/" + name
	return u.String(), func() {
		_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		conn.Close(context.Background())
	}, nil
}
