package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authn/authntest"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/bootstrap"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/servertest"
	"github.com/opgate/opgate/internal/testenv"
)

// The tests of this file hold the login path to API.md (Policy; Login,
// sessions, tokens) and DESIGN.md rule 9: failures are uniform, counted
// exactly, never counted when the state cannot be reached, and leak
// nothing.

// gate sends requests to one replica, from one client address. A gate
// made by startWatched also records every answer and every secret that
// passes, for the leak checks.
type gate struct {
	t  testing.TB
	s  *servertest.Server
	hc *http.Client
	w  *watch // nil: nothing recorded
}

func newGate(t testing.TB, s *servertest.Server) gate {
	return gate{t: t, s: s, hc: s.HTTP.Client()}
}

// startWatched starts a server whose JSON log is captured, and a gate that
// records what passes through it. When the test ends, no secret seen may
// be in the log, in any audit event, or in any answer but the one that
// issued it (API.md Conventions: no error ever echoes a password or a
// token).
func startWatched(t *testing.T, b servertest.Backend, opts ...servertest.Option) (*servertest.Server, gate) {
	t.Helper()
	w := &watch{log: &logBuffer{}, secrets: map[string]int{}}
	return watched(t, w, servertest.Start(t, b, append(opts, servertest.WithLog(w.log))...))
}

func watched(t *testing.T, w *watch, s *servertest.Server) (*servertest.Server, gate) {
	w.secret(s.Boot.TemporaryPassword, -1)
	w.secret(s.Boot.EnrollmentCode, -1)
	w.secret(s.Admin, -1)
	t.Cleanup(func() { w.check(t, s) })
	return s, gate{t: t, s: s, hc: s.HTTP.Client(), w: w}
}

// join starts another replica on g's store and ephemeral state (or on sh
// when given), logging where g's server logs.
func (g gate) join(sh ...servertest.Shared) gate {
	g.t.Helper()
	shared := g.s.Shared()
	if len(sh) > 0 {
		shared = sh[0]
	}
	var opts []servertest.Option
	if g.w != nil {
		opts = append(opts, servertest.WithLog(g.w.log))
	}
	return g.on(servertest.Join(g.t, shared, g.s.Clock, opts...))
}

// on is the same gate pointed at another replica.
func (g gate) on(s *servertest.Server) gate {
	g.s, g.hc = s, s.HTTP.Client()
	return g
}

// from is the same gate sending from another loopback address, as another
// terminal's machine would.
func (g gate) from(ip string) gate {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	g.hc = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
	g.t.Cleanup(g.hc.CloseIdleConnections)
	return g
}

// try sends a request; it is safe to call from any goroutine.
func (g gate) try(method, path, token string, body any) (servertest.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return servertest.Response{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, g.s.HTTP.URL+path, rd)
	if err != nil {
		return servertest.Response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return servertest.Response{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return servertest.Response{}, err
	}
	r := servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: out}
	g.w.record(method+" "+path, token, body, r)
	return r, nil
}

func (g gate) do(method, path, token string, body any) servertest.Response {
	g.t.Helper()
	r, err := g.try(method, path, token, body)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (g gate) must(want int, method, path, token string, body any) servertest.Response {
	g.t.Helper()
	r := g.do(method, path, token, body)
	if r.Status != want {
		g.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// problemIs fails unless r is the problem status/code.
func problemIs(t testing.TB, what string, r servertest.Response, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.Status, status, r.Body)
	}
	m := map[string]any{}
	if err := json.Unmarshal(r.Body, &m); err != nil || m["code"] != code {
		t.Fatalf("%s: code %v, want %q: %s", what, m["code"], code, r.Body)
	}
	return m
}

// watch is what a watched server's gates saw: every answer, in order,
// and every secret with the answer that issued it (-1: none may carry it).
type watch struct {
	log     *logBuffer
	noAudit bool // the store is gone by the end
	mu      sync.Mutex
	answers []recordedAnswer
	secrets map[string]int
}

type recordedAnswer struct {
	what string
	text string // headers and body
}

// Request members that carry secrets, and answer members that issue them.
var (
	secretInputs  = []string{"password", "current_password", "new_password", "enrollment_code", "refresh_token", "token"}
	secretOutputs = []string{"access_token", "refresh_token", "temporary_password", "enrollment_code"}
)

// secret notes v as a secret issued by answer issuer, unless it is known
// already or too short to be one.
func (w *watch) secret(v string, issuer int) {
	if len(v) < 8 {
		return
	}
	if _, ok := w.secrets[v]; !ok {
		w.secrets[v] = issuer
	}
	// A refresh token is "session_id.secret"; the secret alone is one too.
	if sid, rest, ok := strings.Cut(v, "."); ok && strings.HasPrefix(sid, "S-") && !strings.Contains(rest, ".") {
		w.secret(rest, issuer)
	}
}

func (w *watch) record(what, token string, body any, r servertest.Response) {
	if w == nil {
		return
	}
	var b strings.Builder
	for k, vs := range r.Header {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	b.Write(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answers = append(w.answers, recordedAnswer{what, b.String()})
	issuer := len(w.answers) - 1
	var out map[string]any
	if json.Unmarshal(r.Body, &out) == nil {
		for _, k := range secretOutputs {
			if v, ok := out[k].(string); ok {
				w.secret(v, issuer)
			}
		}
	}
	w.secret(token, -1)
	if in, ok := body.(map[string]any); ok {
		for _, k := range secretInputs {
			if v, ok := in[k].(string); ok {
				w.secret(v, -1)
			}
		}
	}
}

// check holds the log, the audit events and the answers to the rule.
func (w *watch) check(t *testing.T, s *servertest.Server) {
	t.Helper()
	// Every audit event, read with a session of its own.
	var evs []byte
	if !w.noAudit {
		g := newGate(t, s)
		g.s.Admin = s.Token(s.Boot.OperatorID, "honcho", "admin-console")
		evs, _ = json.Marshal(events(g, url.Values{}))
	}
	for _, l := range w.leaks(w.log.String(), evs) {
		t.Error(l)
	}
}

// leaks lists where secrets are found that should not be.
func (w *watch) leaks(logText string, events []byte) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	if !strings.Contains(logText, `"msg":"request"`) {
		out = append(out, fmt.Sprintf("the log was not captured: %.200s", logText))
	}
	for v, issuer := range w.secrets {
		name := fmt.Sprintf("%.4s… (%d bytes)", v, len(v))
		if strings.Contains(logText, v) {
			out = append(out, "secret "+name+" is in the log")
		}
		if bytes.Contains(events, []byte(v)) {
			out = append(out, "secret "+name+" is in an audit event")
		}
		for j, a := range w.answers {
			if j != issuer && strings.Contains(a.text, v) {
				out = append(out, fmt.Sprintf("secret %s (issued by answer %d) is in answer %d, to %s", name, issuer, j, a.what))
			}
		}
	}
	sort.Strings(out)
	return out
}

// setPolicy reads the policy, lets change edit it and puts it back.
func setPolicy(g gate, change func(p map[string]any)) {
	g.t.Helper()
	p := g.must(200, "GET", "/v1/policy", g.s.Admin, nil).Map(g.t)
	delete(p, "version")
	change(p)
	g.must(200, "PUT", "/v1/policy", g.s.Admin, p)
}

// section returns a policy section to edit.
func section(p map[string]any, name string) map[string]any { return p[name].(map[string]any) }

func allowPasswords(p map[string]any) { p["login_methods"] = []string{"card", "password"} }

// newClerk issues an operator at site holding role there, gives them a
// temporary password, logs in with it at terminal (which must be at
// site) and changes it. Passwords must be allowed by policy. It returns
// the operator ID and the password.
func newClerk(g gate, site, staff, role, terminal string) (string, string) {
	g.t.Helper()
	op := g.must(201, "POST", "/v1/operators", g.s.Admin, map[string]any{"staff_number": staff, "name": "窓口 " + staff,
		"site_id": site, "employment_type": "regular"}).Map(g.t)
	id := op["operator_id"].(string)
	g.must(201, "POST", "/v1/operators/"+id+"/grants", g.s.Admin, map[string]any{"role_id": role, "site_id": site, "reason": "配属"})
	temp := g.must(200, "POST", "/v1/operators/"+id+"/password/reset", g.s.Admin, nil).Map(g.t)["temporary_password"].(string)
	l := passwordLogin(g, id, temp, terminal)
	if l.Status != 200 {
		g.t.Fatalf("login with the temporary password: %d %s", l.Status, l.Body)
	}
	pw := "Hoshi-7729-nagare" // nothing of the name "窓口 <staff>"
	g.must(204, "POST", "/v1/me/password", token(g.t, l), map[string]any{"current_password": temp, "new_password": pw})
	return id, pw
}

func passwordLogin(g gate, op, pw, terminal string) servertest.Response {
	g.t.Helper()
	return g.do("POST", "/v1/login/password", "", map[string]any{"operator_id": op, "password": pw, "terminal_id": terminal})
}

// loginAs logs in with a password and returns the login answer.
func loginAs(g gate, op, pw, terminal string) map[string]any {
	g.t.Helper()
	r := passwordLogin(g, op, pw, terminal)
	if r.Status != 200 {
		g.t.Fatalf("login %s at %s: %d %s", op, terminal, r.Status, r.Body)
	}
	return r.Map(g.t)
}

func token(t testing.TB, r servertest.Response) string {
	t.Helper()
	tok, _ := r.Map(t)["access_token"].(string)
	if tok == "" {
		t.Fatalf("no access token: %s", r.Body)
	}
	return tok
}

// siteWithTerminal registers a site and a terminal there.
func siteWithTerminal(g gate, site, terminal string) {
	g.t.Helper()
	g.must(201, "POST", "/v1/sites", g.s.Admin, map[string]any{"site_id": site, "name": site + "支所", "municipality_code": "132152"})
	terminalAt(g, site, terminal)
}

func terminalAt(g gate, site, terminal string) {
	g.t.Helper()
	g.must(201, "POST", "/v1/terminals", g.s.Admin, map[string]any{"terminal_id": terminal, "site_id": site, "name": terminal})
}

// events reads every audit event matching q, all pages.
func events(g gate, q url.Values) []map[string]any {
	g.t.Helper()
	var out []map[string]any
	q = cloneQuery(q)
	q.Set("limit", "1000")
	for {
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		g.must(200, "GET", "/v1/audit/events?"+q.Encode(), g.s.Admin, nil).JSON(g.t, &page)
		out = append(out, page.Items...)
		if page.NextCursor == nil {
			return out
		}
		q.Set("cursor", *page.NextCursor)
	}
}

func cloneQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}

// failures splits an operator's login.failed events into those counted
// against the lockout and those refused unjudged ("counted": false).
func failures(g gate, op string) (counted, refused []map[string]any) {
	g.t.Helper()
	for _, e := range events(g, url.Values{"operator_id": {op}, "type": {"login.failed"}}) {
		if d, _ := e["data"].(map[string]any); d != nil && d["counted"] == false {
			refused = append(refused, e)
		} else {
			counted = append(counted, e)
		}
	}
	return counted, refused
}

func countEvents(g gate, op, typ string) int {
	g.t.Helper()
	return len(events(g, url.Values{"operator_id": {op}, "type": {typ}}))
}

// claims decodes an access token's claims without checking it.
func claims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return c
}

