package httpapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/servertest"
)

func TestZZLoop(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	g := newGate(t, s)
	op := string(s.Boot.OperatorID)
	setPolicy(g, func(p map[string]any) {
		l := section(p, "lockout")
		l["threshold"], l["window_s"], l["duration_s"] = 100, 1, 1
	})
	card := authntest.NewCard(t)
	enrollWithCode(g, card, s.Boot.EnrollmentCode)
	start := time.Now()
	for i := range 4000 {
		s.Clock.Advance(2 * time.Second)
		opts := fuzzPostJSON(t, s, "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op}, 200)
		var b struct{ LoginID string `json:"login_id"` }
		json.Unmarshal(opts, &b)
		real := card.Get(opts, servertest.Origin, card.UserHandle())
		posted := []byte(`{}`)
		if i%2 == 0 { posted = real }
		st, body := fuzzPost(t, s, "/v1/login/card/finish", "", finishBody("login_id", b.LoginID, posted))
		if i%250 == 0 {
			t.Logf("%d: %v status %d %.80s", i, time.Since(start), st, body)
			start = time.Now()
		}
	}
}
