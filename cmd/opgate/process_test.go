package main

// These tests run the opgate command as real processes: the test binary
// re-executes itself as the command (OPGATE_TEST_CHILD=1), so that what is
// killed, restarted and signalled is the same run() that main calls, on a
// real SQLite file or PostgreSQL database and real Redis.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/store"
)

const childEnv = "OPGATE_TEST_CHILD"

// issuer is the token issuer both the children and the in-process wiring
// use, so that each accepts the other's tokens.
const issuer = "opgate"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// ---- child processes

// childCmd prepares the command as a child process with exactly the
// OPGATE_ configuration given (none inherited from the test's environment).
func childCmd(ctx context.Context, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"=1", "OPGATE_ISSUER="+issuer)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// tool runs a short-lived command (bootstrap, audit verify) to its end.
func tool(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := childCmd(ctx, env, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("opgate %s: did not finish within 60s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), o.String(), e.String())
	}
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("opgate %s: %v", strings.Join(args, " "), err)
		}
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// syncBuffer collects a child's output from two pipes at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail is the last n bytes of the output, for failure messages.
func (s *syncBuffer) tail(n int) string {
	out := s.String()
	if len(out) > n {
		out = "…" + out[len(out)-n:]
	}
	return out
}

// serveProc is a running `opgate serve`.
type serveProc struct {
	t    *testing.T
	name string
	url  string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	code int           // exit code, valid after done
}

// freeAddr picks a free port on 127.0.0.1.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startServe starts `opgate serve` on a free port and waits until /readyz
// answers 200. The process is killed when the test ends, if still running.
func startServe(t *testing.T, name string, env map[string]string, args ...string) *serveProc {
	t.Helper()
	p := launchServe(t, name, env, args...)
	p.waitReady()
	return p
}

func launchServe(t *testing.T, name string, env map[string]string, args ...string) *serveProc {
	t.Helper()
	addr := freeAddr(t)
	e := map[string]string{"OPGATE_ADDR": addr}
	for k, v := range env {
		e[k] = v
	}
	cmd := childCmd(context.Background(), e, append([]string{"serve"}, args...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	p := &serveProc{t: t, name: name, url: "http://" + addr, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, out.tail(6000))
		}
	})
	return p
}

func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *serveProc) waitReady() {
	p.t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			p.t.Fatalf("%s exited with %d before it was ready:\n%s", p.name, p.code, p.out.tail(4000))
		}
		resp, err := c.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready within 30s:\n%s", p.name, p.out.tail(4000))
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *serveProc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s: still running 10s after SIGKILL", p.name)
	}
}

// ---- bootstrap and in-process wiring

type bootResult struct {
	OperatorID        opgate.OperatorID `json:"operator_id"`
	TemporaryPassword string            `json:"temporary_password"`
	EnrollmentCode    string            `json:"enrollment_code"`
}

var bootArgs = []string{"bootstrap", "--site-id", "honcho", "--site-name", "本町市民課", "--municipality", "132152",
	"--staff-number", "0001", "--name", "管理 花子", "--json"}

func bootstrapChild(t *testing.T, env map[string]string) bootResult {
	t.Helper()
	out, errOut, code := tool(t, env, bootArgs...)
	if code != 0 {
		t.Fatalf("bootstrap exited %d:\n%s%s", code, out, errOut)
	}
	var res bootResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.OperatorID == "" {
		t.Fatalf("bootstrap --json printed %q: %v", out, err)
	}
	return res
}

// inProcess wires a server in the test process on the same store (and the
// same ephemeral state, when eph is shared), to start sessions that the
// children accept: the signing keys and the sessions live in the store.
func inProcess(t *testing.T, dbURL string, eph ephemeral.Store) *server.App {
	t.Helper()
	ctx := context.Background()
	st, err := server.OpenStore(ctx, dbURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if eph == nil {
		m := memory.New(memory.Config{Clock: clock.Real{}})
		t.Cleanup(func() { _ = m.Close() })
		eph = m
	}
	app, err := server.Wire(ctx, server.Config{Issuer: issuer}, st, eph, clock.Real{}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("wire: %v", err)
	}
	return app
}

func startSession(t *testing.T, app *server.App, op opgate.OperatorID, site opgate.SiteID) string {
	t.Helper()
	iss, err := app.Sessions.Start(context.Background(), authn.Start{OperatorID: op, SiteID: site, TerminalID: "admin-console", AMR: []string{"hwk", "user"}})
	if err != nil {
		t.Fatalf("start session for %s: %v", op, err)
	}
	return iss.AccessToken
}

// ---- HTTP

type client struct {
	t  *testing.T
	hc *http.Client
}

func newClient(t *testing.T) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, hc: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// do sends a request; err is a transport error (no answer).
func (c *client) do(method, url, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// must sends a request, fails the test unless it is answered want, and
// decodes the answer into out (when not nil).
func (c *client) must(want int, method, url, token string, body, out any) {
	c.t.Helper()
	status, b, err := c.do(method, url, token, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	if status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, url, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, url, b, err)
		}
	}
}