// cardLoginWith begins and finishes a card login, with a password when
// password is not nil.
func cardLoginWith(g gate, card *authntest.Card, terminal, operator string, password *string) servertest.Response {
	g.t.Helper()
	body := map[string]any{"terminal_id": terminal}
	if operator != "" {
		body["operator_id"] = operator
	}
	begin := g.must(200, "POST", "/v1/login/card/begin", "", body)
	id, _ := begin.Map(g.t)["login_id"].(string)
	finish := map[string]any{"login_id": id, "credential": json.RawMessage(card.Get(begin.Body, servertest.Origin, card.UserHandle()))}
	if password != nil {
		finish["password"] = *password
	}
	return g.do("POST", "/v1/login/card/finish", "", finish)
}

// enrollCard starts an enrollment for op and runs it with card; it
// returns the finish answer.
func enrollCard(g gate, card *authntest.Card, op, serial string) servertest.Response {
	g.t.Helper()
	code := g.must(201, "POST", "/v1/operators/"+op+"/cards/enrollments", g.s.Admin, map[string]any{"card_serial": serial}).Map(g.t)["enrollment_code"].(string)
	return enrollWithCode(g, card, code)
}

func enrollWithCode(g gate, card *authntest.Card, code string) servertest.Response {
	g.t.Helper()
	begin := g.must(200, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": code})
	id, _ := begin.Map(g.t)["enrollment_id"].(string)
	return g.do("POST", "/v1/enroll/finish", "", map[string]any{"enrollment_id": id, "credential": json.RawMessage(card.Create(begin.Body, servertest.Origin))})
}

// ---- 1. lockout exactness under concurrency

func TestLockoutExactUnderConcurrency(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			op, pw := newClerk(g, "honcho", "3001", "counter_clerk", "admin-console")
			replicas := []gate{g}
			if b.Redis {
				// A second replica on the same store and ephemeral state,
				// joined after the policy change so that it reads it.
				replicas = append(replicas, g.join())
			}
			const attempts = 200
			type answer struct {
				status int
				code   string
				err    error
			}
			answers := make([]answer, attempts)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range attempts {
				wg.Go(func() {
					<-start
					r, err := replicas[i%len(replicas)].try("POST", "/v1/login/password", "",
						map[string]any{"operator_id": op, "password": fmt.Sprintf("wrong-%03d-pass", i), "terminal_id": "admin-console"})
					var p struct{ Code string }
					_ = json.Unmarshal(r.Body, &p)
					answers[i] = answer{r.Status, p.Code, err}
				})
			}
			close(start)
			wg.Wait()
			byStatus := map[int]int{}
			for i, a := range answers {
				if a.err != nil {
					t.Fatalf("attempt %d: %v", i, a.err)
				}
				byStatus[a.status]++
				switch {
				case a.status == 401 && a.code == "invalid_credentials",
					a.status == 423 && a.code == "account_locked",
					a.status == 429 && a.code == "rate_limited":
				default:
					t.Errorf("attempt %d: %d %q", i, a.status, a.code)
				}
			}
			t.Logf("answers by status: %v", byStatus)
			const threshold = 5 // the default policy's
			counted, _ := failures(g, op)
			if len(counted) != threshold {
				t.Errorf("%d counted login.failed events, want exactly %d", len(counted), threshold)
			}
			if n := countEvents(g, op, "account.locked"); n != 1 {
				t.Errorf("%d account.locked events, want 1", n)
			}
			// Judged were exactly threshold credentials: threshold-1 answered
			// 401 and the one that locked answered 423, like every attempt
			// refused unjudged after it.
			if byStatus[401] != threshold-1 {
				t.Errorf("%d answers 401, want %d (one per judged failure before the lock)", byStatus[401], threshold-1)
			}
			for _, rg := range replicas {
				locked := problemIs(t, "right password while locked", passwordLogin(rg, op, pw, "admin-console"), 423, "account_locked")
				if u, ok := locked["locked_until"].(string); !ok || u == "" {
					t.Errorf("locked_until = %v", locked["locked_until"])
				}
			}
		})
	}
}

