package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opgate/opgate/authn/authntest"
)

// checkBodies is the mix of questions a counter asks: mostly reads of
// records at the terminal's own site (allowed), and some refusals that
// walk further into the decision (a restricted record without the
// permission, a bulk export without an approval, another site's record).
func checkBodies() [][]byte {
	var out [][]byte
	add := func(n int, action, site string, restricted bool) {
		for i := range n {
			b, _ := json.Marshal(map[string]any{"action": action, "purpose": "窓口での本人確認",
				"resource": map[string]any{"type": "resident", "id": fmt.Sprintf("R-%06d", i), "site_id": site, "restricted": restricted}})
			out = append(out, b)
		}
	}
	add(16, "resident.read", "honcho", false)
	add(1, "resident.update", "honcho", true)
	add(1, "resident.bulk_export", "honcho", false)
	add(2, "resident.read", "kita", false)
	return out
}

// checkRun measures POST /v1/authz/check over HTTP, each decision recorded
// durably in the history before its answer, beside GET /v1/me with the
// same sessions and clients: the same HTTP, token and session checks
// without a decision or a write.
func checkRun(c *client, cards []*authntest.Card, workers int, d time.Duration, openfga string) error {
	tokens := make([]string, len(cards))
	operators := make([]string, len(cards))
	for i, card := range cards {
		l, err := loginToken(c, card)
		if err != nil {
			return err
		}
		tokens[i], operators[i] = l.AccessToken, l.OperatorID
	}
	bodies := checkBodies()
	var next atomic.Int64
	var allowed atomic.Int64
	fmt.Printf("deciding for %s with %d concurrent clients over %d sessions…\n", d, workers, len(tokens))
	lat, fails, _ := timed(workers, d, func() (func() error, error) {
		return func() error {
			i := int(next.Add(1))
			status, out, err := c.do("POST", "/v1/authz/check", tokens[i%len(tokens)], json.RawMessage(bodies[i%len(bodies)]))
			switch {
			case err != nil:
				return err
			case status != 200:
				return fmt.Errorf("check: %d %s", status, out)
			case strings.Contains(string(out), `"allowed":true`):
				allowed.Add(1)
			}
			return nil
		}, nil
	})
	fmt.Println(report("decision over HTTP, durably logged", lat, fails, d))
	fmt.Printf("allowed: %d of %d\n", allowed.Load(), len(lat))
	base, baseFails, _ := timed(workers, d, func() (func() error, error) {
		return func() error {
			i := int(next.Add(1))
			_, err := c.must(200, "GET", "/v1/me", tokens[i%len(tokens)], nil)
			return err
		}, nil
	})
	fmt.Println(report("baseline: GET /v1/me with the same sessions", base, baseFails, d))
	if len(base) > 0 && len(lat) > 0 {
		fmt.Printf("ratio of decisions to the baseline: %.2f\n", float64(len(lat))/float64(len(base)))
	}
	if openfga == "" {
		return nil
	}
	for _, equivalent := range []bool{false, true} {
		peer, peerFails, err := openFGARun(openfga, equivalent, operators, workers, d)
		if err != nil {
			return err
		}
		what := "RBAC with sites only, fewer conditions than opgate's"
		if equivalent {
			what = "an equivalent model: time-bound grants, terminal site, active operator, restricted records"
		}
		fmt.Println(report("OpenFGA check over HTTP ("+what+"; no decision record)", peer, peerFails, d))
		if len(peer) > 0 && len(lat) > 0 {
			fmt.Printf("ratio of opgate decisions to these OpenFGA checks: %.2f\n", float64(len(lat))/float64(len(peer)))
		}
	}
	return nil
}

type loggedIn struct {
	AccessToken string `json:"access_token"`
	OperatorID  string `json:"operator_id"`
}

// loginToken logs a card in.
func loginToken(c *client, card *authntest.Card) (loggedIn, error) {
	begin, err := c.must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console"})
	if err != nil {
		return loggedIn{}, err
	}
	var b struct {
		LoginID string `json:"login_id"`
	}
	if err := json.Unmarshal(begin, &b); err != nil {
		return loggedIn{}, err
	}
	out, err := c.must(200, "POST", "/v1/login/card/finish", "", map[string]any{"login_id": b.LoginID,
		"credential": json.RawMessage(card.Get(begin, origin, card.UserHandle()))})
	if err != nil {
		return loggedIn{}, err
	}
	var l loggedIn
	return l, json.Unmarshal(out, &l)
}
