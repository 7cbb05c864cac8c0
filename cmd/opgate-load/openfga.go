package main

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"
)

// openFGARBAC is opgate's grants in OpenFGA's terms, RBAC with sites as
// domains and nothing more: an operator is an assignee of a role at a site
// (one object per role and site, as a grant is), and a site gives each
// permission to the assignees of the roles that carry it there. It leaves
// out conditions an opgate decision evaluates, so it is the easier
// question.
const openFGARBAC = `{"schema_version":"1.1","type_definitions":[
 {"type":"user"},
 {"type":"site_role","relations":{"assignee":{"this":{}}},
  "metadata":{"relations":{"assignee":{"directly_related_user_types":[{"type":"user"}]}}}},
 {"type":"site","relations":{"resident_read":{"this":{}},"resident_update_restricted":{"this":{}},"resident_bulk_export":{"this":{}}},
  "metadata":{"relations":{
   "resident_read":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "resident_update_restricted":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "resident_bulk_export":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]}}}}]}`

// openFGAEquivalent asks what an opgate decision asks, written as
// OpenFGA's documentation writes each part:
//   - a grant is a conditional tuple (live_grant): it counts while the
//     request's current_time is before its valid_until, and only from a
//     terminal at the grant's site (the request's terminal_site);
//   - the operator must be active: an intersection with the "active"
//     relation of a registry object the site points to (tuple to userset);
//   - a restricted record needs resident.read_restricted as well as the
//     action: an intersection of the two grants;
//   - bulk export needs its own grant (OpenFGA has no single-use
//     approval, so this side asks less than opgate does).
const openFGAEquivalent = `{"schema_version":"1.1","type_definitions":[
 {"type":"user"},
 {"type":"registry","relations":{"active":{"this":{}}},
  "metadata":{"relations":{"active":{"directly_related_user_types":[{"type":"user"}]}}}},
 {"type":"site_role","relations":{"assignee":{"this":{}}},
  "metadata":{"relations":{"assignee":{"directly_related_user_types":[{"type":"user","condition":"live_grant"}]}}}},
 {"type":"site","relations":{
   "registry":{"this":{}},
   "read_granted":{"this":{}},
   "update_granted":{"this":{}},
   "read_restricted_granted":{"this":{}},
   "bulk_export_granted":{"this":{}},
   "resident_read":{"intersection":{"child":[{"computedUserset":{"relation":"read_granted"}},
     {"tupleToUserset":{"tupleset":{"relation":"registry"},"computedUserset":{"relation":"active"}}}]}},
   "resident_update_restricted":{"intersection":{"child":[{"computedUserset":{"relation":"update_granted"}},
     {"computedUserset":{"relation":"read_restricted_granted"}},
     {"tupleToUserset":{"tupleset":{"relation":"registry"},"computedUserset":{"relation":"active"}}}]}},
   "resident_bulk_export":{"intersection":{"child":[{"computedUserset":{"relation":"bulk_export_granted"}},
     {"tupleToUserset":{"tupleset":{"relation":"registry"},"computedUserset":{"relation":"active"}}}]}}},
  "metadata":{"relations":{
   "registry":{"directly_related_user_types":[{"type":"registry"}]},
   "read_granted":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "update_granted":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "read_restricted_granted":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]},
   "bulk_export_granted":{"directly_related_user_types":[{"type":"site_role","relation":"assignee"}]}}}}],
 "conditions":{"live_grant":{"name":"live_grant",
  "expression":"current_time < valid_until && terminal_site == site",
  "parameters":{"current_time":{"type_name":"TYPE_NAME_TIMESTAMP"},"valid_until":{"type_name":"TYPE_NAME_TIMESTAMP"},
   "terminal_site":{"type_name":"TYPE_NAME_STRING"},"site":{"type_name":"TYPE_NAME_STRING"}}}}}`

type fgaTuple struct {
	User      string        `json:"user"`
	Relation  string        `json:"relation"`
	Object    string        `json:"object"`
	Condition *fgaCondition `json:"condition,omitempty"`
}

type fgaCondition struct {
	Name    string         `json:"name"`
	Context map[string]any `json:"context"`
}

