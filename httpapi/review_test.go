package httpapi_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate/internal/servertest"
)

// itemsByOperator maps a campaign's items by operator and role.
func itemsByOperator(t testing.TB, review map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, x := range review["items"].([]any) {
		it := x.(map[string]any)
		out[it["operator_id"].(string)+"/"+it["role_id"].(string)] = it
	}
	return out
}

func (r *rig) check(t testing.TB, tok, resource string, site string, restricted bool) map[string]any {
	t.Helper()
	body := map[string]any{"action": "resident.read", "resource": map[string]any{"type": "resident", "id": resource, "site_id": site, "restricted": restricted}}
	if restricted {
		body["purpose"] = "本人確認"
	}
	return r.must(t, 200, "POST", "/v1/authz/check", tok, body).Map(t)
}

// TestReviewFlow runs a campaign end to end over HTTP: a snapshot of the
// site's live grants with hints, self-review refused, keep, revoke taking
// effect at once, closing with unreviewed items escalated or revoked,
// closing twice refused, and campaigns opened by a schedule.
func TestReviewFlow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		chief := r.issue(t, "honcho", "9001", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		clerk := r.issue(t, "honcho", "9002", nil)
		clerkGrant := r.grant(t, clerk, "counter_clerk", "honcho", nil)["grant_id"].(string)
		viewer := r.issue(t, "honcho", "9003", nil)
		viewerGrant := r.grant(t, viewer, "counter_viewer", "honcho", map[string]any{"valid_until": r.Clock.Now().Add(120 * 24 * time.Hour).Format(time.RFC3339)})["grant_id"].(string)
		r.site(t, "kita")
		other := r.issue(t, "kita", "9004", nil)
		r.grant(t, other, "counter_clerk", "kita", nil)

		// The clerk uses the grant; the viewer never does.
		r.Clock.Advance(100 * 24 * time.Hour)
		clerkTok := r.token(t, clerk, "honcho", "admin-console")
		if d := r.check(t, clerkTok, "R-1", "honcho", false); d["allowed"] != true {
			t.Fatalf("check: %v", d)
		}
		used := r.Clock.Now()
		r.Clock.Advance(time.Hour)

		chiefTok := r.token(t, chief, "honcho", "admin-console")
		due := r.Clock.Now().Add(14 * 24 * time.Hour).Format(time.RFC3339)
		// A caller without review.perform learns nothing.
		r.must(t, 403, "POST", "/v1/reviews", r.token(t, clerk, "honcho", "admin-console"), map[string]any{"site_id": "honcho", "due_at": due})
		rev := r.must(t, 201, "POST", "/v1/reviews", chiefTok, map[string]any{"site_id": "honcho", "due_at": due}).Map(t)
		id := rev["review_id"].(string)
		if rev["status"] != "open" || rev["on_unreviewed"] != "escalate" {
			t.Fatalf("campaign %v", rev)
		}
		items := itemsByOperator(t, rev)
		// One item per live grant of the site: the chief's, the clerk's,
		// the viewer's; not the administrator's grant at every site, not
		// another site's.
		if len(items) != 3 {
			t.Fatalf("items %v", items)
		}
		ci, vi, si := items[clerk+"/counter_clerk"], items[viewer+"/counter_viewer"], items[chief+"/section_chief"]
		if ci["last_used_at"] != used.UTC().Format(time.RFC3339Nano) || ci["decision"] != nil {
			t.Errorf("clerk item %v, want last use %s", ci, used)
		}
		if diff := cmp.Diff([]any{"unused_90d", "dormant", "expires_soon"}, vi["hints"]); diff != "" {
			t.Errorf("viewer hints (-want +got):\n%s", diff)
		}
		if vi["last_used_at"] != nil {
			t.Errorf("viewer item %v", vi)
		}

		// Nobody decides on their own grant; the security administrator does.
		r.must(t, 403, "POST", "/v1/reviews/"+id+"/items/"+si["item_id"].(string), chiefTok, map[string]any{"decision": "keep", "reason": "本人"})
		if p := r.call(t, "POST", "/v1/reviews/"+id+"/items/"+si["item_id"].(string), chiefTok, map[string]any{"decision": "keep", "reason": "本人"}).Map(t); p["code"] != "self_grant" {
			t.Errorf("self review: %v", p)
		}
		r.must(t, 400, "POST", "/v1/reviews/"+id+"/items/"+ci["item_id"].(string), chiefTok, map[string]any{"decision": "maybe", "reason": "x"})
		r.must(t, 400, "POST", "/v1/reviews/"+id+"/items/"+ci["item_id"].(string), chiefTok, map[string]any{"decision": "keep", "reason": ""})
		r.must(t, 404, "POST", "/v1/reviews/"+id+"/items/I-99999", chiefTok, map[string]any{"decision": "keep", "reason": "x"})
		kept := r.must(t, 200, "POST", "/v1/reviews/"+id+"/items/"+ci["item_id"].(string), chiefTok, map[string]any{"decision": "keep", "reason": "窓口業務に必要"}).Map(t)
		if kept["decision"] != "keep" || kept["decided_by"] != chief {
			t.Errorf("kept %v", kept)
		}
		r.must(t, 409, "POST", "/v1/reviews/"+id+"/items/"+ci["item_id"].(string), chiefTok, map[string]any{"decision": "revoke", "reason": "again"})

		// Revoke applies at once: the viewer's next decision is refused.
		viewerTok := r.token(t, viewer, "honcho", "admin-console")
		if d := r.check(t, viewerTok, "R-2", "honcho", false); d["allowed"] != true {
			t.Fatalf("before revoke: %v", d)
		}
		r.must(t, 200, "POST", "/v1/reviews/"+id+"/items/"+vi["item_id"].(string), chiefTok, map[string]any{"decision": "revoke", "reason": "異動予定"})
		if d := r.check(t, viewerTok, "R-2", "honcho", false); d["allowed"] != false || d["reason"] != "no_grant" {
			t.Fatalf("after revoke: %v", d)
		}
		g := r.must(t, 200, "GET", "/v1/grants?operator_id="+viewer, r.admin(t), nil).Map(t)["items"].([]any)[0].(map[string]any)
		if g["grant_id"] != viewerGrant || g["status"] != "revoked" {
			t.Errorf("viewer grant %v", g)
		}

		// Close: the chief's own item was left; it is escalated.
		closed := r.must(t, 200, "POST", "/v1/reviews/"+id+"/close", chiefTok, nil).Map(t)
		if closed["status"] != "closed" || itemsByOperator(t, closed)[chief+"/section_chief"]["decision"] != "escalated" {
			t.Fatalf("closed %v", closed)
		}
		r.must(t, 409, "POST", "/v1/reviews/"+id+"/close", chiefTok, nil)
		// The escalated item is the security administrator's, and theirs
		// alone, once the campaign is closed.
		r.must(t, 409, "POST", "/v1/reviews/"+id+"/items/"+ci["item_id"].(string), r.admin(t), map[string]any{"decision": "revoke", "reason": "x"})
		if p := r.call(t, "POST", "/v1/reviews/"+id+"/items/"+si["item_id"].(string), r.token(t, clerk, "honcho", "admin-console"), map[string]any{"decision": "keep", "reason": "x"}); p.Status != 403 {
			t.Errorf("a clerk decided an escalated item: %d", p.Status)
		}
		esc := r.must(t, 200, "POST", "/v1/reviews/"+id+"/items/"+si["item_id"].(string), r.admin(t), map[string]any{"decision": "keep", "reason": "係長として必要"}).Map(t)
		if esc["decision"] != "keep" || esc["decided_by"] != r.adminID() {
			t.Errorf("escalated item decided: %v", esc)
		}
		r.must(t, 409, "POST", "/v1/reviews/"+id+"/items/"+si["item_id"].(string), r.admin(t), map[string]any{"decision": "revoke", "reason": "again"})
		evs := r.walk(t, map[string][]string{"type": {"review.escalated"}}, 100)
		if len(evs) != 1 {
			t.Errorf("escalation events %v", evs)
		}

		// The campaign's report, as the chief files it.
		for _, f := range []string{"csv", "xlsx"} {
			body := r.must(t, 200, "GET", "/v1/reports/reviews/"+id+"?format="+f, chiefTok, nil).Body
			var rows [][]string
			if f == "csv" {
				rows = readCSV(t, body)
			} else {
				rows = readXLSX(t, body)
			}
			if len(rows) != 4 || rows[0][0] != "項目 (item)" || rowOf(rows, vi["item_id"].(string))[11] != "revoke" ||
				rowOf(rows, vi["item_id"].(string))[12] != "異動予定" || rowOf(rows, vi["item_id"].(string))[3] != "職員 9003" {
				t.Errorf("%s review report %q", f, rows)
			}
		}
		r.must(t, 403, "GET", "/v1/reports/reviews/"+id, r.token(t, clerk, "honcho", "admin-console"), nil)

		// A campaign that revokes what nobody reviewed.
		rev2 := r.must(t, 201, "POST", "/v1/reviews", r.admin(t), map[string]any{"site_id": "honcho", "due_at": due, "on_unreviewed": "revoke"}).Map(t)
		if n := len(itemsByOperator(t, rev2)); n != 2 {
			t.Fatalf("second campaign has %d items, want 2 (the revoked grant is gone)", n)
		}
		// The security administrator decides the chief's own item.
		si2 := itemsByOperator(t, rev2)[chief+"/section_chief"]
		r.must(t, 200, "POST", "/v1/reviews/"+rev2["review_id"].(string)+"/items/"+si2["item_id"].(string), r.admin(t), map[string]any{"decision": "keep", "reason": "係長として必要"})
		closed2 := r.must(t, 200, "POST", "/v1/reviews/"+rev2["review_id"].(string)+"/close", chiefTok, nil).Map(t)
		if d := itemsByOperator(t, closed2)[clerk+"/counter_clerk"]["decision"]; d != "revoked_unreviewed" {
			t.Fatalf("clerk item after close: %v", d)
		}
		if d := r.check(t, r.token(t, clerk, "honcho", "admin-console"), "R-1", "honcho", false); d["allowed"] != false {
			t.Fatalf("clerk still allowed after the unreviewed revoke: %v", d)
		}
		g = r.must(t, 200, "GET", "/v1/grants?operator_id="+clerk, r.admin(t), nil).Map(t)["items"].([]any)[0].(map[string]any)
		if g["grant_id"] != clerkGrant || g["status"] != "revoked" {
			t.Errorf("clerk grant %v", g)
		}

		// Another site's chief cannot see the campaign; a reader at every
		// site is told it does not exist.
		r.must(t, 403, "GET", "/v1/reviews/"+id, r.token(t, clerk, "honcho", "admin-console"), nil)
		r.must(t, 404, "GET", "/v1/reviews/R-NOPE", r.admin(t), nil)
		r.must(t, 200, "GET", "/v1/reviews/"+id, chiefTok, nil)

		chiefTok = r.token(t, chief, "honcho", "admin-console")
		// Scheduled: every 3 months, each campaign due a day after it opens.
		sc := r.must(t, 201, "POST", "/v1/review-schedules", chiefTok, map[string]any{"site_id": "honcho", "every_months": 3, "due_after_s": 86400}).Map(t)
		if sc["every_months"].(float64) != 3 {
			t.Fatalf("schedule %v", sc)
		}
		r.must(t, 400, "POST", "/v1/review-schedules", chiefTok, map[string]any{"site_id": "honcho", "every_months": 0})
		opened, _, err := r.App.Reviews.Sweep(ctx)
		if err != nil || opened != 1 {
			t.Fatalf("sweep opened %d: %v", opened, err)
		}
		if opened, _, _ := r.App.Reviews.Sweep(ctx); opened != 0 {
			t.Fatalf("a second sweep opened %d", opened)
		}
		r.Clock.Advance(25 * time.Hour)
		_, closedN, err := r.App.Reviews.Sweep(ctx)
		if err != nil || closedN != 1 {
			t.Fatalf("sweep closed %d: %v", closedN, err)
		}
		r.Clock.Advance(92 * 24 * time.Hour)
		if opened, _, _ := r.App.Reviews.Sweep(ctx); opened != 1 {
			t.Fatalf("after three months the sweep opened %d", opened)
		}
		list := r.must(t, 200, "GET", "/v1/reviews?site_id=honcho", r.admin(t), nil).Map(t)["items"].([]any)
		scheduled := 0
		for _, x := range list {
			if x.(map[string]any)["schedule_id"] == sc["schedule_id"] {
				scheduled++
			}
		}
		if len(list) != 4 || scheduled != 2 {
			t.Errorf("%d campaigns, %d scheduled: %v", len(list), scheduled, list)
		}
		r.must(t, 204, "DELETE", "/v1/review-schedules/"+sc["schedule_id"].(string), r.token(t, chief, "honcho", "admin-console"), nil)
		r.must(t, 404, "DELETE", "/v1/review-schedules/"+sc["schedule_id"].(string), r.admin(t), nil)
	})
}