type operatorDoc struct {
	OperatorID  opgate.OperatorID `json:"operator_id"`
	StaffNumber string            `json:"staff_number"`
	SiteID      opgate.SiteID     `json:"site_id"`
	Status      string            `json:"status"`
	Grants      []grantDoc        `json:"grants"`
}

type grantDoc struct {
	GrantID opgate.GrantID `json:"grant_id"`
	RoleID  opgate.RoleID  `json:"role_id"`
	SiteID  opgate.SiteID  `json:"site_id"`
	Status  string         `json:"status"`
}

type eventDoc struct {
	Seq      int64           `json:"seq"`
	Type     string          `json:"type"`
	Resource string          `json:"resource"`
	Data     json.RawMessage `json:"data"`
}

type changeDoc struct {
	ChangeID   opgate.ChangeID   `json:"change_id"`
	OperatorID opgate.OperatorID `json:"operator_id"`
	Status     string            `json:"status"`
	Error      string            `json:"error"`
}

func kitaSite() map[string]string {
	return map[string]string{"site_id": "kita", "name": "北支所", "municipality_code": "132152"}
}

// ---- TestKillDuringBulkChanges

func TestKillDuringBulkChanges(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testKillDuringBulkChanges(t, "sqlite:"+filepath.Join(t.TempDir(), "opgate.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		testKillDuringBulkChanges(t, testenv.PostgresURL(t))
	})
}

// opRecord is what the clients were told about one operator's changes.
// A step whose request got no answer (the server died under it) may or may
// not have happened; a step answered 2xx must have.
type opRecord struct {
	staff            string
	transfer, retire bool // planned

	id                         opgate.OperatorID
	grantID                    opgate.GrantID
	issued, granted            bool // answered 2xx
	transferred, retired       bool // answered 2xx
	unknownGrant               bool // sent, no answer
	unknownTransfer, unknownRe bool
}

type step int

const (
	stepIssue step = iota
	stepGrant
	stepTransfer
	stepRetire
)

