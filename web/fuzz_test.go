package web_test

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzScriptEndpoints sends any body to the endpoints the pages' script
// calls: none may fail with a 500 or echo a token.
func FuzzScriptEndpoints(f *testing.F) {
	for _, s := range []string{`{}`, `{"operator_id":"OP-1"}`, `{"login_id":"x","credential":{}}`, `{"enrollment_code":"AAAA-BBBB"}`,
		`{"enrollment_id":"x","credential":{"id":"AA","response":{}}}`, `[`, `null`, "\x00", `{"credential":"` + strings.Repeat("A", 5000) + `"}`} {
		for i := range 4 {
			f.Add(i, s)
		}
	}
	r := newRig(f)
	c := r.client("ja")
	token := c.csrf()
	paths := []string{"/login/card/begin", "/login/card/finish", "/enroll/begin", "/enroll/finish"}
	f.Fuzz(func(t *testing.T, which int, body string) {
		path := paths[(which%len(paths)+len(paths))%len(paths)]
		req, _ := http.NewRequest("POST", r.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", token)
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 500 && resp.StatusCode != 503 {
			t.Errorf("%s %q: %d", path, body, resp.StatusCode)
		}
	})
}