// TestReviewConcurrency: two replicas sweeping one due schedule open one
// campaign; two reviewers deciding one item at once, on two replicas, get
// one decision and one conflict.
func TestReviewConcurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		other := servertest.Join(t, r.Shared(), r.Clock)
		op := r.issue(t, "honcho", "9501", nil)
		r.grant(t, op, "counter_clerk", "honcho", nil)
		chiefs := []string{r.issue(t, "honcho", "9502", nil), r.issue(t, "honcho", "9503", nil)}
		for _, c := range chiefs {
			r.grant(t, c, "section_chief", "honcho", nil)
		}
		r.must(t, 201, "POST", "/v1/review-schedules", r.admin(t), map[string]any{"site_id": "honcho", "every_months": 1})
		var wg sync.WaitGroup
		opened := make([]int, 2)
		for i, app := range []*servertest.Server{r.Server, other} {
			wg.Go(func() {
				n, _, err := app.App.Reviews.Sweep(ctx)
				if err != nil {
					t.Errorf("sweep: %v", err)
				}
				opened[i] = n
			})
		}
		wg.Wait()
		if opened[0]+opened[1] != 1 {
			t.Fatalf("replicas opened %v campaigns", opened)
		}
		list := r.must(t, 200, "GET", "/v1/reviews?site_id=honcho", r.admin(t), nil).Map(t)["items"].([]any)
		id := list[0].(map[string]any)["review_id"].(string)
		item := itemsByOperator(t, r.must(t, 200, "GET", "/v1/reviews/"+id, r.admin(t), nil).Map(t))[op+"/counter_clerk"]["item_id"].(string)
		codes := make([]int, 2)
		for i, c := range chiefs {
			srv := []*servertest.Server{r.Server, other}[i]
			tok := r.token(t, c, "honcho", "admin-console")
			wg.Go(func() {
				codes[i] = srv.Do("POST", "/v1/reviews/"+id+"/items/"+item, tok, map[string]any{"decision": []string{"keep", "revoke"}[i], "reason": "同時"}).Status
			})
		}
		wg.Wait()
		if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
			t.Fatalf("concurrent decisions answered %v", codes)
		}
		if evs := r.walk(t, map[string][]string{"type": {"review.decided"}}, 100); len(evs) != 1 {
			t.Errorf("%d review.decided events", len(evs))
		}
	})
}
