package httpapi_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// defaultPolicy is the document API.md gives, without its version.
const defaultPolicy = `{
  "login_methods": ["card"],
  "lockout": {"threshold": 5, "window_s": 900, "duration_s": 1800, "permanent_after": 3,
              "spray_distinct_operators": 20, "spray_window_s": 600},
  "password": {"min_length": 10, "require_letter": true, "require_digit": true,
               "max_age_s": 7776000, "history": 5, "denylist": true},
  "session": {"idle_timeout_s": 600, "absolute_timeout_s": 32400, "access_token_ttl_s": 300},
  "cards": {"allowed_aaguids": [], "allow_backup_eligible": false},
  "dormant_after_s": 7776000,
  "restricted_purpose_required": true,
  "retention_s": {"decisions": 220752000, "logins": 220752000, "other": 220752000},
  "office_hours": {"start": "08:30", "end": "17:15", "weekdays": [1, 2, 3, 4, 5], "utc_offset_s": 32400}
}`

func decodeDoc(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// withoutVersion returns the document and its version.
func withoutVersion(m map[string]any) (map[string]any, float64) {
	v, _ := m["version"].(float64)
	out := map[string]any{}
	for k, x := range m {
		if k != "version" {
			out[k] = x
		}
	}
	return out, v
}

// edit returns a copy of the default document with one section changed.
func edit(t testing.TB, section string, fields map[string]any) map[string]any {
	t.Helper()
	doc := decodeDoc(t, []byte(defaultPolicy))
	if fields == nil {
		delete(doc, section)
		return doc
	}
	sec := doc[section].(map[string]any)
	for k, v := range fields {
		sec[k] = v
	}
	// As it will come back: JSON numbers.
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return decodeDoc(t, b)
}

func TestPolicy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		get := func() (map[string]any, float64) {
			resp := r.must(t, 200, "GET", "/v1/policy", r.admin(t), nil)
			return withoutVersion(decodeDoc(t, resp.Body))
		}
		doc, v0 := get()
		if d := cmp.Diff(decodeDoc(t, []byte(defaultPolicy)), doc); d != "" {
			t.Errorf("default policy (-want +got):\n%s", d)
		}

		changed := edit(t, "lockout", map[string]any{"threshold": 3})
		changed["login_methods"] = []any{"card", "card+password"} // as JSON decodes it
		put, v1 := withoutVersion(decodeDoc(t, r.must(t, 200, "PUT", "/v1/policy", r.admin(t), changed).Body))
		if v1 != v0+1 {
			t.Errorf("version %v after %v", v1, v0)
		}
		if d := cmp.Diff(changed, put); d != "" {
			t.Errorf("PUT answer (-want +got):\n%s", d)
		}
		if got, v := get(); v != v1 || !cmp.Equal(changed, got) {
			t.Errorf("GET after PUT: version %v, diff %s", v, cmp.Diff(changed, got))
		}

		evs := itemsOf(r.must(t, 200, "GET", "/v1/audit/events?type=policy.changed", r.admin(t), nil).Map(t))
		if len(evs) != 1 {
			t.Fatalf("%d policy.changed events, want 1", len(evs))
		}
		e := evs[0]
		if e["actor_id"] != r.adminID() {
			t.Errorf("actor %v", e["actor_id"])
		}
		data := e["data"].(map[string]any)
		oldDoc, _ := withoutVersion(data["old"].(map[string]any))
		newDoc, _ := withoutVersion(data["new"].(map[string]any))
		if d := cmp.Diff(decodeDoc(t, []byte(defaultPolicy)), oldDoc); d != "" {
			t.Errorf("event's old document (-want +got):\n%s", d)
		}
		if d := cmp.Diff(changed, newDoc); d != "" {
			t.Errorf("event's new document (-want +got):\n%s", d)
		}

		// The whole document is replaced: a section left out is back to
		// its default, not kept from the previous version.
		replaced, v2 := withoutVersion(decodeDoc(t, r.must(t, 200, "PUT", "/v1/policy", r.admin(t), edit(t, "lockout", nil)).Body))
		if v2 != v1+1 {
			t.Errorf("version %v after %v", v2, v1)
		}
		if th := replaced["lockout"].(map[string]any)["threshold"]; th != float64(5) {
			t.Errorf("lockout.threshold %v after a PUT without lockout, want the default 5", th)
		}

		for _, c := range []struct {
			name  string
			body  any
			field string
		}{
			{"threshold 0", edit(t, "lockout", map[string]any{"threshold": 0}), "lockout.threshold"},
			{"negative window", edit(t, "lockout", map[string]any{"window_s": -1}), "lockout.window_s"},
			{"idle beyond absolute", edit(t, "session", map[string]any{"idle_timeout_s": 40000}), "session.idle_timeout_s"},
			{"token beyond absolute", edit(t, "session", map[string]any{"access_token_ttl_s": 40000, "absolute_timeout_s": 30000}), "session.access_token_ttl_s"},
			{"short passwords", edit(t, "password", map[string]any{"min_length": 4}), "password.min_length"},
			{"unknown field", with(decodeDoc(t, []byte(defaultPolicy)), "mfa", true), "mfa"},
			{"unknown nested field", edit(t, "lockout", map[string]any{"forever": true}), ""},
			{"wrong type", edit(t, "lockout", map[string]any{"threshold": "5"}), "lockout.threshold"},
			{"no login method", with(decodeDoc(t, []byte(defaultPolicy)), "login_methods", []string{}), "login_methods"},
			{"unknown login method", with(decodeDoc(t, []byte(defaultPolicy)), "login_methods", []string{"smile"}), "login_methods"},
			{"bad AAGUID", edit(t, "cards", map[string]any{"allowed_aaguids": []string{"nope"}}), "cards.allowed_aaguids"},
			{"null", "null", ""},
			{"array", "[]", ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := checkProblem(t, r.call(t, "PUT", "/v1/policy", r.admin(t), c.body), 400, "validation_failed")
				if len(p.Errors) == 0 {
					t.Errorf("no errors[]")
				}
				if c.field != "" && !slices.Contains(p.fields(), c.field) {
					t.Errorf("errors[] name %v, want %s", p.fields(), c.field)
				}
			})
		}
		if _, v := get(); v != v2 {
			t.Errorf("refused documents moved the version to %v", v)
		}

		clerkOp := r.issue(t, "honcho", "7001", nil)
		r.grant(t, clerkOp, "counter_clerk", "honcho", nil)
		clerk := r.token(t, clerkOp, "honcho", "admin-console")
		checkProblem(t, r.call(t, "PUT", "/v1/policy", clerk, decodeDoc(t, []byte(defaultPolicy))), 403, "forbidden")
		checkProblem(t, r.call(t, "PUT", "/v1/policy", clerk, "{"), 403, "forbidden")
		// Readers of the policy are those who manage or audit it.
		aud := r.issue(t, "honcho", "7002", nil)
		r.grant(t, aud, "auditor", "honcho", nil)
		r.must(t, 200, "GET", "/v1/policy", r.token(t, aud, "honcho", "admin-console"), nil)
		if _, v := get(); v != v2 {
			t.Errorf("refused callers moved the version to %v", v)
		}
		if n := len(itemsOf(r.must(t, 200, "GET", "/v1/audit/events?type=policy.changed", r.admin(t), nil).Map(t))); n != 2 {
			t.Errorf("%d policy.changed events, want 2", n)
		}
	})
}
