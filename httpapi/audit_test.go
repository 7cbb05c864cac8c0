package httpapi_test

import (
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seqs lists the seq of each event.
func seqs(evs []map[string]any) []int64 {
	out := []int64{}
	for _, e := range evs {
		out = append(out, int64(e["seq"].(float64)))
	}
	return out
}

// walk reads every page of an event list, limit events at a time.
func (r *rig) walk(t testing.TB, query url.Values, limit int) []map[string]any {
	t.Helper()
	return r.walkList(t, "/v1/audit/events", r.admin(t), query, limit)
}

// walkList reads every page of a list, limit items at a time, as the
// holder of token.
func (r *rig) walkList(t testing.TB, path, token string, query url.Values, limit int) []map[string]any {
	t.Helper()
	var all []map[string]any
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", strconv.Itoa(limit))
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		m := r.must(t, 200, "GET", path+"?"+q.Encode(), token, nil).Map(t)
		items := itemsOf(m)
		if len(items) > limit {
			t.Fatalf("a page of %d items, limit %d", len(items), limit)
		}
		all = append(all, items...)
		next, _ := m["next_cursor"].(string)
		if next == "" {
			return all
		}
		if len(items) == 0 {
			t.Fatal("an empty page with a next cursor")
		}
		q.Set("cursor", next)
	}
}

func TestAuditEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		a := r.issue(t, "honcho", "8001", nil)
		r.grant(t, a, "counter_clerk", "honcho", nil)
		chief := r.issue(t, "honcho", "8002", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		r.Clock.Advance(time.Hour)
		t1 := r.Clock.Now()
		chiefTok := r.token(t, chief, "honcho", "admin-console")
		b := r.must(t, 201, "POST", "/v1/operators", chiefTok, map[string]any{"staff_number": "8003", "name": "x", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
		r.must(t, 200, "POST", "/v1/operators/"+a+"/suspend", r.admin(t), map[string]any{"reason": "休職"})
		r.Clock.Advance(time.Hour)
		t2 := r.Clock.Now()
		chiefTok = r.token(t, chief, "honcho", "admin-console")
		r.must(t, 200, "POST", "/v1/operators/"+a+"/reinstate", chiefTok, map[string]any{"reason": "復職"})

		all := r.walk(t, nil, 1000)
		if len(all) < 12 {
			t.Fatalf("only %d events", len(all))
		}
		got := seqs(all)
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("seqs not strictly ascending: %v", got)
		}

		keep := func(pred func(map[string]any) bool) []int64 {
			var out []map[string]any
			for _, e := range all {
				if pred(e) {
					out = append(out, e)
				}
			}
			return seqs(out)
		}
		at := func(e map[string]any) time.Time {
			tm, err := time.Parse(time.RFC3339Nano, e["at"].(string))
			if err != nil {
				t.Fatalf("at %v: %v", e["at"], err)
			}
			return tm
		}
		for _, c := range []struct {
			name  string
			query url.Values
			want  func(map[string]any) bool
			min   int
		}{
			{"operator_id", url.Values{"operator_id": {a}}, func(e map[string]any) bool { return e["operator_id"] == a }, 4},
			{"actor_id", url.Values{"actor_id": {chief}}, func(e map[string]any) bool { return e["actor_id"] == chief }, 2},
			{"type", url.Values{"type": {"operator.issued"}}, func(e map[string]any) bool { return e["type"] == "operator.issued" }, 4},
			{"resource_id", url.Values{"resource_id": {"operator:" + b}}, func(e map[string]any) bool { return e["resource"] == "operator:"+b }, 1},
			{"from", url.Values{"from": {t1.Format(time.RFC3339)}}, func(e map[string]any) bool { return !at(e).Before(t1) }, 3},
			{"to", url.Values{"to": {t1.Format(time.RFC3339)}}, func(e map[string]any) bool { return at(e).Before(t1) }, 6},
			{"from and to", url.Values{"from": {t1.Format(time.RFC3339)}, "to": {t2.Format(time.RFC3339)}},
				func(e map[string]any) bool { return !at(e).Before(t1) && at(e).Before(t2) }, 2},
			{"operator_id and type", url.Values{"operator_id": {a}, "type": {"operator.suspended"}},
				func(e map[string]any) bool { return e["operator_id"] == a && e["type"] == "operator.suspended" }, 1},
			{"nothing matches", url.Values{"operator_id": {"OP-ZZZZZZZZ"}}, func(map[string]any) bool { return false }, 0},
		} {
			t.Run(c.name, func(t *testing.T) {
				want := keep(c.want)
				if len(want) < c.min {
					t.Fatalf("the fixture has %d matching events, want at least %d", len(want), c.min)
				}
				if d := cmp.Diff(want, seqs(r.walk(t, c.query, 1000))); d != "" {
					t.Errorf("events (-want +got):\n%s", d)
				}
				if d := cmp.Diff(want, seqs(r.walk(t, c.query, 1))); d != "" {
					t.Errorf("events one by one (-want +got):\n%s", d)
				}
			})
		}
		t.Run("paging", func(t *testing.T) {
			paged := r.walk(t, nil, 2)
			if d := cmp.Diff(got, seqs(paged)); d != "" {
				t.Errorf("limit=2 walk (-whole list +pages):\n%s", d)
			}
			if d := cmp.Diff(all, paged); d != "" {
				t.Errorf("pages differ from the whole list:\n%s", d)
			}
		})
		t.Run("shape", func(t *testing.T) {
			for _, e := range all {
				for _, k := range []string{"seq", "at", "type", "actor_id", "operator_id", "site_id", "terminal_id", "resource", "reason", "data", "prev_hash", "hash"} {
					if _, ok := e[k]; !ok {
						t.Fatalf("event %v lacks %s", e["seq"], k)
					}
				}
			}
		})

		for _, c := range []struct{ name, query, field string }{
			{"bad from", "from=yesterday", "from"},
			{"bad to", "to=2027-02-30T00:00:00Z", "to"},
			{"from without zone", "from=2027-03-25T00:00:00", "from"},
			{"bad cursor", "cursor=%21%21", "cursor"},
			{"cursor of another list", "cursor=eHl6", "cursor"},
			{"limit 0", "limit=0", "limit"},
			{"limit too large", "limit=1001", "limit"},
			{"NUL in a filter", "operator_id=OP-%00", ""},
			{"not UTF-8", "type=%FF", ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := checkProblem(t, r.call(t, "GET", "/v1/audit/events?"+c.query, r.admin(t), nil), 400, "validation_failed")
				if c.field != "" && !slices.Contains(p.fields(), c.field) {
					t.Errorf("errors[] name %v, want %s", p.fields(), c.field)
				}
			})
		}

		t.Run("without audit.read", func(t *testing.T) {
			for _, tok := range []string{r.token(t, a, "honcho", "admin-console"), chiefTok} {
				checkProblem(t, r.call(t, "GET", "/v1/audit/events", tok, nil), 403, "forbidden")
				checkProblem(t, r.call(t, "GET", "/v1/audit/events?from=garbage", tok, nil), 403, "forbidden")
				checkProblem(t, r.call(t, "GET", "/v1/audit/verify", tok, nil), 403, "forbidden")
			}
		})
		t.Run("auditor of one site", func(t *testing.T) {
			r.site(t, "kita")
			aud := r.issue(t, "kita", "8004", nil)
			r.grant(t, aud, "auditor", "kita", nil)
			tok := r.token(t, aud, "kita", "admin-console")
			evs := itemsOf(r.must(t, 200, "GET", "/v1/audit/events?limit=1000", tok, nil).Map(t))
			if len(evs) == 0 {
				t.Fatal("the kita auditor sees nothing")
			}
			for _, e := range evs {
				if e["site_id"] != "kita" {
					t.Errorf("the kita auditor sees event %v at %v", e["seq"], e["site_id"])
				}
			}
			checkProblem(t, r.call(t, "GET", "/v1/audit/events?site_id=honcho", tok, nil), 403, "forbidden")
		})
	})
}
