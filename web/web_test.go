package web_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/web"
)

func TestCSRFRefused(t *testing.T) {
	r := newRig(t)
	c := r.client("ja")
	good := c.csrf()
	o := r.op("本町 課長")
	form := func(token string) url.Values {
		return url.Values{"csrf": {token}, "terminal_id": {string(o.Terminal)}, "operator_id": {string(o.ID)}, "password": {"demo-2026-opgate"}}
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		header map[string]string
		want   int
	}{
		{"no token", url.Values{"operator_id": {string(o.ID)}}, nil, 403},
		{"forged token", form("AAAA" + good[4:]), nil, 403},
		{"another site", form(good), map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"token of another browser", form(r.client("ja").csrf()), nil, 403},
		{"good", form(good), map[string]string{"Sec-Fetch-Site": "same-origin"}, 303},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := c.do("POST", "/login", tc.form, tc.header)
			if p.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", p.Status, tc.want, p.Body)
			}
			if tc.want == 403 && !strings.Contains(p.Body, "送信を確認できませんでした") {
				t.Errorf("refusal does not say why: %s", p.Body)
			}
		})
	}
	// The scripts' JSON calls carry the token in a header.
	req, _ := http.NewRequest("POST", r.URL+"/login/card/begin", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("card begin without the header: %d", resp.StatusCode)
	}
}

func TestCookieFlags(t *testing.T) {
	r := newRig(t)
	c := r.client("ja")
	o := r.op("本町 課長")
	p := c.post("/login", url.Values{"terminal_id": {string(o.Terminal)}, "operator_id": {string(o.ID)}, "password": {"demo-2026-opgate"}})
	if p.Status != 303 {
		t.Fatalf("login: %d", p.Status)
	}
	names := map[string]bool{}
	for _, ck := range (&http.Response{Header: p.Header}).Cookies() {
		names[ck.Name] = true
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure {
			t.Errorf("cookie %s over plain HTTP: HttpOnly=%v SameSite=%v Secure=%v", ck.Name, ck.HttpOnly, ck.SameSite, ck.Secure)
		}
	}
	for _, n := range []string{"opgate_at", "opgate_rt", "opgate_terminal"} {
		if !names[n] {
			t.Errorf("login set no %s cookie", n)
		}
	}
	if strings.Contains(p.Body, "eyJ") {
		t.Error("a token appears in the page")
	}
	// Over TLS every cookie is Secure.
	req := httptest.NewRequest("GET", "/login", nil)
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	r.app.Handler().ServeHTTP(rec, req)
	for _, ck := range rec.Result().Cookies() {
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s over TLS: %+v", ck.Name, ck)
		}
	}
	if len(rec.Result().Cookies()) == 0 {
		t.Error("no cookie over TLS")
	}
	// Behind a proxy that ends TLS (the browsers' origin is HTTPS), plain
	// requests get Secure cookies too.
	w, err := web.New(web.Config{API: r.app.API.Handler(), Secret: []byte(strings.Repeat("k", 32)), SecureCookies: true})
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	w.Mount(r.app.API.Handler()).ServeHTTP(rec, httptest.NewRequest("GET", "/login", nil))
	for _, ck := range rec.Result().Cookies() {
		if !ck.Secure {
			t.Errorf("cookie %s behind a TLS proxy: %+v", ck.Name, ck)
		}
	}
	if len(rec.Result().Cookies()) == 0 {
		t.Error("no cookie behind a TLS proxy")
	}
}

var inlineScript = regexp.MustCompile(`(?is)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=`)