// ---- 2. spellings of one operator ID share one counter

func TestLockoutOperatorIDSpellings(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			op, pw := newClerk(g, "honcho", "3002", "counter_clerk", "admin-console")
			fullWidth := strings.Map(func(r rune) rune {
				if r >= '!' && r <= '~' {
					return r - '!' + '！' // U+FF01…: the full-width forms NFKC folds back
				}
				return r
			}, op)
			spellings := []string{op, strings.ToLower(op), fullWidth, " " + strings.ToLower(fullWidth) + " ", op}
			for i, sp := range spellings {
				want, code := 401, "invalid_credentials"
				if i == len(spellings)-1 {
					want, code = 423, "account_locked"
				}
				problemIs(t, fmt.Sprintf("failure %d as %q", i+1, sp), passwordLogin(g, sp, "not-the-password-1", "admin-console"), want, code)
			}
			counted, _ := failures(g, op)
			if len(counted) != len(spellings) {
				t.Errorf("%d counted failures under %s, want %d", len(counted), op, len(spellings))
			}
			for _, sp := range spellings[1:3] {
				problemIs(t, "right password as "+sp, passwordLogin(g, sp, pw, "admin-console"), 423, "account_locked")
			}
			// Spellings that NFKC lengthens past the longest operator ID
			// (64 bytes) name nobody, and are answered like any unknown
			// operator: cut, they must still be text.
			for _, long := range []string{strings.Repeat("カ", 30), strings.Repeat("㌀", 6), strings.Repeat("ｱ", 22)} {
				problemIs(t, fmt.Sprintf("password login as %q", long), passwordLogin(g, long, "Not-the-password-1", "admin-console"), 401, "invalid_credentials")
				if len(long) <= 64 {
					g.must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": long})
				}
			}
		})
	}
}

// ---- 3. an unknown operator looks and costs like a wrong password

func TestUnknownOperatorIndistinguishable(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b, servertest.WithPasswordParams(authn.DefaultPasswordParams))
			setPolicy(g, func(p map[string]any) {
				allowPasswords(p)
				section(p, "lockout")["threshold"] = 100 // measuring, not locking
			})
			op, _ := newClerk(g, "honcho", "3003", "counter_clerk", "admin-console")
			wrong := func() servertest.Response { return passwordLogin(g, op, "Not-the-password-1", "admin-console") }
			unknown := func() servertest.Response {
				return passwordLogin(g, "OP-ZZZZZZZZ", "Not-the-password-1", "admin-console")
			}
			w, u := wrong(), unknown() // also warms up both paths
			if w.Status != 401 || u.Status != 401 || !bytes.Equal(stripID(w.Body), stripID(u.Body)) {
				t.Fatalf("wrong password %d %s vs unknown operator %d %s", w.Status, w.Body, u.Status, u.Body)
			}
			if w.Header.Get("Content-Type") != u.Header.Get("Content-Type") {
				t.Errorf("content types differ: %q vs %q", w.Header.Get("Content-Type"), u.Header.Get("Content-Type"))
			}
			var tw, tu []time.Duration
			for range 5 {
				for _, c := range []struct {
					f   func() servertest.Response
					out *[]time.Duration
				}{{wrong, &tw}, {unknown, &tu}} {
					start := time.Now()
					r := c.f()
					*c.out = append(*c.out, time.Since(start))
					if r.Status != 401 {
						t.Fatalf("status %d: %s", r.Status, r.Body)
					}
				}
			}
			mw, mu := median(tw), median(tu)
			t.Logf("median wrong password %v, unknown operator %v", mw, mu)
			if mw > 3*mu || mu > 3*mw {
				t.Errorf("timings differ by more than 3×: wrong password %v (%v), unknown operator %v (%v)", mw, tw, mu, tu)
			}
		})
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// ---- 4. password spraying

func TestSprayingLimitedPerTerminal(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			for _, term := range []string{"honcho-01", "honcho-02", "honcho-03"} {
				terminalAt(g, "honcho", term)
			}
			op, pw := newClerk(g, "honcho", "3004", "counter_clerk", "honcho-02")
			other, _ := newClerk(g, "honcho", "3005", "counter_clerk", "honcho-02")
			// The spraying terminal: 20 distinct unknown operators (the
			// default spray_distinct_operators) from 127.0.0.1.
			for i := range 20 {
				problemIs(t, fmt.Sprintf("spray %d", i), passwordLogin(g, fmt.Sprintf("OP-SPRAY%03d", i), "Haru-2027-natsu", "honcho-01"), 401, "invalid_credentials")
			}
			for what, r := range map[string]servertest.Response{
				"password login": passwordLogin(g, op, pw, "honcho-01"),
				"card login":     g.do("POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "honcho-01"}),
				"unknown again":  passwordLogin(g, "OP-SPRAY000", "Haru-2027-natsu", "honcho-01"),
				"other operator": passwordLogin(g, other, "whatever-1234", "honcho-01"),
			} {
				problemIs(t, "after spraying, "+what, r, 429, "rate_limited")
				ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
				if err != nil || ra < 1 || ra > 600 {
					t.Errorf("%s: Retry-After %q", what, r.Header.Get("Retry-After"))
				}
			}
			// Another terminal on another machine still works.
			g2 := g.from("127.0.0.2")
			loginAs(g2, op, pw, "honcho-02")

			// Many failures against one operator lock it; the spraying
			// counter never answers them.
			g3 := g.from("127.0.0.3")
			for i := range 30 {
				r := passwordLogin(g3, other, fmt.Sprintf("Guess-%02d-pass", i), "honcho-03")
				if r.Status == 429 {
					t.Fatalf("failure %d against one operator: 429 %s", i, r.Body)
				}
				want := 401
				if i >= 4 {
					want = 423
				}
				if r.Status != want {
					t.Fatalf("failure %d against one operator: %d, want %d: %s", i, r.Status, want, r.Body)
				}
			}
			// The block ends with the spray window.
			s.Clock.Advance(601 * time.Second)
			loginAs(g, op, pw, "honcho-01")
		})
	}
}

// ---- 5. losing Redis loses nothing durable

func TestRedisFlushedDuringLock(t *testing.T) {
	i := slices.IndexFunc(servertest.Backends, func(b servertest.Backend) bool { return b.Redis })
	if i < 0 {
		t.Fatal("no backend with Redis")
	}
	s, g := startWatched(t, servertest.Backends[i])
	setPolicy(g, allowPasswords)
	locked, lockedPW := newClerk(g, "honcho", "3006", "counter_clerk", "admin-console")
	ended, endedPW := newClerk(g, "honcho", "3007", "counter_clerk", "admin-console")
	other, otherPW := newClerk(g, "honcho", "3008", "counter_clerk", "admin-console")
	live := loginAs(g, other, otherPW, "admin-console")["access_token"].(string)

	for i := range 5 {
		passwordLogin(g, locked, fmt.Sprintf("Wrong-%d-password", i), "admin-console")
	}
	problemIs(t, "locked before the flush", passwordLogin(g, locked, lockedPW, "admin-console"), 423, "account_locked")
	gone := loginAs(g, ended, endedPW, "admin-console")["access_token"].(string)
	g.must(200, "GET", "/v1/me", gone, nil)
	g.must(204, "POST", "/v1/logout", gone, nil)
	g.must(401, "GET", "/v1/me", gone, nil)

	if s.Redis == nil || s.RedisPrefix == "" {
		t.Fatal("servertest did not expose the Redis prefix")
	}
	testenv.DeletePrefix(context.Background(), s.Redis, s.RedisPrefix)
	if n, err := s.Redis.Keys(context.Background(), s.RedisPrefix+"*").Result(); err != nil || len(n) != 0 {
		t.Fatalf("keys left after the flush: %v %v", n, err)
	}

	problemIs(t, "locked after the flush", passwordLogin(g, locked, lockedPW, "admin-console"), 423, "account_locked")
	problemIs(t, "session ended before the flush", g.do("GET", "/v1/me", gone, nil), 401, "unauthenticated")
	// On a replica that never saw the session either.
	g2 := g.join()
	problemIs(t, "session ended before the flush, other replica", g2.do("GET", "/v1/me", gone, nil), 401, "unauthenticated")
	g.must(200, "GET", "/v1/me", live, nil)
	loginAs(g, other, otherPW, "admin-console")
	loginAs(g2, ended, endedPW, "admin-console")
	counted, _ := failures(g, locked)
	if len(counted) != 5 {
		t.Errorf("%d counted failures, want 5", len(counted))
	}
}

