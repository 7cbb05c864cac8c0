package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/opgate/opgate/internal/demo"
	"github.com/opgate/opgate/internal/testenv"
)

// The browser tests drive Debian's headless Chromium through the DevTools
// protocol. One browser serves every test of the binary; each test gets
// its own browser context (its own cookies) and its own server.

var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
	}
	os.Exit(code)
}

func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// tab opens a fresh browser context speaking lang.
func tab(t *testing.T, lang string) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if testenv.Required() {
			t.Fatal("chromium is required (OPGATE_TEST_REQUIRE_SERVICES=1) but not installed")
		}
		t.Skip("chromium is not installed")
	}
	browser.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
			chromedp.Flag("disable-dev-shm-usage", true))
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(alloc)
		browser.ctx, browser.cancel = ctx, func() { cancel(); cancelAlloc() }
		browser.err = chromedp.Do(ctx)
	})
	if browser.err != nil {
		t.Fatalf("start chromium: %v", browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The counter terminal's screen: 1280x800.
	if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1280, Height: 800, DeviceScaleFactor: 1}); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("network: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": lang}}); err != nil {
		t.Fatalf("headers: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

func run(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		loc, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Location())
		body, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("browser: %v (at %s: %s)", err, loc, body)
	}
}

// void drops an action's value.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// card adds Chromium's virtual FIDO2 authenticator: CTAP2, resident keys
// and user verification (the PIN), like an operator's IC card.
func card(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("webauthn: %v", err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportUsb, HasResidentKey: true,
		HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		t.Fatalf("virtual authenticator: %v", err)
	}
}

// screenshot keeps a PNG of the viewport (1280x800) as a test artifact in
// $OPGATE_TEST_ARTIFACTS, else in the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("OPGATE_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitJS waits until the expression is true, evaluating it again while
// the page navigates (an evaluation in a page going away fails).
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		deadline := time.Now().Add(20 * time.Second)
		var last error
		for time.Now().Before(deadline) {
			ok, err := chromedp.Evaluate[bool](expr)(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			last = err
			select {
			case <-ctx.Done():
				return chromedp.Void{}, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		return chromedp.Void{}, fmt.Errorf("timed out waiting for %s (%v)", expr, last)
	}
}

// reloaded waits for the page that replaces one marked window.pending.
var reloaded = waitJS(`window.pending === undefined && document.readyState === "complete"`)

// waitText waits until the element's text contains want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return waitJS(fmt.Sprintf(`(function(){var e=document.querySelector(%q);return !!e && e.textContent.includes(%q);})()`, sel, want))
}

// waitPath waits until the page's path (and query) starts with prefix.
func waitPath(prefix string) chromedp.Action[chromedp.Void] {
	return waitJS(fmt.Sprintf(`(location.pathname+location.search).startsWith(%q) && document.readyState === "complete"`, prefix))
}

// browserLogin logs in with the password form at the operator's terminal
// and waits for the page then; with then empty, for the refusal.
func browserLogin(t *testing.T, ctx context.Context, r *rig, o demo.Operator, password, then string) {
	t.Helper()
	wait := waitPath(then)
	if then == "" {
		wait = waitJS(`document.querySelector("main .error") !== null && document.readyState === "complete"`)
	}
	run(t, ctx,
		chromedp.Navigate(r.URL+"/login"),
		chromedp.Click(chromedp.CSS("details.password-login summary")),
		void(chromedp.Evaluate[bool](fmt.Sprintf(`(function(){var t=document.getElementById("pw-terminal"); if(t) t.value=%q; return true;})()`, o.Terminal))),
		chromedp.SetValue(chromedp.ID("pw-operator"), string(o.ID)),
		chromedp.SendKeys(chromedp.ID("pw-password"), password),
		chromedp.Submit(chromedp.ID("pw-password")),
		wait,
	)
}

