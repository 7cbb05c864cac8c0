package main

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"
)

// openFGAModel is the decision model of opgate in OpenFGA's terms, RBAC
// with sites as domains: an operator is an assignee of a role at a site
// (one object per role and site, as a grant is), and a site gives each
// permission to the assignees of the roles that carry it there.
const openFGAModel = `{"schema_version":"1.1","type_definitions":[
 {"type":"user"},
 {"type":"site_role","relations":{"assignee":{"this":{}}},
  "metadata":{"relations":{"assignee":{"directly_related_user_types":[{"type":"user"}]}}}},
 {"type":"site","relations":{"resident_read":{"this":{}},"resident_update":{"this":{}}},
  "metadata":{"relations":{
   "resident_read":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "resident_update":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]}}}}]}`

// openFGARun loads OpenFGA (a server at base) with the same operators and
// grants as the opgate run, then asks its check endpoint the same kind of
// questions, with the same clients, for the same time: a peer's decision
// over HTTP, without a durable record of each decision.
func openFGARun(base string, operators []string, workers int, d time.Duration) ([]time.Duration, int64, error) {
	c := &client{base: base, http: newHTTPClient(workers)}
	b, err := c.must(201, "POST", "/stores", "", map[string]any{"name": "opgate-load"})
	if err != nil {
		return nil, 0, fmt.Errorf("openfga: %w", err)
	}
	var st struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &st)
	if b, err = c.must(201, "POST", "/stores/"+st.ID+"/authorization-models", "", json.RawMessage(openFGAModel)); err != nil {
		return nil, 0, fmt.Errorf("openfga model: %w", err)
	}
	var m struct {
		ID string `json:"authorization_model_id"`
	}
	_ = json.Unmarshal(b, &m)
	type tuple struct {
		User     string `json:"user"`
		Relation string `json:"relation"`
		Object   string `json:"object"`
	}
	write := func(ts []tuple) error {
		_, err := c.must(200, "POST", "/stores/"+st.ID+"/write", "", map[string]any{"authorization_model_id": m.ID, "writes": map[string]any{"tuple_keys": ts}})
		return err
	}
	if err := write([]tuple{
		{"site_role:counter_clerk@honcho#assignee", "resident_read", "site:honcho"},
		{"site_role:counter_clerk@honcho#assignee", "resident_update", "site:honcho"},
	}); err != nil {
		return nil, 0, fmt.Errorf("openfga roles: %w", err)
	}
	for i := 0; i < len(operators); i += 100 {
		var ts []tuple
		for _, op := range operators[i:min(i+100, len(operators))] {
			ts = append(ts, tuple{"user:" + op, "assignee", "site_role:counter_clerk@honcho"})
		}
		if err := write(ts); err != nil {
			return nil, 0, fmt.Errorf("openfga grants: %w", err)
		}
	}
	// The same mix as checkBodies: mostly allowed reads at the own site,
	// some refusals.
	var questions []tuple
	for i := range 20 {
		rel, site := "resident_read", "honcho"
		switch {
		case i >= 18:
			site = "kita"
		case i >= 16:
			rel = "resident_update"
		}
		questions = append(questions, tuple{"", rel, "site:" + site})
	}
	var next atomic.Int64
	lat, fails, err := timed(workers, d, func() (func() error, error) {
		return func() error {
			i := int(next.Add(1))
			q := questions[i%len(questions)]
			q.User = "user:" + operators[i%len(operators)]
			_, err := c.must(200, "POST", "/stores/"+st.ID+"/check", "", map[string]any{"authorization_model_id": m.ID, "tuple_key": q})
			return err
		}, nil
	})
	return lat, fails, err
}