// ---- 6. fail closed

func TestLoginFailsClosed(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Run("ephemeral unreachable", func(t *testing.T) {
				s, g := startWatched(t, b)
				setPolicy(g, allowPasswords)
				op, pw := newClerk(g, "honcho", "3009", "counter_clerk", "admin-console")
				card := authntest.NewCard(t)
				if r := enrollCard(g, card, op, "SN-3009"); r.Status != 201 {
					t.Fatalf("enroll: %d %s", r.Status, r.Body)
				}
				// A replica whose Redis does not answer (nothing listens
				// on port 1).
				rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
				t.Cleanup(func() { _ = rc.Close() })
				eph, err := eredis.New(eredis.Config{Client: rc, Prefix: "opgate-unreachable:"})
				if err != nil {
					t.Fatal(err)
				}
				bad := g.join(servertest.Shared{Store: s.App.Store, Eph: eph})
				// A session made where the state answers: refreshing it where
				// the state does not is refused, and changes nothing, so
				// that the client's retry with the same refresh token is no
				// replay (which would end the session).
				l := loginAs(g, op, pw, "admin-console")
				problemIs(t, "refresh", bad.do("POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l["refresh_token"]}), 503, "unavailable")
				g.must(200, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l["refresh_token"]})
				g.must(200, "GET", "/v1/me", l["access_token"].(string), nil)

				countedBefore, refusedBefore := failures(g, op)
				opBefore := g.must(200, "GET", "/v1/operators/"+op, s.Admin, nil).Map(t)
				for _, pwd := range []string{pw, "Wrong-password-1", "Wrong-password-2", "Wrong-password-3", "Wrong-password-4", "Wrong-password-5", "Wrong-password-6"} {
					problemIs(t, "password login", passwordLogin(bad, op, pwd, "admin-console"), 503, "unavailable")
				}
				problemIs(t, "unknown operator", passwordLogin(bad, "OP-ZZZZZZZZ", "Wrong-password-1", "admin-console"), 503, "unavailable")
				problemIs(t, "card login", bad.do("POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op}), 503, "unavailable")
				// A ceremony begun where the state answers cannot be
				// finished where it does not.
				begin := g.must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console"})
				id := begin.Map(t)["login_id"].(string)
				problemIs(t, "card finish", bad.do("POST", "/v1/login/card/finish", "", map[string]any{"login_id": id,
					"credential": json.RawMessage(card.Get(begin.Body, servertest.Origin, card.UserHandle()))}), 503, "unavailable")

				countedAfter, refusedAfter := failures(g, op)
				if len(countedAfter) != len(countedBefore) || len(refusedAfter) != len(refusedBefore) {
					t.Errorf("login.failed events %d/%d before, %d/%d after", len(countedBefore), len(refusedBefore), len(countedAfter), len(refusedAfter))
				}
				opAfter := g.must(200, "GET", "/v1/operators/"+op, s.Admin, nil).Map(t)
				for _, k := range []string{"status", "locked_until", "lock_permanent"} {
					if fmt.Sprint(opBefore[k]) != fmt.Sprint(opAfter[k]) {
						t.Errorf("%s changed: %v → %v", k, opBefore[k], opAfter[k])
					}
				}
				// Where the state answers the password still works: nothing
				// was counted.
				loginAs(g, op, pw, "admin-console")
				if r := cardLoginWith(g, card, "admin-console", "", nil); r.Status != 200 {
					t.Errorf("card login afterwards: %d %s", r.Status, r.Body)
				}
			})
			t.Run("store closed", func(t *testing.T) {
				for _, stale := range []bool{false, true} {
					s, g, closeStore := startClosable(t, b)
					setPolicy(g, allowPasswords)
					op, pw := newClerk(g, "honcho", "3010", "counter_clerk", "admin-console")
					tok := loginAs(g, op, pw, "admin-console")["access_token"].(string)
					closeStore()
					if stale {
						// The cached policy is too old: it must be read
						// from the store too.
						s.Clock.Advance(time.Minute)
					}
					what := func(s string) string { return fmt.Sprintf("%s (cached policy stale: %v)", s, stale) }
					for _, pwd := range []string{pw, "Wrong-password-1"} {
						problemIs(t, what("password login"), passwordLogin(g, op, pwd, "admin-console"), 503, "unavailable")
					}
					problemIs(t, what("unknown operator"), passwordLogin(g, "OP-ZZZZZZZZ", "x-123456789", "admin-console"), 503, "unavailable")
					problemIs(t, what("card login"), g.do("POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op}), 503, "unavailable")
					if stale {
						// Authentication itself needs the policy (the idle
						// timeout): unreadable, the request is refused as
						// unavailable before any handler runs.
						problemIs(t, what("a session's request"), g.do("GET", "/v1/me", tok, nil), 503, "unavailable")
					}
				}
			})
		})
	}
}

// startClosable is startWatched on a store the test closes itself, once,
// with the function returned.
func startClosable(t *testing.T, b servertest.Backend) (*servertest.Server, gate, func()) {
	t.Helper()
	ctx := context.Background()
	st := servertest.OpenStore(t, b) // its own cleanup closes it again: Close is idempotent
	w := &watch{log: &logBuffer{}, secrets: map[string]int{}}
	var once sync.Once
	closeStore := func() {
		once.Do(func() {
			w.noAudit = true
			if err := st.Close(); err != nil {
				t.Errorf("close store: %v", err)
			}
		})
	}
	t.Cleanup(closeStore)
	clk := clocktest.New()
	s := servertest.Join(t, servertest.Shared{Store: st, Eph: servertest.OpenEphemeral(t, b, clk)}, clk, servertest.WithLog(w.log))
	var err error
	if s.Boot, err = bootstrap.Run(ctx, st, clk, bootstrap.Params{SiteID: "honcho", SiteName: "本町市民課", MunicipalityCode: "132152",
		StaffNumber: "0001", Name: "管理 花子"}); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	s.Admin = s.Token(s.Boot.OperatorID, "honcho", "admin-console")
	s, g := watched(t, w, s)
	return s, g, closeStore
}

// ---- 7. sessions

func TestSessionTimeouts(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g := startWatched(t, b)
			setPolicy(g, func(p map[string]any) {
				allowPasswords(p)
				ss := section(p, "session")
				ss["idle_timeout_s"], ss["access_token_ttl_s"], ss["absolute_timeout_s"] = 60, 120, 600
			})
			op, pw := newClerk(g, "honcho", "3011", "counter_clerk", "admin-console")

			t.Run("idle", func(t *testing.T) {
				g := g
				g.t = t
				l := loginAs(g, op, pw, "admin-console")
				tok, sid := l["access_token"].(string), l["session_id"].(string)
				s.Clock.Advance(59 * time.Second)
				g.must(200, "GET", "/v1/me", tok, nil)
				s.Clock.Advance(60 * time.Second)
				problemIs(t, "after the idle timeout", g.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
				s.Admin = s.Token(s.Boot.OperatorID, "honcho", "admin-console") // idle too by now
				var found bool
				for _, e := range events(g, url.Values{"operator_id": {op}, "type": {"session.ended"}}) {
					if e["resource"] == "session:"+sid {
						found = true
						if e["reason"] != "idle_timeout" {
							t.Errorf("session.ended reason %v, want idle_timeout", e["reason"])
						}
					}
				}
				if !found {
					t.Error("no session.ended event")
				}
				g.must(401, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l["refresh_token"]})
			})

			t.Run("activity then absolute", func(t *testing.T) {
				g := g
				g.t = t
				l := loginAs(g, op, pw, "admin-console")
				tok, refresh := l["access_token"].(string), l["refresh_token"].(string)
				for elapsed := 40; elapsed <= 640; elapsed += 40 {
					s.Clock.Advance(40 * time.Second)
					r := g.do("POST", "/v1/session/refresh", "", map[string]any{"refresh_token": refresh})
					if elapsed >= 600 {
						problemIs(t, fmt.Sprintf("refresh at %ds, past the absolute timeout", elapsed), r, 401, "unauthenticated")
						problemIs(t, fmt.Sprintf("token at %ds, past the absolute timeout", elapsed), g.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
						break
					}
					if r.Status != 200 {
						t.Fatalf("refresh at %ds (active every 40s, idle timeout 60s): %d %s", elapsed, r.Status, r.Body)
					}
					m := r.Map(t)
					tok, refresh = m["access_token"].(string), m["refresh_token"].(string)
					if exp := int64(claims(t, tok)["exp"].(float64)); exp > s.Clock.Now().Unix()+int64(600-elapsed) {
						t.Errorf("token at %ds outlives the session: exp %d", elapsed, exp)
					}
					g.must(200, "GET", "/v1/me", tok, nil)
				}
			})

			t.Run("access token expiry", func(t *testing.T) {
				g := g
				g.t = t
				l := loginAs(g, op, pw, "admin-console")
				tok := l["access_token"].(string)
				for range 2 {
					s.Clock.Advance(50 * time.Second)
					g.must(200, "GET", "/v1/me", tok, nil)
				}
				s.Clock.Advance(21 * time.Second) // 121 s: past exp, 21 s after the last use
				problemIs(t, "expired access token", g.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
				// The session itself lives.
				r := g.must(200, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l["refresh_token"]})
				g.must(200, "GET", "/v1/me", token(t, r), nil)
			})

			t.Run("logout on both replicas", func(t *testing.T) {
				g := g
				g.t = t
				g2 := g.join()
				tok := loginAs(g, op, pw, "admin-console")["access_token"].(string)
				g.must(200, "GET", "/v1/me", tok, nil)
				g2.must(200, "GET", "/v1/me", tok, nil)
				g2.must(204, "POST", "/v1/logout", tok, nil)
				problemIs(t, "after logout, this replica", g2.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
				problemIs(t, "after logout, the other replica", g.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
			})
		})
	}
}

// ---- 8. emergency stop

func TestEmergencyStopLogins(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			siteWithTerminal(g, "kita", "kita-01")
			clerk, clerkPW := newClerk(g, "honcho", "3012", "counter_clerk", "admin-console")
			north, northPW := newClerk(g, "kita", "3013", "counter_clerk", "kita-01")
			admin := string(s.Boot.OperatorID)
			card := authntest.NewCard(t)
			if r := enrollCard(g, card, clerk, "SN-3012"); r.Status != 201 {
				t.Fatalf("enroll: %d %s", r.Status, r.Body)
			}
			clerkTok := loginAs(g, clerk, clerkPW, "admin-console")["access_token"].(string)
			northTok := loginAs(g, north, northPW, "kita-01")["access_token"].(string)
			adminTok2 := loginAs(g, admin, s.Boot.TemporaryPassword, "admin-console")["access_token"].(string)

			stop := map[string]any{"scope": "site", "site_id": "honcho", "reason": "不正アクセスの疑い"}
			r := g.must(200, "POST", "/v1/emergency/stop", s.Admin, stop).Map(t)
			if n, _ := r["sessions_ended"].(float64); n < 2 {
				t.Errorf("sessions_ended %v, want at least the clerk's and the admin's second", r["sessions_ended"])
			}
			problemIs(t, "second stop of the site", g.do("POST", "/v1/emergency/stop", s.Admin, stop), 409, "conflict")
			if items := g.must(200, "GET", "/v1/emergency", s.Admin, nil).Map(t)["items"].([]any); len(items) != 1 ||
				items[0].(map[string]any)["site_id"] != "honcho" || items[0].(map[string]any)["reason"] != "不正アクセスの疑い" {
				t.Errorf("stops in force: %v", items)
			}
			problemIs(t, "a clerk reads the stops", g.do("GET", "/v1/emergency", northTok, nil), 403, "forbidden")
			g.must(200, "GET", "/v1/me", s.Admin, nil) // the caller's own session
			problemIs(t, "clerk's session at the stopped site", g.do("GET", "/v1/me", clerkTok, nil), 401, "unauthenticated")
			problemIs(t, "admin's other session at the stopped site", g.do("GET", "/v1/me", adminTok2, nil), 401, "unauthenticated")
			g.must(200, "GET", "/v1/me", northTok, nil)
			problemIs(t, "login at the stopped site", passwordLogin(g, clerk, clerkPW, "admin-console"), 503, "login_suspended")
			problemIs(t, "card login at the stopped site", cardLoginWith(g, card, "admin-console", "", nil), 503, "login_suspended")
			loginAs(g, north, northPW, "kita-01")
			loginAs(g, admin, s.Boot.TemporaryPassword, "admin-console") // holds emergency.stop
			// A wrong password during the stop is still judged as one.
			problemIs(t, "wrong password at the stopped site", passwordLogin(g, clerk, "Wrong-password-1", "admin-console"), 401, "invalid_credentials")

			g.must(200, "POST", "/v1/emergency/resume", s.Admin, stop)
			if items := g.must(200, "GET", "/v1/emergency", s.Admin, nil).Map(t)["items"].([]any); len(items) != 0 {
				t.Errorf("stops in force after the resume: %v", items)
			}
			problemIs(t, "second resume", g.do("POST", "/v1/emergency/resume", s.Admin, stop), 409, "conflict")
			loginAs(g, clerk, clerkPW, "admin-console")
			if r := cardLoginWith(g, card, "admin-console", "", nil); r.Status != 200 {
				t.Errorf("card login after the resume: %d %s", r.Status, r.Body)
			}
			// Refusals during the stop were not failures of the clerk's.
			if counted, _ := failures(g, clerk); len(counted) != 1 {
				t.Errorf("%d counted failures, want 1 (the wrong password)", len(counted))
			}

			all := map[string]any{"scope": "all", "reason": "全庁停止"}
			northTok = loginAs(g, north, northPW, "kita-01")["access_token"].(string)
			clerkTok = loginAs(g, clerk, clerkPW, "admin-console")["access_token"].(string)
			g.must(200, "POST", "/v1/emergency/stop", s.Admin, all)
			problemIs(t, "second stop of all", g.do("POST", "/v1/emergency/stop", s.Admin, all), 409, "conflict")
			g.must(200, "GET", "/v1/me", s.Admin, nil)
			for what, tok := range map[string]string{"honcho": clerkTok, "kita": northTok} {
				problemIs(t, "session at "+what+" under a stop of all", g.do("GET", "/v1/me", tok, nil), 401, "unauthenticated")
			}
			problemIs(t, "login at honcho under a stop of all", passwordLogin(g, clerk, clerkPW, "admin-console"), 503, "login_suspended")
			problemIs(t, "login at kita under a stop of all", passwordLogin(g, north, northPW, "kita-01"), 503, "login_suspended")
			loginAs(g, admin, s.Boot.TemporaryPassword, "admin-console")
			g.must(200, "POST", "/v1/emergency/resume", s.Admin, all)
			loginAs(g, clerk, clerkPW, "admin-console")
			loginAs(g, north, northPW, "kita-01")
			if n := len(events(g, url.Values{"type": {"emergency.stopped"}})); n != 2 {
				t.Errorf("%d emergency.stopped events, want 2", n)
			}
		})
	}
}