// TestSecurityHeaders checks the CSP and that no page holds inline code
// the CSP would have to allow.
func TestSecurityHeaders(t *testing.T) {
	r := newRig(t)
	admin := r.client("ja")
	admin.login(r.op("管理 花子"))
	anon := r.client("ja")
	for _, tc := range []struct {
		c    *client
		path string
	}{{anon, "/login"}, {anon, "/enroll"}, {anon, "/terminal"}, {admin, "/console"}, {admin, "/console/operators"}, {admin, "/admin/policy"},
		{admin, "/admin/audit"}, {admin, "/static/opgate.js"}} {
		p := tc.c.get(tc.path)
		if p.Status != 200 {
			t.Errorf("%s: %d", tc.path, p.Status)
		}
		csp := p.Header.Get("Content-Security-Policy")
		if csp != web.CSP || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
		if p.Header.Get("X-Frame-Options") != "DENY" || p.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: framing or sniffing headers missing", tc.path)
		}
		if strings.HasSuffix(tc.path, ".js") {
			continue
		}
		if m := inlineScript.FindString(p.Body); m != "" {
			t.Errorf("%s: inline code %q", tc.path, m)
		}
		if p.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: cacheable", tc.path)
		}
	}
}

// TestEveryPageRenders opens every page of the navigation in both
// languages, as the administrator and as the auditor.
func TestEveryPageRenders(t *testing.T) {
	r := newRig(t)
	for _, who := range []string{"管理 花子", "監査 一郎", "本町 課長", "窓口 太郎"} {
		for _, lang := range []string{"ja", "en-US,en;q=0.9"} {
			c := r.client(lang)
			c.login(r.op(who))
			home := c.get("/console")
			if home.Status != 200 {
				t.Fatalf("%s %s: /console %d", who, lang, home.Status)
			}
			links := regexp.MustCompile(`<nav[^>]*>.*?</nav>`).FindString(home.Body)
			for _, m := range regexp.MustCompile(`href="([^"]+)"`).FindAllStringSubmatch(links, -1) {
				p := c.get(m[1])
				if p.Status != 200 {
					t.Errorf("%s %s: %s: %d", who, lang, m[1], p.Status)
				}
				if strings.Contains(p.Body, "%!") {
					t.Errorf("%s %s: %s: a format error: %s", who, lang, m[1], p.Body)
				}
			}
			if who == "窓口 太郎" && strings.Contains(links, "/console/operators") {
				t.Errorf("counter staff see the operators page")
			}
			if who == "本町 課長" && strings.Contains(links, "/admin/checklist") {
				t.Errorf("a section chief sees the municipality-wide checklist")
			}
			if p := c.get("/console/ledger/download?site_id=kita&format=csv"); who == "本町 課長" && (p.Status == 200 || strings.Contains(p.Body, "北 三郎")) {
				t.Errorf("a chief of honcho downloaded kita's ledger: %d %.200s", p.Status, p.Body)
			}
			if who == "本町 課長" {
				// The search is the server's.
				p := c.get("/console/operators?site_id=honcho&q=" + url.QueryEscape("太郎"))
				if !strings.Contains(p.Body, "窓口 太郎") || strings.Contains(p.Body, "窓口 次子") {
					t.Errorf("search for 太郎: %s", p.Body)
				}
			}
			if who == "管理 花子" {
				// The reports are the server's, with its data.
				if p := c.get("/console/ledger"); !strings.Contains(p.Body, "窓口 太郎") {
					t.Errorf("the ledger does not list the site's operators: %s", p.Body)
				}
				if p := c.get("/admin/checklist"); !strings.Contains(p.Body, "12-2") {
					t.Errorf("the checklist page has no item 12-2: %s", p.Body)
				}
				// The ledger's files are the API's, relayed as written.
				csv := c.get("/console/ledger/download?site_id=honcho&format=csv")
				if csv.Status != 200 || !strings.HasPrefix(csv.Body, "\ufeff") || !strings.Contains(csv.Body, "窓口 太郎") ||
					!strings.Contains(csv.Header.Get("Content-Disposition"), "ledger.csv") {
					t.Errorf("ledger CSV: %d %v %.200s", csv.Status, csv.Header, csv.Body)
				}
				xlsx := c.get("/console/ledger/download?site_id=honcho&format=xlsx")
				if xlsx.Status != 200 || !strings.HasPrefix(xlsx.Body, "PK") || !strings.Contains(xlsx.Header.Get("Content-Type"), "spreadsheetml") {
					t.Errorf("ledger XLSX: %d %v", xlsx.Status, xlsx.Header)
				}

			}
		}
	}
}