func testKillDuringBulkChanges(t *testing.T, dbURL string) {
	const (
		operators = 300
		workers   = 8
		killAfter = 150
	)
	env := map[string]string{"OPGATE_DATABASE_URL": dbURL}
	boot := bootstrapChild(t, env)
	srv := startServe(t, "serve#1", env)
	app := inProcess(t, dbURL, nil)
	admin := startSession(t, app, boot.OperatorID, "honcho")
	c := newClient(t)
	c.must(201, "POST", srv.url+"/v1/sites", admin, kitaSite(), nil)

	recs := make([]*opRecord, operators)
	jobs := make(chan *opRecord, operators)
	for i := range recs {
		// Half are transferred, a quarter retired (a disjoint quarter),
		// the rest only issued and granted.
		recs[i] = &opRecord{staff: fmt.Sprintf("K%04d", i+1), transfer: i%2 == 0, retire: i%4 == 1}
		jobs <- recs[i]
	}
	close(jobs)

	var answered atomic.Int64
	var killOnce sync.Once
	killed := make(chan struct{})
	answer := func() {
		if answered.Add(1) == killAfter {
			killOnce.Do(func() {
				_ = srv.cmd.Process.Signal(syscall.SIGKILL)
				close(killed)
			})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var unexpected sync.Map
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				if ctx.Err() != nil {
					return
				}
				steps := []step{stepIssue, stepGrant}
				if r.transfer {
					steps = append(steps, stepTransfer)
				}
				if r.retire {
					steps = append(steps, stepRetire)
				}
				for _, s := range steps {
					var path string
					var body any
					switch s {
					case stepIssue:
						path, body = "/v1/operators", map[string]string{"staff_number": r.staff, "name": "窓口 " + r.staff, "site_id": "honcho", "employment_type": "regular"}
					case stepGrant:
						path, body = "/v1/operators/"+string(r.id)+"/grants", map[string]string{"role_id": "counter_clerk", "site_id": "honcho", "reason": "counter duty"}
					case stepTransfer:
						path, body = "/v1/operators/"+string(r.id)+"/transfer", map[string]string{"to_site_id": "kita", "reason": "reassigned to the branch"}
					case stepRetire:
						path, body = "/v1/operators/"+string(r.id)+"/retire", map[string]string{"reason": "contract ended"}
					}
					status, b, err := c.do("POST", srv.url+path, admin, body)
					if err != nil {
						// No answer: the server is gone. What was sent may
						// or may not have been applied.
						switch s {
						case stepGrant:
							r.unknownGrant = true
						case stepTransfer:
							r.unknownTransfer = true
						case stepRetire:
							r.unknownRe = true
						}
						return
					}
					if status/100 != 2 {
						unexpected.Store(path, fmt.Sprintf("status %d: %s", status, b))
						return
					}
					switch s {
					case stepIssue:
						var o operatorDoc
						if json.Unmarshal(b, &o) != nil || o.OperatorID == "" {
							unexpected.Store(path, "issue answered without an operator_id: "+string(b))
							return
						}
						r.id, r.issued = o.OperatorID, true
					case stepGrant:
						var g grantDoc
						if json.Unmarshal(b, &g) != nil || g.GrantID == "" {
							unexpected.Store(path, "grant answered without a grant_id: "+string(b))
							return
						}
						r.grantID, r.granted = g.GrantID, true
					case stepTransfer:
						r.transferred = true
					case stepRetire:
						r.retired = true
					}
					answer()
				}
			}
		}()
	}
	wg.Wait()
	unexpected.Range(func(k, v any) bool {
		t.Errorf("POST %v: %v", k, v)
		return true
	})
	select {
	case <-killed:
	default:
		t.Fatalf("the server was never killed: only %d changes answered", answered.Load())
	}
	select {
	case <-srv.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed server is still running")
	}
	unanswered := 0
	for _, r := range recs {
		for _, u := range []bool{r.unknownGrant, r.unknownTransfer, r.unknownRe} {
			if u {
				unanswered++
			}
		}
	}
	t.Logf("%d changes answered before the kill, %d grants, transfers or retirements cut off unanswered", answered.Load(), unanswered)

	srv2 := startServe(t, "serve#2", env)

	// Every change answered 2xx is visible.
	checked := 0
	for _, r := range recs {
		if !r.issued {
			continue
		}
		checked++
		var o operatorDoc
		c.must(200, "GET", srv2.url+"/v1/operators/"+string(r.id), admin, nil, &o)
		if o.StaffNumber != r.staff {
			t.Errorf("%s: staff number %q, want %q", r.id, o.StaffNumber, r.staff)
		}
		wantSites := []opgate.SiteID{"honcho"}
		switch {
		case r.transferred:
			wantSites = []opgate.SiteID{"kita"}
		case r.unknownTransfer:
			wantSites = []opgate.SiteID{"honcho", "kita"}
		}
		if !slices.Contains(wantSites, o.SiteID) {
			t.Errorf("%s: site %s, want one of %v (transfer answered: %v)", r.id, o.SiteID, wantSites, r.transferred)
		}
		wantStatus := []string{"active"}
		switch {
		case r.retired:
			wantStatus = []string{"retired"}
		case r.unknownRe:
			wantStatus = []string{"active", "retired"}
		}
		if !slices.Contains(wantStatus, o.Status) {
			t.Errorf("%s: status %s, want one of %v (retirement answered: %v)", r.id, o.Status, wantStatus, r.retired)
		}
		if r.granted {
			want := []string{"active"}
			switch {
			case r.transferred || r.retired:
				want = []string{"revoked"}
			case r.unknownTransfer || r.unknownRe:
				want = []string{"active", "revoked"}
			}
			found := false
			for _, g := range o.Grants {
				if g.GrantID == r.grantID {
					found = true
					if !slices.Contains(want, g.Status) {
						t.Errorf("%s: grant %s is %s, want one of %v", r.id, g.GrantID, g.Status, want)
					}
				}
			}
			if !found {
				t.Errorf("%s: grant %s answered 201 but is missing", r.id, r.grantID)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no operator was issued before the kill")
	}

	// No change is half done, answered or not: every change happened whole
	// (state, grants and its events) or not at all.
	checkWhole(t, app.Store, boot.OperatorID)

	if out, errOut, code := tool(t, env, "audit", "verify"); code != 0 {
		t.Errorf("audit verify after the kill exited %d:\n%s%s", code, out, errOut)
	}
}

// checkWhole reads the whole store and holds every operator's state to its
// history.
func checkWhole(t *testing.T, st store.Store, admin opgate.OperatorID) {
	t.Helper()
	ctx := context.Background()
	var ops []lifecycle.Operator
	var grants []authz.Grant
	var events []audit.Event
	err := st.View(ctx, func(tx store.Tx) error {
		for after := opgate.OperatorID(""); ; {
			page, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{After: after, Limit: 500})
			if err != nil {
				return err
			}
			ops = append(ops, page...)
			if len(page) < 500 {
				break
			}
			after = page[len(page)-1].ID
		}
		for after := opgate.GrantID(""); ; {
			page, err := tx.ListGrants(ctx, authz.GrantFilter{After: after, Limit: 500})
			if err != nil {
				return err
			}
			grants = append(grants, page...)
			if len(page) < 500 {
				break
			}
			after = page[len(page)-1].ID
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
	err = st.ScanAudit(ctx, 0, func(e audit.Event) error { events = append(events, e); return nil })
	if err != nil {
		t.Fatalf("read history: %v", err)
	}
	count := map[string]int{} // type + " " + operator or resource
	for _, e := range events {
		count[string(e.Type)+" "+string(e.OperatorID)]++
		count[string(e.Type)+" "+e.Resource]++
	}
	grantsOf := map[opgate.OperatorID][]authz.Grant{}
	for _, g := range grants {
		grantsOf[g.OperatorID] = append(grantsOf[g.OperatorID], g)
		res := "grant:" + string(g.ID)
		if n := count["grant.approved "+res] + count["grant.requested "+res]; n != 1 {
			t.Errorf("grant %s of %s: %d creation events, want 1", g.ID, g.OperatorID, n)
		}
		want := 0
		if g.Status == authz.Revoked {
			want = 1
		}
		if n := count["grant.revoked "+res]; n != want {
			t.Errorf("grant %s of %s is %s with %d grant.revoked events, want %d", g.ID, g.OperatorID, g.Status, n, want)
		}
	}
	for _, o := range ops {
		if o.ID == admin {
			continue
		}
		if n := count["operator.issued "+string(o.ID)]; n != 1 {
			t.Errorf("%s: %d operator.issued events, want 1", o.ID, n)
		}
		transferred, retired := o.SiteID == "kita", o.Status == lifecycle.Retired
		if o.SiteID != "honcho" && o.SiteID != "kita" {
			t.Errorf("%s: at site %s", o.ID, o.SiteID)
		}
		if o.Status != lifecycle.Active && o.Status != lifecycle.Retired {
			t.Errorf("%s: status %s", o.ID, o.Status)
		}
		want := map[string]int{"operator.transferred": 0, "operator.retired": 0}
		if transferred {
			want["operator.transferred"] = 1
		}
		if retired {
			want["operator.retired"] = 1
		}
		for typ, n := range want {
			if got := count[typ+" "+string(o.ID)]; got != n {
				t.Errorf("%s (site %s, %s): %d %s events, want %d", o.ID, o.SiteID, o.Status, got, typ, n)
			}
		}
		if transferred || retired {
			for _, g := range grantsOf[o.ID] {
				if g.Status == authz.Active || g.Status == authz.PendingApproval {
					t.Errorf("%s (site %s, %s) still has grant %s %s", o.ID, o.SiteID, o.Status, g.ID, g.Status)
				}
			}
		}
	}
}

// ---- TestTwoReplicas

func TestTwoReplicas(t *testing.T) {
	dbURL := testenv.PostgresURL(t)
	rc, prefix := testenv.Redis(t)
	env := map[string]string{"OPGATE_DATABASE_URL": dbURL, "OPGATE_REDIS_URL": os.Getenv("OPGATE_TEST_REDIS_URL"), "OPGATE_REDIS_PREFIX": prefix}
	boot := bootstrapChild(t, env)

	// Both replicas start together on a fresh store: they must agree on
	// one signing key.
	a := launchServe(t, "replica-a", env, "--sweep-interval", "100ms")
	b := launchServe(t, "replica-b", env, "--sweep-interval", "100ms")
	a.waitReady()
	b.waitReady()
	c := newClient(t)
	var jwks [2]struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	for i, r := range []*serveProc{a, b} {
		c.must(200, "GET", r.url+"/.well-known/jwks.json", "", nil, &jwks[i])
	}
	kids := func(i int) (out []string) {
		for _, k := range jwks[i].Keys {
			out = append(out, k.Kid)
		}
		slices.Sort(out)
		return out
	}
	if ka, kb := kids(0), kids(1); len(ka) == 0 || !slices.Equal(ka, kb) {
		t.Fatalf("replicas started together publish different signing keys: %v and %v", ka, kb)
	}

	eph, err := eredis.New(eredis.Config{Client: rc, Prefix: prefix})
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	app := inProcess(t, dbURL, eph)
	admin := startSession(t, app, boot.OperatorID, "honcho")
	for _, r := range []*serveProc{a, b} {
		c.must(200, "GET", r.url+"/v1/me", admin, nil, nil)
	}
	c.must(201, "POST", a.url+"/v1/sites", admin, kitaSite(), nil)

	issue := func(r *serveProc, staff string) opgate.OperatorID {
		t.Helper()
		var o operatorDoc
		c.must(201, "POST", r.url+"/v1/operators", admin, map[string]string{"staff_number": staff, "name": "窓口 " + staff,
			"site_id": "honcho", "employment_type": "regular"}, &o)
		return o.OperatorID
	}
	grant := func(r *serveProc, op opgate.OperatorID, role string) opgate.GrantID {
		t.Helper()
		var g grantDoc
		c.must(201, "POST", r.url+"/v1/operators/"+string(op)+"/grants", admin,
			map[string]string{"role_id": role, "site_id": "honcho", "reason": "counter duty"}, &g)
		return g.GrantID
	}

	t.Run("session ends everywhere at once", func(t *testing.T) {
		op := issue(b, "R0001")
		grant(b, op, "counter_clerk")
		tok := startSession(t, app, op, "honcho")
		c.must(200, "GET", a.url+"/v1/me", tok, nil, nil)
		c.must(200, "GET", b.url+"/v1/me", tok, nil, nil)
		c.must(200, "POST", a.url+"/v1/operators/"+string(op)+"/transfer", admin, map[string]string{"to_site_id": "kita", "reason": "reassigned"}, nil)
		// The very next request on the other replica, no wait.
		c.must(401, "GET", b.url+"/v1/me", tok, nil, nil)
		c.must(401, "GET", a.url+"/v1/me", tok, nil, nil)
	})

	t.Run("dated change applies once", func(t *testing.T) {
		type dated struct {
			op     opgate.OperatorID
			kind   string
			grants []opgate.GrantID
			change opgate.ChangeID
		}
		var ds []*dated
		for i, kind := range []string{"transfer", "transfer", "retire"} {
			r := []*serveProc{a, b}[i%2]
			d := &dated{op: issue(r, fmt.Sprintf("D%04d", i+1)), kind: kind}
			d.grants = append(d.grants, grant(r, d.op, "counter_clerk"), grant(r, d.op, "counter_viewer"))
			ds = append(ds, d)
		}
		eff := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
		for i, d := range ds {
			r := []*serveProc{a, b}[i%2]
			body := map[string]string{"reason": "dated " + d.kind, "effective_at": eff}
			if d.kind == "transfer" {
				body["to_site_id"] = "kita"
			}
			var ch changeDoc
			c.must(202, "POST", r.url+"/v1/operators/"+string(d.op)+"/"+d.kind, admin, body, &ch)
			if ch.ChangeID == "" {
				t.Fatalf("202 without a change_id")
			}
			d.change = ch.ChangeID
		}

		deadline := time.Now().Add(15 * time.Second)
		for i := 0; ; i++ {
			var list struct {
				Items []changeDoc `json:"items"`
			}
			c.must(200, "GET", []*serveProc{a, b}[i%2].url+"/v1/scheduled-changes?limit=1000", admin, nil, &list)
			applied := 0
			for _, ch := range list.Items {
				for _, d := range ds {
					if ch.ChangeID != d.change {
						continue
					}
					switch ch.Status {
					case "applied":
						applied++
					case "pending":
					default:
						t.Fatalf("change %s for %s is %s: %s", ch.ChangeID, d.op, ch.Status, ch.Error)
					}
				}
			}
			if applied == len(ds) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d dated changes applied within 15s: %+v", applied, len(ds), list.Items)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Let both schedulers run a few more sweeps: a second application
		// would show now.
		time.Sleep(500 * time.Millisecond)

		for _, d := range ds {
			var o operatorDoc
			c.must(200, "GET", a.url+"/v1/operators/"+string(d.op), admin, nil, &o)
			if d.kind == "transfer" && (o.SiteID != "kita" || o.Status != "active") {
				t.Errorf("%s after a dated transfer: site %s, %s", d.op, o.SiteID, o.Status)
			}
			if d.kind == "retire" && o.Status != "retired" {
				t.Errorf("%s after a dated retirement: %s", d.op, o.Status)
			}
			for _, g := range o.Grants {
				if g.Status != "revoked" {
					t.Errorf("%s: grant %s is %s after the dated %s", d.op, g.GrantID, g.Status, d.kind)
				}
			}
			var hist struct {
				Items []eventDoc `json:"items"`
			}
			c.must(200, "GET", b.url+"/v1/operators/"+string(d.op)+"/history?limit=1000", admin, nil, &hist)
			want := "operator.transferred"
			if d.kind == "retire" {
				want = "operator.retired"
			}
			changes, revoked := 0, map[string]int{}
			for _, e := range hist.Items {
				switch e.Type {
				case "operator.transferred", "operator.retired":
					changes++
					var data map[string]any
					_ = json.Unmarshal(e.Data, &data)
					if e.Type != want || data["change_id"] != string(d.change) {
						t.Errorf("%s: unexpected %s event %s for change %s", d.op, e.Type, e.Data, d.change)
					}
				case "grant.revoked":
					revoked[e.Resource]++
				case "change.failed":
					t.Errorf("%s: change.failed %s", d.op, e.Data)
				}
			}
			if changes != 1 {
				t.Errorf("%s: %d %s events, want exactly 1", d.op, changes, want)
			}
			if len(revoked) != len(d.grants) {
				t.Errorf("%s: grant.revoked for %v, want one for each of %v", d.op, revoked, d.grants)
			}
			for _, g := range d.grants {
				if n := revoked["grant:"+string(g)]; n != 1 {
					t.Errorf("%s: %d grant.revoked events for %s, want 1", d.op, n, g)
				}
			}
		}
	})

	if out, errOut, code := tool(t, env, "audit", "verify"); code != 0 {
		t.Errorf("audit verify exited %d:\n%s%s", code, out, errOut)
	}
}

// ---- TestBootstrapTwice

var verifyLine = regexp.MustCompile(`audit chain intact: (\d+) events, head seq (\d+), head hash ([0-9a-f]+)`)

func TestBootstrapTwice(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testBootstrapTwice(t, "sqlite:"+filepath.Join(t.TempDir(), "opgate.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		testBootstrapTwice(t, testenv.PostgresURL(t))
	})
}

func testBootstrapTwice(t *testing.T, dbURL string) {
	env := map[string]string{"OPGATE_DATABASE_URL": dbURL}
	out, errOut, code := tool(t, env, bootArgs...)
	if code != 0 {
		t.Fatalf("first bootstrap exited %d:\n%s%s", code, out, errOut)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bootstrap --json printed %q: %v", out, err)
	}
	for _, k := range []string{"operator_id", "temporary_password", "enrollment_code"} {
		if s, _ := doc[k].(string); s == "" {
			t.Errorf("bootstrap --json: %q missing or empty in %s", k, out)
		}
	}
	for k := range doc {
		switch k {
		case "operator_id", "temporary_password", "enrollment_code":
		case "enrollment_expires_at":
			if s, _ := doc[k].(string); s == "" {
				t.Errorf("enrollment_expires_at is %v", doc[k])
			} else if _, err := time.Parse(time.RFC3339, s); err != nil {
				t.Errorf("enrollment_expires_at %q: %v", s, err)
			}
		default:
			t.Errorf("bootstrap --json: unexpected field %q", k)
		}
	}

	verify := func() (events, head string) {
		t.Helper()
		out, errOut, code := tool(t, env, "audit", "verify")
		if code != 0 {
			t.Fatalf("audit verify exited %d:\n%s%s", code, out, errOut)
		}
		m := verifyLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("audit verify printed %q", out)
		}
		return m[1], m[3]
	}
	n1, h1 := verify()

	second := []string{"bootstrap", "--site-id", "minami", "--site-name", "南支所", "--municipality", "132152",
		"--staff-number", "0002", "--name", "別人 次郎", "--json"}
	out, errOut, code = tool(t, env, second...)
	if code == 0 {
		t.Fatalf("second bootstrap exited 0:\n%s", out)
	}
	if !strings.Contains(errOut, "only once") {
		t.Errorf("second bootstrap: no clear message on stderr: %q", errOut)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("second bootstrap printed on stdout: %q", out)
	}
	if n2, h2 := verify(); n2 != n1 || h2 != h1 {
		t.Errorf("history changed by the second bootstrap: %s events (head %s), then %s (head %s)", n1, h1, n2, h2)
	}

	ctx := context.Background()
	st, err := server.OpenStore(ctx, dbURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	err = st.View(ctx, func(tx store.Tx) error {
		n, err := tx.CountOperators(ctx)
		if err != nil {
			return err
		}
		if n != 1 {
			t.Errorf("%d operators after a refused second bootstrap, want 1", n)
		}
		sites, err := tx.ListSites(ctx)
		if err != nil {
			return err
		}
		if len(sites) != 1 || sites[0].ID != "honcho" {
			t.Errorf("sites after a refused second bootstrap: %+v", sites)
		}
		ops, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{StaffNumber: "0002"})
		if err != nil {
			return err
		}
		if len(ops) != 0 {
			t.Errorf("the second bootstrap's operator exists: %+v", ops)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
}

// ---- TestGracefulShutdown

func TestGracefulShutdown(t *testing.T) {
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "opgate.db")
	env := map[string]string{"OPGATE_DATABASE_URL": dbURL}
	boot := bootstrapChild(t, env)
	srv := startServe(t, "serve", env)
	app := inProcess(t, dbURL, nil)
	admin := startSession(t, app, boot.OperatorID, "honcho")

	// A request whose body arrives in two halves: the handler is running
	// (authenticated, reading the body) when the signal comes.
	body, _ := json.Marshal(kitaSite())
	half := len(body) / 2
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(srv.url, "http://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	head := "POST /v1/sites HTTP/1.1\r\nHost: " + strings.TrimPrefix(srv.url, "http://") + "\r\n" +
		"Authorization: Bearer " + admin + "\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), body[:half]...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	// Give the server time to read the header and enter the handler.
	time.Sleep(300 * time.Millisecond)

	sent := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	// Shutdown has begun once the listener refuses new connections.
	refused := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c2, err := net.DialTimeout("tcp", strings.TrimPrefix(srv.url, "http://"), time.Second)
		if err != nil {
			refused = true
			break
		}
		_ = c2.Close()
	}
	if !refused {
		t.Fatal("the server still accepts connections 5s after SIGTERM")
	}
	if srv.exited() {
		t.Fatalf("serve exited (%d) with a request in flight:\n%s", srv.code, srv.out.tail(4000))
	}

	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatalf("write the rest of the body: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight POST /v1/sites: status %d: %s", resp.StatusCode, b)
	}

	select {
	case <-srv.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("serve still running 5s after the in-flight request completed")
	}
	if srv.code != 0 {
		t.Fatalf("serve exited %d after SIGTERM:\n%s", srv.code, srv.out.tail(4000))
	}
	t.Logf("serve exited 0, %v after SIGTERM", time.Since(sent).Round(time.Millisecond))

	// The request's change committed whole.
	err = app.Store.View(context.Background(), func(tx store.Tx) error {
		_, err := tx.GetSite(context.Background(), "kita")
		return err
	})
	if err != nil {
		t.Fatalf("site created by the in-flight request: %v", err)
	}
}