// ---- 9. card and password

func TestCardPlusPasswordPolicy(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b)
			op, pw, card := cardAndPasswordClerk(t, g, "3014")

			problemIs(t, "card without password", cardLoginWith(g, card, "admin-console", op, nil), 401, "invalid_credentials")
			wrong := "Wrong-password-1"
			problemIs(t, "card with a wrong password", cardLoginWith(g, card, "admin-console", op, &wrong), 401, "invalid_credentials")
			problemIs(t, "password alone", passwordLogin(g, op, pw, "admin-console"), 401, "invalid_credentials")
			r := cardLoginWith(g, card, "admin-console", op, &pw)
			if r.Status != 200 {
				t.Fatalf("card with the password: %d %s", r.Status, r.Body)
			}
			tok := token(t, r)
			amr := fmt.Sprint(claims(t, tok)["amr"])
			if amr != "[hwk user pwd]" {
				t.Errorf("token amr %s, want [hwk user pwd]", amr)
			}
			me := g.must(200, "GET", "/v1/me", tok, nil).Map(t)
			if got := fmt.Sprint(me["session"].(map[string]any)["amr"]); got != "[hwk user pwd]" {
				t.Errorf("session amr %s", got)
			}
			counted, _ := failures(g, op)
			reasons := []string{}
			for _, e := range counted {
				reasons = append(reasons, fmt.Sprint(e["reason"]))
			}
			sort.Strings(reasons)
			if diff := cmp.Diff([]string{"bad_password", "password_required"}, reasons); diff != "" {
				t.Errorf("counted failure reasons (-want +got):\n%s", diff)
			}
			// Discoverable (no operator named) asks for the password too.
			problemIs(t, "discoverable card without password", cardLoginWith(g, card, "admin-console", "", nil), 401, "invalid_credentials")
			if r := cardLoginWith(g, card, "admin-console", "", &pw); r.Status != 200 {
				t.Errorf("discoverable card with the password: %d %s", r.Status, r.Body)
			}
			// A policy without any card method refuses cards, with or
			// without the password.
			setPolicy(g, func(p map[string]any) { p["login_methods"] = []string{"password"} })
			problemIs(t, "card where cards are not allowed", cardLoginWith(g, card, "admin-console", op, nil), 401, "invalid_credentials")
			problemIs(t, "card and password where cards are not allowed", cardLoginWith(g, card, "admin-console", op, &pw), 401, "invalid_credentials")
		})
	}
}