func TestLanguage(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct{ accept, want string }{
		{"", `lang="ja"`}, {"en-US,en;q=0.9", `lang="en"`}, {"fr-FR", `lang="ja"`}, {"ja,en;q=0.5", `lang="ja"`},
	} {
		if p := r.client(tc.accept).get("/login"); !strings.Contains(p.Body, tc.want) {
			t.Errorf("Accept-Language %q: want %s", tc.accept, tc.want)
		}
	}
	c := r.client("ja")
	if p := c.post("/lang", url.Values{"lang": {"en"}, "back": {"/enroll"}}); p.Status != 303 || p.Header.Get("Location") != "/enroll" {
		t.Fatalf("switch: %d %s", p.Status, p.Header.Get("Location"))
	}
	if p := c.get("/login"); !strings.Contains(p.Body, `lang="en"`) || !strings.Contains(p.Body, "Log in with your IC card") {
		t.Errorf("the switch did not stick")
	}
	if p := c.post("/lang", url.Values{"lang": {"en"}, "back": {"//evil.example/"}}); p.Header.Get("Location") != "/login" {
		t.Errorf("open redirect: %s", p.Header.Get("Location"))
	}
}

// TestRefusalsInJapanese: each refusal of a login reads as its own
// message, the lock with the time it ends.
func TestRefusalsInJapanese(t *testing.T) {
	r := newRig(t)
	o := r.op("北 三郎")
	c := r.client("ja")
	try := func(pw, terminal string) page {
		return c.post("/login", url.Values{"terminal_id": {terminal}, "operator_id": {string(o.ID)}, "password": {pw}})
	}
	if p := try(demoPassword, "honcho-cs01"); !strings.Contains(p.Body, "この端末は登録されていないか") {
		t.Errorf("terminal of another site: %d %s", p.Status, p.Body)
	}
	c = r.client("ja")
	var last page
	for i := 0; i < 6; i++ {
		last = try("wrong-password-1", "kita-cs01")
	}
	until := r.clk.Now().Add(30 * time.Minute).Local().Format("2006-01-02 15:04")
	if last.Status != 423 || !strings.Contains(last.Body, "ロックされています") || !strings.Contains(last.Body, until) {
		t.Errorf("lockout: %d, want the end %s in %s", last.Status, until, last.Body)
	}
	// Emergency stop.
	admin := r.client("ja")
	admin.login(r.op("管理 花子"))
	if p := admin.get("/admin/emergency"); !strings.Contains(p.Body, "緊急停止はありません") {
		t.Errorf("emergency page before a stop: %s", p.Body)
	}
	if p := admin.post("/admin/emergency", url.Values{"action": {"stop"}, "scope": {"all"}, "reason": {"訓練"}}); p.Status != 303 {
		t.Fatalf("stop: %d %s", p.Status, p.Body)
	}
	if p := admin.get("/admin/emergency"); !strings.Contains(p.Body, "訓練") || !strings.Contains(p.Body, "全サイト") {
		t.Errorf("emergency page does not show the stop in force: %s", p.Body)
	}
	if p := r.client("ja").post("/login", url.Values{"terminal_id": {"honcho-cs01"}, "operator_id": {string(r.op("窓口 太郎").ID)}, "password": {demoPassword}}); !strings.Contains(p.Body, "緊急停止中") {
		t.Errorf("emergency stop: %d %s", p.Status, p.Body)
	}
}

const demoPassword = "demo-2026-opgate"