// TestBrowserCardEnrollAndLogin: a chief starts an enrollment; the
// operator enters the code and touches the card; then logs in with the
// card alone (a discoverable credential, user verified).
func TestBrowserCardEnrollAndLogin(t *testing.T) {
	r := newRig(t)
	clerk := r.op("窓口 太郎")
	chief := r.client("ja")
	chief.login(r.op("本町 課長"))
	p := chief.post("/console/operators/"+string(clerk.ID)+"/enroll", url.Values{"card_serial": {"JPKI-0001"}, "label": {"職員カード"}})
	m := regexp.MustCompile(`<p class="code"[^>]*>([^<]+)</p>`).FindStringSubmatch(p.Body)
	if p.Status != 200 || m == nil {
		t.Fatalf("start enrollment: %d %s", p.Status, p.Body)
	}
	ctx := tab(t, "ja")
	card(t, ctx)
	run(t, ctx,
		chromedp.Navigate(r.URL+"/enroll"),
		chromedp.SendKeys(chromedp.ID("enroll-code"), m[1]),
		chromedp.Click(chromedp.CSS("#enroll-form button")),
		waitText("#enroll-status", "JPKI-0001 を登録しました"),
		chromedp.Navigate(r.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("card-login")),
	)
	screenshot(t, ctx, "login-ja")
	run(t, ctx,
		chromedp.SendKeys(chromedp.ID("card-terminal"), string(clerk.Terminal)),
		chromedp.Click(chromedp.CSS("#card-login button")),
		waitPath("/console"),
		waitText("header .who", clerk.Name),
	)
	screenshot(t, ctx, "home-ja")
	// The session came from the card: the audit log says so.
	evs := r.apiGet(t, "/v1/audit/events?type=login.succeeded&operator_id="+string(clerk.ID))
	if !strings.Contains(evs, "hwk") && !strings.Contains(evs, string(clerk.ID)) {
		t.Errorf("no card login in the history: %s", evs)
	}
}

// TestBrowserLockout: repeated wrong passwords end in the lock message
// with the time it ends.
func TestBrowserLockout(t *testing.T) {
	r := newRig(t)
	o := r.op("北 三郎")
	ctx := tab(t, "ja")
	for i := 0; i < 6; i++ {
		browserLogin(t, ctx, r, o, "wrong-password-9", "")
	}
	until := r.clk.Now().Add(30 * time.Minute).Local().Format("2006-01-02 15:04")
	run(t, ctx, waitText("main .error", "ロックされています"), waitText("main .error", until))
	screenshot(t, ctx, "lockout-ja")
}

// TestBrowserExpiredPassword: an expired password leads to the forced
// change page; after the change the console opens.
func TestBrowserExpiredPassword(t *testing.T) {
	r := newRig(t)
	r.clk.Advance(100 * 24 * time.Hour)
	o := r.op("窓口 次子")
	ctx := tab(t, "ja")
	browserLogin(t, ctx, r, o, demo.Password, "/password")
	screenshot(t, ctx, "password-ja")
	run(t, ctx,
		chromedp.SendKeys(chromedp.ID("current-password"), demo.Password),
		chromedp.SendKeys(chromedp.ID("new-password"), "hinode-2027-kaze"),
		chromedp.SendKeys(chromedp.ID("confirm-password"), "hinode-2027-kaze"),
		chromedp.Submit(chromedp.ID("confirm-password")),
		waitPath("/console"),
		waitText("main .notice", "パスワードを変更しました"),
	)
}