// openFGARun loads OpenFGA (a server at base) with one of the models
// above and the same operators and grants as the opgate run, then asks its
// check endpoint the same questions as checkBodies, with the same
// clients, for the same time: a peer's decision over HTTP, without a
// durable record of each decision.
func openFGARun(base string, equivalent bool, operators []string, workers int, d time.Duration) ([]time.Duration, int64, error) {
	c := &client{base: base, http: newHTTPClient(workers)}
	b, err := c.must(201, "POST", "/stores", "", map[string]any{"name": "opgate-load"})
	if err != nil {
		return nil, 0, fmt.Errorf("openfga: %w", err)
	}
	var st struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &st)
	model := openFGARBAC
	if equivalent {
		model = openFGAEquivalent
	}
	if b, err = c.must(201, "POST", "/stores/"+st.ID+"/authorization-models", "", json.RawMessage(model)); err != nil {
		return nil, 0, fmt.Errorf("openfga model: %w", err)
	}
	var m struct {
		ID string `json:"authorization_model_id"`
	}
	_ = json.Unmarshal(b, &m)
	write := func(ts []fgaTuple) error {
		_, err := c.must(200, "POST", "/stores/"+st.ID+"/write", "", map[string]any{"authorization_model_id": m.ID, "writes": map[string]any{"tuple_keys": ts}})
		return err
	}
	// counter_clerk carries resident.read and resident.update, not
	// read_restricted or bulk_export: as in opgate's seeded roles.
	roles := []fgaTuple{
		{"site_role:counter_clerk@honcho#assignee", "resident_read", "site:honcho", nil},
	}
	if equivalent {
		roles = []fgaTuple{
			{"site_role:counter_clerk@honcho#assignee", "read_granted", "site:honcho", nil},
			{"site_role:counter_clerk@honcho#assignee", "update_granted", "site:honcho", nil},
			{"registry:opgate", "registry", "site:honcho", nil},
			{"registry:opgate", "registry", "site:kita", nil},
		}
	}
	if err := write(roles); err != nil {
		return nil, 0, fmt.Errorf("openfga roles: %w", err)
	}
	for i := 0; i < len(operators); i += 50 {
		var ts []fgaTuple
		for _, op := range operators[i:min(i+50, len(operators))] {
			grant := fgaTuple{"user:" + op, "assignee", "site_role:counter_clerk@honcho", nil}
			if equivalent {
				grant.Condition = &fgaCondition{"live_grant", map[string]any{"valid_until": grantUntil.Format(time.RFC3339), "site": "honcho"}}
				ts = append(ts, fgaTuple{"user:" + op, "active", "registry:opgate", nil})
			}
			ts = append(ts, grant)
		}
		if err := write(ts); err != nil {
			return nil, 0, fmt.Errorf("openfga grants: %w", err)
		}
	}
	// The same mix as checkBodies: 16 reads at the own site (allowed), a
	// restricted record's update and a bulk export there (refused), two
	// reads at another site (refused).
	var questions []fgaTuple
	for i := range 20 {
		rel, site := "resident_read", "honcho"
		switch {
		case i >= 18:
			site = "kita"
		case i == 17:
			rel = "resident_bulk_export"
		case i == 16:
			rel = "resident_update_restricted"
		}
		questions = append(questions, fgaTuple{"", rel, "site:" + site, nil})
	}
	var next atomic.Int64
	var allowed atomic.Int64
	lat, fails, err := timed(workers, d, func() (func() error, error) {
		return func() error {
			i := int(next.Add(1))
			q := questions[i%len(questions)]
			q.User = "user:" + operators[i%len(operators)]
			req := map[string]any{"authorization_model_id": m.ID, "tuple_key": q}
			if equivalent {
				req["context"] = map[string]any{"current_time": time.Now().UTC().Format(time.RFC3339Nano), "terminal_site": "honcho"}
			}
			out, err := c.must(200, "POST", "/stores/"+st.ID+"/check", "", req)
			var res struct {
				Allowed bool `json:"allowed"`
			}
			if err == nil && json.Unmarshal(out, &res) == nil && res.Allowed {
				allowed.Add(1)
			}
			return err
		}, nil
	})
	// A model that answers differently from opgate's decisions would make
	// the ratio meaningless: say so.
	if want, got := len(lat)*16/20, int(allowed.Load()); err == nil && (got < want-want/100 || got > want+want/100) {
		fmt.Printf("openfga allowed %d of %d (expected about 16 in 20)\n", allowed.Load(), len(lat))
	}
	return lat, fails, err
}