// TestGrantApproval is the console's four-eyes path without a browser:
// one chief asks for a high-risk role, the same chief cannot approve it,
// another chief can.
func TestGrantApproval(t *testing.T) {
	r := newRig(t)
	admin := r.client("ja")
	admin.login(r.op("管理 花子"))
	createRestrictedRole(t, r)
	chief1, chief2 := r.client("ja"), r.client("ja")
	chief1.login(r.op("本町 課長"))
	chief2.login(r.op("本町 課長補佐"))
	clerk := r.op("窓口 太郎")
	p := chief1.post("/console/operators/"+string(clerk.ID)+"/grant", url.Values{"role_id": {"restricted_reader"}, "site_id": {"honcho"}, "reason": {"DV支援事務"}})
	if p.Status != 303 {
		t.Fatalf("grant: %d %s", p.Status, p.Body)
	}
	list := chief1.get("/console/approvals")
	if !strings.Contains(list.Body, "自分の依頼は承認できません") {
		t.Errorf("the requester is offered to approve: %s", list.Body)
	}
	id := regexp.MustCompile(`/console/grants/(G-[A-Za-z0-9]+)/approve`).FindStringSubmatch(chief2.get("/console/approvals").Body)
	if id == nil {
		t.Fatalf("no pending grant for the second chief")
	}
	if p := chief1.post("/console/grants/"+id[1]+"/approve", url.Values{"reason": {"ok"}}); p.Status != 403 || !strings.Contains(p.Body, "自分自身") {
		t.Errorf("self approval: %d %s", p.Status, p.Body)
	}
	if p := chief2.post("/console/grants/"+id[1]+"/approve", url.Values{"reason": {"確認済み"}}); p.Status != 303 {
		t.Fatalf("approve: %d %s", p.Status, p.Body)
	}
	if p := chief2.get("/console/operators/" + string(clerk.ID)); !strings.Contains(p.Body, "restricted_reader") {
		t.Errorf("the grant is not on the operator's page")
	}
}