// TestBrowserGrantApproval: a chief grants a high-risk role, which waits
// for approval; another chief approves it.
func TestBrowserGrantApproval(t *testing.T) {
	r := newRig(t)
	createRestrictedRole(t, r)
	clerk := r.op("窓口 太郎")
	c1 := tab(t, "ja")
	browserLogin(t, c1, r, r.op("本町 課長"), demo.Password, "/console")
	run(t, c1, chromedp.Navigate(r.URL+"/console/operators?site_id=honcho"), chromedp.WaitVisible(chromedp.CSS("table")))
	screenshot(t, c1, "operators-ja")
	run(t, c1,
		chromedp.Navigate(r.URL+"/console/operators/"+string(clerk.ID)),
		chromedp.SetValue(chromedp.ID("g-role"), "restricted_reader"),
		chromedp.SendKeys(chromedp.ID("g-reason"), "支援措置の照会事務"),
		chromedp.Submit(chromedp.ID("g-reason")),
		waitText("main .notice", "処理しました"),
		waitText("#grants-title + table", "承認待ち"),
	)
	screenshot(t, c1, "operator-ja")
	c2 := tab(t, "en-US,en;q=0.9")
	browserLogin(t, c2, r, r.op("本町 課長補佐"), demo.Password, "/console")
	screenshot(t, c2, "home-en")
	run(t, c2,
		chromedp.Navigate(r.URL+"/console/approvals"),
		chromedp.SendKeys(chromedp.CSS("form[action$='/approve'] input[name=reason]"), "checked with the section"),
		chromedp.Submit(chromedp.CSS("form[action$='/approve'] input[name=reason]")),
		waitText("main .notice", "Done."),
		waitText("main table", "No grant awaits approval."),
		chromedp.Navigate(r.URL+"/console/operators?site_id=honcho"),
		chromedp.WaitVisible(chromedp.CSS("table")),
	)
	screenshot(t, c2, "operators-en")
	run(t, c2, chromedp.Navigate(r.URL+"/console/operators/"+string(clerk.ID)), waitText("#grants-title + table", "restricted_reader"))
	grants, err := chromedp.Run(c2, chromedp.Text(chromedp.CSS("#grants-title + table")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(grants, "Active") || strings.Contains(grants, "Awaiting approval") {
		t.Errorf("grants after approval: %s", grants)
	}
	// The English login page, for the screenshots.
	c3 := tab(t, "en")
	run(t, c3, chromedp.Navigate(r.URL+"/login"), chromedp.WaitVisible(chromedp.ID("card-login")))
	screenshot(t, c3, "login-en")
}

// TestBrowserIdleLock: the page locks the screen at the policy's idle
// time and the session ends, saying why.
func TestBrowserIdleLock(t *testing.T) {
	r := newRig(t)
	pol := r.apiGet(t, "/v1/policy")
	pol = regexp.MustCompile(`"idle_timeout_s":\d+`).ReplaceAllString(pol, `"idle_timeout_s":3`)
	r.apiDo(t, "PUT", "/v1/policy", pol, 200)
	ctx := tab(t, "ja")
	browserLogin(t, ctx, r, r.op("窓口 太郎"), demo.Password, "/console")
	run(t, ctx, waitPath("/login?m=idle"), waitText("main .notice", "画面をロックしました"))
}

// apiGet and apiDo call the JSON API as the demonstration administrator.
func (r *rig) apiGet(t *testing.T, path string) string { return r.apiDo(t, "GET", path, "", 200) }

func (r *rig) apiDo(t *testing.T, method, path, body string, want int) string {
	t.Helper()
	c := r.client("ja")
	c.login(r.op("管理 花子"))
	var tok string
	for _, ck := range c.http.Jar.Cookies(mustURL(r.URL)) {
		if ck.Name == "opgate_at" {
			tok = ck.Value
		}
	}
	req, _ := http.NewRequest(method, r.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, _ = fmt.Fprint(&sb, "")
	b := make([]byte, 1<<20)
	n, _ := resp.Body.Read(b)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d: %s", method, path, resp.StatusCode, b[:n])
	}
	return string(b[:n])
}

// TestBrowserReview: a chief starts a review campaign of the site, keeps
// or revokes each grant but their own, closes it and downloads its CSV.
func TestBrowserReview(t *testing.T) {
	r := newRig(t)
	ctx := tab(t, "ja")
	browserLogin(t, ctx, r, r.op("本町 課長"), demo.Password, "/console")
	run(t, ctx,
		chromedp.Navigate(r.URL+"/console/reviews"),
		chromedp.SetValue(chromedp.ID("rv-due"), "2027-04-30"),
		chromedp.Submit(chromedp.ID("rv-due")),
		waitPath("/console/reviews/"),
		waitText("main table", "counter_clerk"),
	)
	screenshot(t, ctx, "review-ja")
	viewer := string(r.op("窓口 次子").ID)
	for i := 0; i < 10; i++ {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("form[action*='/items/']").length`))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		// The part-time viewer's grant is revoked, every other one kept.
		run(t, ctx, void(chromedp.Evaluate[bool](fmt.Sprintf(`(function(){
			var f = document.querySelector("form[action*='/items/']");
			var row = f.closest("tr");
			f.reason.value = "定期棚卸し";
			var revoke = row.textContent.includes(%q);
			window.pending = true;
			f.querySelector("button[value=" + (revoke ? "revoke" : "keep") + "]").click();
			return true;
		})()`, viewer))), reloaded)
	}
	run(t, ctx, void(chromedp.Evaluate[bool](`window.pending = true`)), chromedp.Click(chromedp.CSS("form[action$='/close'] button")), reloaded,
		waitJS(`document.querySelector("form[action$='/close']") === null`))
	screenshot(t, ctx, "review-closed-ja")
	csv, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(location.pathname + "/download?format=csv").then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(csv, viewer) || !strings.Contains(csv, "revoke") || !strings.Contains(csv, "keep") {
		t.Errorf("review CSV:\n%s", csv)
	}
	// The revocation applied at once.
	if gs := r.apiGet(t, "/v1/grants?status=active&operator_id="+viewer); strings.Contains(gs, "counter_viewer") {
		t.Errorf("the revoked grant is still active: %s", gs)
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
	if err != nil {
		t.Fatal(err)
	}
	en := tab(t, "en")
	browserLogin(t, en, r, r.op("本町 課長補佐"), demo.Password, "/console")
	run(t, en, chromedp.Navigate(r.URL+page), waitText("main table", "counter_clerk"))
	screenshot(t, en, "review-en")
}

// TestBrowserAdministration: the policy change is shown field by field
// before it is saved; the audit log shows it and the chain's state.
func TestBrowserAdministration(t *testing.T) {
	r := newRig(t)
	ctx := tab(t, "ja")
	browserLogin(t, ctx, r, r.op("管理 花子"), demo.Password, "/console")
	run(t, ctx,
		chromedp.Navigate(r.URL+"/admin/policy"),
		void(chromedp.Evaluate[bool](`(function(){var a=document.getElementById("policy-doc"); a.value=a.value.replace(/"threshold": \d+/, '"threshold": 4'); return true;})()`)),
		chromedp.Submit(chromedp.ID("policy-doc")),
		waitText("main table", "lockout.threshold"),
	)
	screenshot(t, ctx, "policy-preview-ja")
	run(t, ctx,
		void(chromedp.Evaluate[bool](`window.pending = true`)),
		chromedp.Click(chromedp.CSS("form input[name=confirm] + input + button")),
		reloaded, waitText("main .notice", "処理しました"),
	)
	if pol := r.apiGet(t, "/v1/policy"); !strings.Contains(pol, `"threshold":4`) {
		t.Errorf("policy not saved: %s", pol)
	}
	run(t, ctx, chromedp.Navigate(r.URL+"/admin/audit?type=policy.changed"), waitText("main p.ok", "正常"), waitText("main table", "policy.changed"))
	screenshot(t, ctx, "audit-ja")
	run(t, ctx, chromedp.Navigate(r.URL+"/admin/roles"), waitText("main table", "resident.read_restricted"))
	screenshot(t, ctx, "roles-ja")
}

// TestBrowserCardAndPassword: where the policy asks for the card and the
// password, the login page asks for the password before the card is
// touched, and the login needs both.
func TestBrowserCardAndPassword(t *testing.T) {
	r := newRig(t)
	clerk := r.op("窓口 太郎")
	chief := r.client("ja")
	chief.login(r.op("本町 課長"))
	p := chief.post("/console/operators/"+string(clerk.ID)+"/enroll", url.Values{"card_serial": {"JPKI-0002"}})
	m := regexp.MustCompile(`<p class="code"[^>]*>([^<]+)</p>`).FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("start enrollment: %d", p.Status)
	}
	pol := r.apiGet(t, "/v1/policy")
	pol = regexp.MustCompile(`"login_methods":\[[^\]]*\]`).ReplaceAllString(pol, `"login_methods":["card+password","password"]`)
	r.apiDo(t, "PUT", "/v1/policy", pol, 200)
	ctx := tab(t, "en")
	card(t, ctx)
	run(t, ctx,
		chromedp.Navigate(r.URL+"/enroll"),
		chromedp.SendKeys(chromedp.ID("enroll-code"), m[1]),
		chromedp.Click(chromedp.CSS("#enroll-form button")),
		waitText("#enroll-status", "JPKI-0002 is registered"),
		chromedp.Navigate(r.URL+"/login"),
		chromedp.SendKeys(chromedp.ID("card-terminal"), string(clerk.Terminal)),
		chromedp.Click(chromedp.CSS("#card-login button")),
		waitText("#card-status", "asks for both the card and the password"),
		waitJS(`!document.getElementById("card-password-row").hidden`),
	)
	screenshot(t, ctx, "login-password-en")
	run(t, ctx,
		chromedp.SendKeys(chromedp.ID("card-password"), demo.Password),
		chromedp.Click(chromedp.CSS("#card-login button")),
		waitPath("/console"),
		waitText("header .who", clerk.Name),
	)
}