// Where a site asks for the card and the password, two answers of one
// card carrying one counter (a clone) still give one login, and the card
// is flagged, as on the card-only path: the password's judgement outside
// the transaction must not skip the counter's.
func TestClonedCounterWithPassword(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b)
			op, pw, card := cardAndPasswordClerk(t, g, "3015")
			card.SetCounter(50)
			card.FreezeCounter(true)
			var finishes []map[string]any
			for range 4 {
				begin := g.must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op})
				id, _ := begin.Map(t)["login_id"].(string)
				finishes = append(finishes, map[string]any{"login_id": id, "password": pw,
					"credential": json.RawMessage(card.Get(begin.Body, servertest.Origin, card.UserHandle()))})
			}
			if ok, refused := finishAtOnce(t, g.do, finishes); ok != 1 || refused != 3 {
				t.Fatalf("%d logins and %d refusals with one counter value, want 1 and 3", ok, refused)
			}
			o := g.must(200, "GET", "/v1/operators/"+op, g.s.Admin, nil).Map(t)
			if c := o["cards"].([]any)[0].(map[string]any); c["clone_suspected"] != true {
				t.Fatalf("card not flagged: %v", c)
			}
		})
	}
}

// cardAndPasswordClerk issues a counter clerk with a password and an
// enrolled card, then leaves the policy asking for both at every login.
func cardAndPasswordClerk(t *testing.T, g gate, staff string) (op, pw string, card *authntest.Card) {
	t.Helper()
	setPolicy(g, allowPasswords)
	op, pw = newClerk(g, "honcho", staff, "counter_clerk", "admin-console")
	card = authntest.NewCard(t)
	if r := enrollCard(g, card, op, "SN-"+staff); r.Status != 201 {
		t.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	setPolicy(g, func(p map[string]any) { p["login_methods"] = []string{"card+password"} })
	return op, pw, card
}

// ---- 10. enrollment policy

func TestEnrollmentCardPolicy(t *testing.T) {
	const modelA, modelB = "2fc0579f-8113-47ea-b116-bb5a8db9202a", "ee882879-721c-4913-9775-3dfcce97072a"
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g := startWatched(t, b)
			op := string(s.Boot.OperatorID)
			refusals := func() []string {
				var out []string
				for _, e := range events(g, url.Values{"operator_id": {op}, "type": {"card.revoked"}}) {
					if e["resource"] == "enrollment" {
						out = append(out, fmt.Sprint(e["data"].(map[string]any)["reason"]))
					}
				}
				return out
			}

			synced := authntest.NewCard(t)
			synced.SetBackup(true, true)
			problemIs(t, "backup-eligible card", enrollCard(g, synced, op, "SN-BE-1"), 401, "invalid_credentials")
			eligible := authntest.NewCard(t)
			eligible.SetBackup(true, false)
			problemIs(t, "backup-eligible card, not backed up", enrollCard(g, eligible, op, "SN-BE-2"), 401, "invalid_credentials")
			if diff := cmp.Diff([]string{"backup_eligible_refused", "backup_eligible_refused"}, refusals()); diff != "" {
				t.Errorf("refusal events (-want +got):\n%s", diff)
			}
			setPolicy(g, func(p map[string]any) { section(p, "cards")["allow_backup_eligible"] = true })
			if r := enrollCard(g, synced, op, "SN-BE-1"); r.Status != 201 {
				t.Errorf("backup-eligible card allowed by policy: %d %s", r.Status, r.Body)
			}

			setPolicy(g, func(p map[string]any) {
				c := section(p, "cards")
				c["allow_backup_eligible"], c["allowed_aaguids"] = false, []string{strings.ToUpper(modelA)} // case does not matter
			})
			b := authntest.NewCard(t)
			b.SetAAGUID(modelB)
			problemIs(t, "card model not on the list", enrollCard(g, b, op, "SN-B"), 401, "invalid_credentials")
			plain := authntest.NewCard(t) // the zero AAGUID
			problemIs(t, "card without a model", enrollCard(g, plain, op, "SN-0"), 401, "invalid_credentials")
			a := authntest.NewCard(t)
			a.SetAAGUID(modelA)
			if r := enrollCard(g, a, op, "SN-A"); r.Status != 201 {
				t.Errorf("listed card model: %d %s", r.Status, r.Body)
			}
			want := []string{"backup_eligible_refused", "backup_eligible_refused", "aaguid_not_allowed", "aaguid_not_allowed"}
			if diff := cmp.Diff(want, refusals()); diff != "" {
				t.Errorf("refusal events (-want +got):\n%s", diff)
			}
			// Only the two accepted cards are the operator's.
			cards := g.must(200, "GET", "/v1/operators/"+op, s.Admin, nil).Map(t)["cards"].([]any)
			var serials []string
			for _, c := range cards {
				serials = append(serials, c.(map[string]any)["card_serial"].(string))
			}
			sort.Strings(serials)
			if diff := cmp.Diff([]string{"SN-A", "SN-BE-1"}, serials); diff != "" {
				t.Errorf("cards (-want +got):\n%s", diff)
			}
		})
	}
}

