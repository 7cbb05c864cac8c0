package httpapi_test

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/servertest"
)

// TestCardLockoutExactUnderConcurrency: forty bad card signatures at one
// operator, at once, on two replicas where the backend allows, are judged
// exactly threshold times; the rest are refused unjudged by the lock.
func TestCardLockoutExactUnderConcurrency(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			replicas := []*servertest.Server{s}
			if b.Postgres {
				replicas = append(replicas, servertest.Join(t, s.Shared(), s.Clock))
			}
			card := authntest.NewCard(t)
			enroll(t, s, card, s.Boot.EnrollmentCode)
			op := string(s.Boot.OperatorID)
			const n = 40
			type attempt struct {
				srv       *servertest.Server
				loginID   string
				assertion []byte
			}
			// Begin every ceremony first, then fire the finishes together.
			var attempts []attempt
			for i := range n {
				srv := replicas[i%len(replicas)]
				begin := srv.Must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op})
				var bg struct {
					LoginID string `json:"login_id"`
				}
				begin.JSON(t, &bg)
				card.SetFaults(authntest.FaultSignature)
				attempts = append(attempts, attempt{srv, bg.LoginID, card.Get(begin.Body, servertest.Origin, card.UserHandle())})
			}
			statuses := make([]int, n)
			var wg sync.WaitGroup
			for i, a := range attempts {
				wg.Go(func() {
					r := a.srv.Do("POST", "/v1/login/card/finish", "", map[string]any{"login_id": a.loginID, "credential": json.RawMessage(a.assertion)})
					statuses[i] = r.Status
				})
			}
			wg.Wait()
			count := map[int]int{}
			for _, st := range statuses {
				count[st]++
			}
			// Five judged failures (the default threshold): four answered
			// 401, the fifth 423 as it locks; every later one 423 unjudged.
			if count[401] != 4 || count[423] != n-4 || len(count) != 2 {
				t.Fatalf("answers %v, want 4×401 and %d×423", count, n-4)
			}
			evs := s.Must(200, "GET", "/v1/audit/events?operator_id="+op+"&type=login.failed&limit=1000", s.Admin, nil).Map(t)["items"].([]any)
			judged := 0
			for _, e := range evs {
				if d, _ := e.(map[string]any)["data"].(map[string]any); d != nil && d["counted"] != false {
					judged++
				}
			}
			if judged != 5 {
				t.Fatalf("%d judged failures recorded, want 5", judged)
			}
			locks := s.Must(200, "GET", "/v1/audit/events?operator_id="+op+"&type=account.locked", s.Admin, nil).Map(t)["items"].([]any)
			if len(locks) != 1 {
				t.Fatalf("%d account.locked events, want 1", len(locks))
			}
		})
	}
}