// createRestrictedRole adds a high-risk role through the API, as an
// administrator's tool would.
func createRestrictedRole(t *testing.T, r *rig) {
	t.Helper()
	c := r.client("ja")
	c.login(r.op("管理 花子"))
	tok := ""
	for _, ck := range c.http.Jar.Cookies(mustURL(r.URL)) {
		if ck.Name == "opgate_at" {
			tok = ck.Value
		}
	}
	req, _ := http.NewRequest("POST", r.URL+"/v1/roles", strings.NewReader(`{"role_id":"restricted_reader","name":"支援措置対象照会","permissions":["resident.read","resident.read_restricted"],"conflicts_with":[]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create role: %d", resp.StatusCode)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestForcedPasswordChange: an expired password leads to the change page
// and nowhere else until it is changed.
func TestForcedPasswordChange(t *testing.T) {
	r := newRig(t)
	r.clk.Advance(100 * 24 * time.Hour) // past the demonstration passwords' 3 months
	c := r.client("ja")
	o := r.op("窓口 次子")
	p := c.post("/login", url.Values{"terminal_id": {string(o.Terminal)}, "operator_id": {string(o.ID)}, "password": {demoPassword}})
	if p.Status != 303 || p.Header.Get("Location") != "/password" {
		t.Fatalf("login with an expired password: %d %s", p.Status, p.Header.Get("Location"))
	}
	if p := c.get("/console"); p.Status != 303 || p.Header.Get("Location") != "/password" {
		t.Errorf("console before the change: %d %s", p.Status, p.Header.Get("Location"))
	}
	if p := c.get("/password"); !strings.Contains(p.Body, "パスワードの変更が必要です") {
		t.Errorf("change page does not say why")
	}
	bad := c.post("/password", url.Values{"current_password": {demoPassword}, "new_password": {"short1"}, "confirm_password": {"short1"}})
	if bad.Status != 422 || !strings.Contains(bad.Body, "短すぎます") {
		t.Errorf("weak password: %d %s", bad.Status, bad.Body)
	}
	good := c.post("/password", url.Values{"current_password": {demoPassword}, "new_password": {"kasumi-2027-sakura"}, "confirm_password": {"kasumi-2027-sakura"}})
	if good.Status != 303 {
		t.Fatalf("change: %d %s", good.Status, good.Body)
	}
	if p := c.get("/console?m=pwchanged"); p.Status != 200 || !strings.Contains(p.Body, "パスワードを変更しました") {
		t.Errorf("console after the change: %d", p.Status)
	}
}

// TestSessionEnded: a session the server ended sends the browser to the
// login page, which says so.
func TestSessionEnded(t *testing.T) {
	r := newRig(t)
	c := r.client("ja")
	c.login(r.op("本町 課長"))
	r.clk.Advance(11 * time.Minute) // past the policy's 10 minutes idle
	p := c.get("/console")
	if p.Status != 303 || p.Header.Get("Location") != "/login?m=ended" {
		t.Fatalf("idle session: %d %s", p.Status, p.Header.Get("Location"))
	}
	if p := c.get("/login?m=ended"); !strings.Contains(p.Body, "セッションは終了しました") {
		t.Errorf("login page does not say the session ended")
	}
	// An expired access token alone is renewed with the refresh cookie.
	c = r.client("ja")
	c.login(r.op("本町 課長"))
	r.clk.Advance(6 * time.Minute) // past the 5 minutes access token, within idle
	if p := c.get("/console"); p.Status != 200 {
		t.Errorf("renewal: %d %s", p.Status, p.Header.Get("Location"))
	}
}

// TestPasswordOperatorsOnly: the demonstration admits password logins for
// its own operators only; an operator issued afterwards needs a card.
func TestPasswordOperatorsOnly(t *testing.T) {
	r := newRig(t)
	chief := r.client("ja")
	chief.login(r.op("本町 課長"))
	p := chief.post("/console/operators", url.Values{"staff_number": {"2100"}, "name": {"新人 四郎"}, "site_id": {"honcho"}, "employment_type": {"regular"}})
	if p.Status != 303 {
		t.Fatalf("issue: %d %s", p.Status, p.Body)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(p.Header.Get("Location"), "/console/operators/"), "?m=done")
	if p := chief.post("/console/operators/"+id+"/grant", url.Values{"role_id": {"counter_clerk"}, "site_id": {"honcho"}, "reason": {"配属"}}); p.Status != 303 {
		t.Fatalf("grant: %d %s", p.Status, p.Body)
	}
	temp := chief.post("/console/operators/"+id+"/reset-password", nil)
	m := regexp.MustCompile(`<p class="code"[^>]*>([^<]+)</p>`).FindStringSubmatch(temp.Body)
	if m == nil {
		t.Fatalf("no temporary password shown: %s", temp.Body)
	}
	c := r.client("ja")
	if p := c.post("/login", url.Values{"terminal_id": {"honcho-cs01"}, "operator_id": {id}, "password": {m[1]}}); p.Status != 401 || !strings.Contains(p.Body, "ログインできませんでした") {
		t.Errorf("password login of an operator the policy does not name: %d", p.Status)
	}
	if strings.Contains(temp.Body, m[1]) && strings.Contains(chief.get("/console/operators/"+id).Body, m[1]) {
		t.Errorf("the temporary password is shown again")
	}
}

// TestPasswordExpiringSoon: a login within 14 days of the password's end
// says how many days are left.
func TestPasswordExpiringSoon(t *testing.T) {
	r := newRig(t)
	o := r.op("窓口 太郎")
	expires := r.clk.Now().AddDate(0, 3, 0)
	r.clk.Set(expires.Add(-10 * 24 * time.Hour))
	c := r.client("ja")
	p := c.post("/login", url.Values{"terminal_id": {string(o.Terminal)}, "operator_id": {string(o.ID)}, "password": {demoPassword}})
	if p.Status != 303 || p.Header.Get("Location") != "/console?pwdays=10" {
		t.Fatalf("login: %d %s", p.Status, p.Header.Get("Location"))
	}
	if home := c.get("/console?pwdays=10"); !strings.Contains(home.Body, "パスワードの有効期限まであと 10 日です") {
		t.Errorf("no expiry notice")
	}
}

// TestMalformedPolicyDocument: a policy document that is not JSON is the
// editor's mistake, said as such (400), whether previewed or confirmed.
func TestMalformedPolicyDocument(t *testing.T) {
	r := newRig(t)
	admin := r.client("ja")
	admin.login(r.op("管理 花子"))
	for _, confirm := range []string{"", "yes"} {
		p := admin.post("/admin/policy", url.Values{"document": {`{"login_methods":`}, "confirm": {confirm}})
		if p.Status != 400 {
			t.Errorf("confirm=%q: status %d, want 400: %s", confirm, p.Status, p.Body)
		}
	}
}