// ---- 11. no secret leaks

// logBuffer is a log writer safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretLeaks runs every flow that issues or takes a secret on a
// watched server; the watch (startWatched) checks the log, the audit events
// and every answer when it ends, as it does for every test of this file.
func TestNoSecretLeaks(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			admin := string(s.Boot.OperatorID)
			first := g.must(200, "POST", "/v1/login/password", "", map[string]any{"operator_id": admin, "password": s.Boot.TemporaryPassword, "terminal_id": "admin-console"})
			adminPW := "Honcho-2027-kanri"
			g.must(204, "POST", "/v1/me/password", token(t, first), map[string]any{"current_password": s.Boot.TemporaryPassword, "new_password": adminPW})
			// The change ended the admin's other sessions, s.Admin's too.
			g.must(401, "GET", "/v1/me", s.Admin, nil)
			s.Admin = token(t, first)
			loginAs(g, admin, adminPW, "admin-console")
			for i := range 3 {
				wrong := fmt.Sprintf("Wrong-guess-%d-2027", i)
				passwordLogin(g, admin, wrong, "admin-console")
				passwordLogin(g, "OP-NOBODY00", wrong, "admin-console")
			}
			// A weak new password is refused without being echoed.
			g.must(422, "POST", "/v1/me/password", s.Admin, map[string]any{"current_password": adminPW, "new_password": "password1234"})

			// The admin's card: enrolled with the bootstrap code, then a
			// login, a refresh, and a replayed refresh token.
			card := authntest.NewCard(t)
			if r := enrollWithCode(g, card, s.Boot.EnrollmentCode); r.Status != 201 {
				t.Fatalf("enroll: %d %s", r.Status, r.Body)
			}
			cl := cardLoginWith(g, card, "admin-console", admin, nil)
			if cl.Status != 200 {
				t.Fatalf("card login: %d %s", cl.Status, cl.Body)
			}
			oldRefresh := cl.Map(t)["refresh_token"].(string)
			g.must(200, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": oldRefresh})
			g.must(401, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": oldRefresh})

			// A clerk: issued, reset, first login, password change (and a
			// wrong current password), a card enrollment code from the
			// API, introspection, logout.
			clerk := g.must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": "3015", "name": "窓口 太郎",
				"site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
			g.must(201, "POST", "/v1/operators/"+clerk+"/grants", s.Admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"})
			temp := g.must(200, "POST", "/v1/operators/"+clerk+"/password/reset", s.Admin, nil).Map(t)["temporary_password"].(string)
			cfirst := g.must(200, "POST", "/v1/login/password", "", map[string]any{"operator_id": clerk, "password": temp, "terminal_id": "admin-console"})
			clerkPW := "Madoguchi-2027-haru"
			g.must(401, "POST", "/v1/me/password", token(t, cfirst), map[string]any{"current_password": "Wrong-guess-0-2027", "new_password": clerkPW})
			g.must(204, "POST", "/v1/me/password", token(t, cfirst), map[string]any{"current_password": temp, "new_password": clerkPW})
			ctok := loginAs(g, clerk, clerkPW, "admin-console")["access_token"].(string)
			code := g.must(201, "POST", "/v1/operators/"+clerk+"/cards/enrollments", s.Admin, map[string]any{"card_serial": "SN-3015"}).Map(t)["enrollment_code"].(string)
			if r := enrollWithCode(g, authntest.NewCard(t), code); r.Status != 201 {
				t.Fatalf("clerk enroll: %d %s", r.Status, r.Body)
			}
			g.must(401, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": code}) // used up
			if in := g.must(200, "POST", "/v1/introspect", s.Admin, map[string]any{"token": ctok}).Map(t); in["active"] != true {
				t.Errorf("introspect: %v", in)
			}
			g.must(200, "GET", "/v1/me", ctok, nil)
			g.must(204, "POST", "/v1/logout", ctok, nil)
			g.must(401, "GET", "/v1/me", ctok, nil)
			if in := g.must(200, "POST", "/v1/introspect", s.Admin, map[string]any{"token": ctok}).Map(t); in["active"] != false {
				t.Errorf("introspect after logout: %v", in)
			}
			g.must(200, "GET", "/v1/operators/"+clerk+"/history", s.Admin, nil)
			g.must(200, "GET", "/v1/operators/"+admin+"/history", s.Admin, nil)

			// The watch saw every kind of secret, each issuer where it
			// should be.
			w := g.w
			w.mu.Lock()
			for what, v := range map[string]string{"temporary password": temp, "new password": clerkPW, "enrollment code": code,
				"refresh token": oldRefresh, "access token": ctok, "bootstrap enrollment code": s.Boot.EnrollmentCode} {
				issuer, ok := w.secrets[v]
				switch {
				case !ok:
					t.Errorf("the watch missed the %s", what)
				case what == "new password" || what == "bootstrap enrollment code":
					if issuer != -1 {
						t.Errorf("the %s was issued by answer %d", what, issuer)
					}
				case issuer < 0:
					t.Errorf("the watch has no issuer for the %s", what)
				}
			}
			t.Logf("%d secrets, %d answers watched", len(w.secrets), len(w.answers))
			w.mu.Unlock()

			// And it would tell: an answer that echoes a password is a leak.
			planted := &watch{log: w.log, secrets: map[string]int{clerkPW: -1}, answers: []recordedAnswer{{"planted", `{"detail":"` + clerkPW + `"}`}}}
			if got := planted.leaks(w.log.String(), nil); len(got) != 1 || !strings.Contains(got[0], "answer 0") {
				t.Errorf("a planted leak was reported as %v", got)
			}
		})
	}
}

// ---- 12. terminals

func TestLoginTerminalChecks(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			_, g := startWatched(t, b)
			setPolicy(g, allowPasswords)
			siteWithTerminal(g, "kita", "kita-01")
			op, pw := newClerk(g, "honcho", "3016", "counter_clerk", "admin-console")
			card := authntest.NewCard(t)
			if r := enrollCard(g, card, op, "SN-3016"); r.Status != 201 {
				t.Fatalf("enroll: %d %s", r.Status, r.Body)
			}
			for _, tc := range []struct {
				name, terminal, reason string
				login                  func() servertest.Response
			}{
				{"unknown terminal, password", "nowhere-01", "terminal_unknown", func() servertest.Response { return passwordLogin(g, op, pw, "nowhere-01") }},
				{"unknown terminal, card", "nowhere-02", "terminal_unknown", func() servertest.Response { return cardLoginWith(g, card, "nowhere-02", op, nil) }},
				{"other site, password", "kita-01", "terminal_other_site", func() servertest.Response { return passwordLogin(g, op, pw, "kita-01") }},
				{"other site, card", "kita-01", "terminal_other_site", func() servertest.Response { return cardLoginWith(g, card, "kita-01", "", nil) }},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, before := failures(g, op)
					problemIs(t, tc.name, tc.login(), 403, "terminal_not_allowed")
					_, after := failures(g, op)
					if len(after) != len(before)+1 {
						t.Fatalf("%d refusal events, want %d", len(after), len(before)+1)
					}
					e := after[len(after)-1]
					if e["reason"] != tc.reason || e["terminal_id"] != tc.terminal {
						t.Errorf("refusal event: reason %v terminal %v, want %s at %s", e["reason"], e["terminal_id"], tc.reason, tc.terminal)
					}
				})
			}
			// None of it counted against the operator.
			if counted, _ := failures(g, op); len(counted) != 0 {
				t.Errorf("%d counted failures", len(counted))
			}
			loginAs(g, op, pw, "admin-console")
		})
	}
}

