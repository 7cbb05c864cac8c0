package web_test

import (
	"net/http"
	"testing"
)

// BenchmarkOperatorsPage measures the section chief's operator list, which
// makes three in-process API calls (me, permissions, operators) and
// renders; its baseline is the one API call the page is built around, over
// the same HTTP server.
func BenchmarkOperatorsPage(b *testing.B) {
	r := newRig(b)
	c := r.client("ja")
	c.login(r.op("本町 課長"))
	var tok string
	for _, ck := range c.http.Jar.Cookies(mustURL(r.URL)) {
		if ck.Name == "opgate_at" {
			tok = ck.Value
		}
	}
	b.Run("page", func(b *testing.B) {
		for b.Loop() {
			if p := c.get("/console/operators?site_id=honcho"); p.Status != 200 {
				b.Fatal(p.Status)
			}
		}
	})
	b.Run("api-baseline", func(b *testing.B) {
		for b.Loop() {
			req, _ := http.NewRequest("GET", r.URL+"/v1/operators?site_id=honcho", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	})
}
