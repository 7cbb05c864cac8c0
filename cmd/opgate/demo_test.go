package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestServeDemo: `serve --demo` ignores the configured store, prints the
// operators and their password, and serves the pages and the API with
// them.
func TestServeDemo(t *testing.T) {
	configured := filepath.Join(t.TempDir(), "real.db")
	p := startServe(t, "demo", map[string]string{"OPGATE_DATABASE_URL": "sqlite:" + configured}, "--demo")
	out := p.out.String()
	m := regexp.MustCompile(`(OP-[0-9A-Z]+)\s+security_admin\s+honcho\s+admin-console`).FindStringSubmatch(out)
	pw := regexp.MustCompile(`the password (\S+)\.`).FindStringSubmatch(out)
	if m == nil || pw == nil || !strings.Contains(out, "section_chief") || !strings.Contains(out, "auditor") || !strings.Contains(out, "counter_clerk") {
		t.Fatalf("demo output:\n%s", out)
	}
	if _, err := os.Stat(configured); !os.IsNotExist(err) {
		t.Errorf("the demonstration touched the configured store: %v", err)
	}
	c := newClient(t)
	var login struct {
		AccessToken string `json:"access_token"`
	}
	c.must(200, "POST", p.url+"/v1/login/password", "", map[string]string{"operator_id": m[1], "password": pw[1], "terminal_id": "admin-console"}, &login)
	resp, err := http.Get(p.url + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `lang="ja"`) {
		t.Errorf("login page: %d", resp.StatusCode)
	}
}