// TestNoSessionOutlivesARetirementDuringItsLogin: a password login takes
// the time of argon2id between reading the operator and starting the
// session. A retirement (which ends every session it finds) committed in
// that time must not be followed by a live session: whatever the
// interleaving, once the retirement has answered, the login's token (if
// it got one) is refused.
func TestNoSessionOutlivesARetirementDuringItsLogin(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			// Slower hashes widen the window the retirement falls into.
			s, g := startWatched(t, b, servertest.WithPasswordParams(authn.PasswordParams{Memory: 16 << 10, Time: 2, Threads: 1}))
			setPolicy(g, allowPasswords)
			for i, delay := range []time.Duration{0, 5 * time.Millisecond, 15 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond} {
				id, pw := newClerk(g, "honcho", fmt.Sprintf("48%02d", i), "counter_clerk", "admin-console")
				login := make(chan servertest.Response, 1)
				go func() {
					login <- s.Do("POST", "/v1/login/password", "", map[string]any{"operator_id": id, "password": pw, "terminal_id": "admin-console"})
				}()
				time.Sleep(delay)
				g.must(200, "POST", "/v1/operators/"+id+"/retire", s.Admin, map[string]any{"reason": "退職"})
				r := <-login
				if r.Status != 200 {
					continue // refused: nothing to outlive
				}
				if me := s.Do("GET", "/v1/me", token(t, r), nil); me.Status != 401 {
					t.Errorf("delay %v: a session started around a retirement is alive: %d %s", delay, me.Status, me.Body)
				}
			}
		})
	}
}

// TestNoSessionSurvivesAnEmergencyStop: clerks log in over and over on one
// replica while the other stops logins at their site; once the stop has
// answered, no session any of those logins started is alive, whichever
// committed first.
func TestNoSessionSurvivesAnEmergencyStop(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g, other := passwordReplicas(t, b)
			var clerks []loginCred
			for i := range 4 {
				id, pw := newClerk(g, "honcho", fmt.Sprintf("49%02d", i), "counter_clerk", "admin-console")
				clerks = append(clerks, loginCred{id, pw})
			}
			stop := map[string]any{"scope": "site", "site_id": "honcho", "reason": "訓練"}
			for round := range 5 {
				stopLogins := keepLoggingIn(t, other, clerks)
				time.Sleep(time.Duration(5+round*7) * time.Millisecond)
				g.must(200, "POST", "/v1/emergency/stop", s.Admin, stop)
				tokens := stopLogins()
				for _, tok := range tokens {
					if r := s.Do("GET", "/v1/me", tok, nil); r.Status != 401 {
						t.Fatalf("round %d: a session started around the stop is alive (of %d logins): %d %s", round, len(tokens), r.Status, r.Body)
					}
				}
				g.must(200, "POST", "/v1/emergency/resume", s.Admin, stop)
			}
		})
	}
}

// TestNoSessionOutlivesAPasswordReset: logins with the old password, in
// flight on one replica while a chief resets it on the other, leave no
// live session once the reset has answered.
func TestNoSessionOutlivesAPasswordReset(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g, other := passwordReplicas(t, b)
			for round := range 4 {
				id, pw := clerkWithPassword(t, s, g, fmt.Sprintf("47%02d", round))
				stopLogins := keepLoggingIn(t, other, []loginCred{{id, pw}, {id, pw}, {id, pw}})
				time.Sleep(time.Duration(3+round*5) * time.Millisecond)
				g.must(200, "POST", "/v1/operators/"+id+"/password/reset", s.Admin, nil)
				for _, tok := range stopLogins() {
					if r := s.Do("GET", "/v1/me", tok, nil); r.Status != 401 {
						t.Fatalf("round %d: a session of the old password is alive after the reset: %d %s", round, r.Status, r.Body)
					}
				}
			}
		})
	}
}

// TestPasswordChangeDoesNotUndoAReset: a change of one's own password in
// flight while a chief resets it (the current password is judged outside
// the transaction, for tens of milliseconds) must not commit after the
// reset: the reset may be the answer to a stolen password.
func TestPasswordChangeDoesNotUndoAReset(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s, g, other := passwordReplicas(t, b)
			for round := range 12 {
				id, pw := clerkWithPassword(t, s, g, fmt.Sprintf("48%02d", round))
				tok := loginAs(g, id, pw, "admin-console")["access_token"].(string)
				next := "Mizu-7742-nagare"
				changed := make(chan int)
				go func() {
					changed <- other.Do("POST", "/v1/me/password", tok, map[string]any{"current_password": pw, "new_password": next}).Status
				}()
				time.Sleep(time.Duration(round*250) * time.Microsecond)
				temp := g.must(200, "POST", "/v1/operators/"+id+"/password/reset", s.Admin, nil).Map(t)["temporary_password"].(string)
				status := <-changed
				if r := passwordLogin(g, id, next, "admin-console"); r.Status == 200 {
					t.Fatalf("round %d: the change (%d) committed over the reset: its password logs in", round, status)
				}
				if r := passwordLogin(g, id, temp, "admin-console"); r.Status != 200 {
					t.Fatalf("round %d: the reset's temporary password does not log in: %d %s", round, r.Status, r.Body)
				}
			}
		})
	}
}

// clerkWithPassword issues a counter clerk at honcho with a password of
// their own (reset, then changed), and renews the administrator's token.
// The password history keeps one password per instant and the test clock
// stands still unless moved: each step is a second on.
func clerkWithPassword(t *testing.T, s *servertest.Server, g gate, staff string) (id, pw string) {
	t.Helper()
	id = g.must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": staff, "name": "窓口 職員",
		"site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
	g.must(201, "POST", "/v1/operators/"+id+"/grants", s.Admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"})
	s.Clock.Advance(time.Second)
	temp := g.must(200, "POST", "/v1/operators/"+id+"/password/reset", s.Admin, nil).Map(t)["temporary_password"].(string)
	s.Clock.Advance(time.Second)
	pw = "Kawa-5531-nagare"
	g.must(204, "POST", "/v1/me/password", loginAs(g, id, temp, "admin-console")["access_token"].(string),
		map[string]any{"current_password": temp, "new_password": pw})
	s.Clock.Advance(time.Second)
	s.Admin = s.Token(s.Boot.OperatorID, "honcho", "admin-console")
	return id, pw
}

// passwordReplicas starts a watched server and a second replica sharing
// its store and cache, with password logins allowed.
func passwordReplicas(t *testing.T, b servertest.Backend) (*servertest.Server, gate, *servertest.Server) {
	t.Helper()
	s, g := startWatched(t, b)
	other := servertest.Join(t, s.Shared(), s.Clock)
	setPolicy(g, allowPasswords)
	return s, g, other
}

type loginCred struct{ id, pw string }

// keepLoggingIn logs each of creds in with its password on srv, over and
// over, one goroutine each, until the returned function is called; that
// returns the access tokens of every login that succeeded.
func keepLoggingIn(t *testing.T, srv *servertest.Server, creds []loginCred) func() []string {
	var mu sync.Mutex
	var tokens []string
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range creds {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if r := srv.Do("POST", "/v1/login/password", "", map[string]any{"operator_id": c.id, "password": c.pw, "terminal_id": "admin-console"}); r.Status == 200 {
					mu.Lock()
					tokens = append(tokens, token(t, r))
					mu.Unlock()
				}
			}
		})
	}
	return func() []string {
		close(done)
		wg.Wait()
		return tokens
	}
}
