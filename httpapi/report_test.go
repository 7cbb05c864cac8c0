package httpapi_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/xuri/excelize/v2"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/store"
)

// readCSV reads a CSV report as a spreadsheet program would: it must
// start with a UTF-8 BOM.
func readCSV(t testing.TB, body []byte) [][]string {
	t.Helper()
	rest, ok := bytes.CutPrefix(body, []byte("\uFEFF"))
	if !ok {
		t.Fatalf("no BOM: %q", body[:min(len(body), 20)])
	}
	rows, err := csv.NewReader(bytes.NewReader(rest)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v", err)
	}
	return rows
}

func readXLSX(t testing.TB, body []byte) [][]string {
	t.Helper()
	f, err := excelize.OpenReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("xlsx: %v", err)
	}
	defer f.Close()
	rows, err := f.GetRows(f.GetSheetName(0))
	if err != nil {
		t.Fatalf("xlsx rows: %v", err)
	}
	return rows
}

// rowOf finds the row whose first cell is key.
func rowOf(rows [][]string, key string) []string {
	for _, r := range rows {
		if len(r) > 0 && r[0] == key {
			return r
		}
	}
	return nil
}

// TestLedgerFormats produces the ledger as JSON, CSV and XLSX and reads
// the files back: headers, Japanese text, and cells that would be
// formulas escaped.
func TestLedgerFormats(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		evil := r.issue(t, "honcho", "-1+1", map[string]any{"name": "=HYPERLINK(\"http://x\",\"押して\")"})
		r.grant(t, evil, "counter_clerk", "honcho", nil)
		r.addCard(t, evil, "@SUM(A1)")
		plain := r.issue(t, "honcho", "8100", map[string]any{"name": "住基 太郎"})
		r.site(t, "kita")
		r.issue(t, "kita", "8200", nil)

		j := r.must(t, 200, "GET", "/v1/reports/ledger?site_id=honcho", r.admin(t), nil)
		if ct := j.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("content type %q", ct)
		}
		items := j.Map(t)["items"].([]any)
		if len(items) != 3 { // the administrator, evil, plain
			t.Fatalf("ledger of honcho has %d operators: %v", len(items), items)
		}
		var e map[string]any
		for _, x := range items {
			if x.(map[string]any)["operator_id"] == evil {
				e = x.(map[string]any)
			}
		}
		if e["name"] != "=HYPERLINK(\"http://x\",\"押して\")" || len(e["cards"].([]any)) != 1 || len(e["grants"].([]any)) != 1 {
			t.Errorf("JSON keeps values as they are: %v", e)
		}
		all := r.must(t, 200, "GET", "/v1/reports/ledger", r.admin(t), nil).Map(t)["items"].([]any)
		if len(all) != 4 {
			t.Errorf("ledger of every site has %d operators", len(all))
		}

		c := r.must(t, 200, "GET", "/v1/reports/ledger?site_id=honcho&format=csv", r.admin(t), nil)
		if ct := c.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
			t.Errorf("content type %q", ct)
		}
		x := r.must(t, 200, "GET", "/v1/reports/ledger?site_id=honcho&format=xlsx", r.admin(t), nil)
		if ct := x.Header.Get("Content-Type"); ct != "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" {
			t.Errorf("content type %q", ct)
		}
		for name, rows := range map[string][][]string{"csv": readCSV(t, c.Body), "xlsx": readXLSX(t, x.Body)} {
			t.Run(name, func(t *testing.T) {
				if diff := cmp.Diff([]string{"操作者ID (operator ID)", "職員番号 (staff number)", "氏名 (name)"}, rows[0][:3]); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
				if len(rows) != 4 {
					t.Fatalf("%d rows", len(rows))
				}
				er := rowOf(rows, evil)
				if er[1] != "'-1+1" || er[2] != "'=HYPERLINK(\"http://x\",\"押して\")" || !strings.HasPrefix(er[10], "'@SUM(A1) active") {
					t.Errorf("escaping: %q", er)
				}
				if !strings.HasPrefix(er[11], "counter_clerk@honcho active") {
					t.Errorf("grants cell %q", er[11])
				}
				if pr := rowOf(rows, plain); pr[2] != "住基 太郎" || pr[5] != "active" {
					t.Errorf("Japanese text: %q", pr)
				}
			})
		}
		r.must(t, 400, "GET", "/v1/reports/ledger?format=pdf", r.admin(t), nil)
		r.must(t, 400, "GET", "/v1/reports/ledger?site_id=NOT%20A%20SITE", r.admin(t), nil)
		// A chief reads the ledger of their own site only.
		chief := r.issue(t, "honcho", "8300", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		tok := r.token(t, chief, "honcho", "admin-console")
		r.must(t, 200, "GET", "/v1/reports/ledger?site_id=honcho&format=csv", tok, nil)
		r.must(t, 403, "GET", "/v1/reports/ledger?site_id=kita", tok, nil)
		r.must(t, 403, "GET", "/v1/reports/ledger", tok, nil)
		clerkTok := r.token(t, evil, "honcho", "admin-console")
		r.must(t, 403, "GET", "/v1/reports/ledger?site_id=honcho", clerkTok, nil)
		// Reading the ledger is itself recorded.
		if evs := r.walk(t, map[string][]string{"type": {"report.read"}}, 100); len(evs) < 4 {
			t.Errorf("%d report.read events", len(evs))
		}
	})
}

// TestDisclosureAndAnomalies builds a period's worth of decisions and
// logins and checks both reports.
func TestDisclosureAndAnomalies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		// Monday 2027-03-29 10:00 JST is inside office hours.
		r.Clock.Set(time.Date(2027, 3, 29, 1, 0, 0, 0, time.UTC))
		from := r.Clock.Now()
		r.site(t, "kita")
		clerk := r.issue(t, "honcho", "7101", nil)
		r.grant(t, clerk, "counter_clerk", "honcho", nil)
		sup := r.issue(t, "honcho", "7102", nil)
		r.grant(t, sup, "counter_clerk", "honcho", nil)
		rr := r.must(t, 201, "POST", "/v1/roles", r.admin(t), map[string]any{"role_id": "dv_reader", "name": "支援措置", "permissions": []string{"resident.read", "resident.read_restricted"}}).Map(t)
		_ = rr
		g := r.grant(t, sup, "dv_reader", "honcho", nil)
		if g["status"] == "pending_approval" {
			approver := r.issue(t, "honcho", "7103", nil)
			r.grant(t, approver, "section_chief", "honcho", nil)
			r.must(t, 200, "POST", "/v1/grants/"+g["grant_id"].(string)+"/approve", r.token(t, approver, "honcho", "admin-console"), map[string]any{"reason": "承認"})
		}
		others := []string{}
		for i, staff := range []string{"7104", "7105", "7106"} {
			o := r.issue(t, "honcho", staff, nil)
			r.grant(t, o, "counter_viewer", "honcho", nil)
			others = append(others, o)
			_ = i
		}
		clerkTok := r.token(t, clerk, "honcho", "admin-console")
		r.check(t, clerkTok, "R-100", "honcho", false)
		r.check(t, clerkTok, "R-100", "honcho", false)
		// Refused at another site's terminal.
		r.check(t, r.token(t, clerk, "kita", "kita-01"), "R-100", "honcho", false)
		// A restricted read.
		r.check(t, r.token(t, sup, "honcho", "admin-console"), "R-200", "honcho", true)
		// Volumes: three operators decide once each; the clerk 20 times.
		for _, o := range others {
			r.check(t, r.token(t, o, "honcho", "admin-console"), "R-300", "honcho", false)
		}
		for range 20 {
			r.check(t, clerkTok, "R-301", "honcho", false)
		}
		// A login at 03:00 JST, and five failures in a row.
		err := r.App.Store.InTx(ctx, func(tx store.Tx) error {
			night := time.Date(2027, 3, 29, 18, 0, 0, 0, time.UTC)
			if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.LoginSucceeded, At: night, ActorID: opgate.OperatorID(clerk), OperatorID: opgate.OperatorID(clerk),
				SiteID: "honcho", TerminalID: "admin-console", Resource: "session:S-night"}); err != nil {
				return err
			}
			for i := range 5 {
				if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.LoginFailed, At: night.Add(time.Duration(i) * time.Minute), OperatorID: opgate.OperatorID(sup),
					SiteID: "honcho", TerminalID: "admin-console", Resource: "operator:" + sup, Reason: "bad_signature"}); err != nil {
					return err
				}
			}
			c, err := tx.ListCards(ctx, opgate.OperatorID(sup))
			if err != nil || len(c) > 0 {
				return err
			}
			return tx.CreateCard(ctx, authn.Card{ID: "C-clone", OperatorID: opgate.OperatorID(sup), Serial: "SN-CLONE", Label: "x", Status: authn.CardActive,
				CredentialID: []byte("cred-clone"), PublicKey: []byte{1}, AAGUID: make([]byte, 16), CloneSuspected: true, EnrolledAt: night, StatusChanged: night})
		})
		if err != nil {
			t.Fatal(err)
		}
		r.Clock.Set(time.Date(2027, 3, 30, 1, 0, 0, 0, time.UTC))

		// Disclosure: every decision on R-100, allowed or refused.
		d := r.must(t, 200, "GET", "/v1/reports/disclosure?resource_type=resident&resource_id=R-100", r.admin(t), nil).Map(t)
		rows := d["items"].([]any)
		if len(rows) != 3 {
			t.Fatalf("disclosure rows %v", rows)
		}
		allowed := 0
		for _, x := range rows {
			if x.(map[string]any)["allowed"] == true {
				allowed++
			}
			if x.(map[string]any)["operator_id"] != clerk {
				t.Errorf("row %v", x)
			}
		}
		if allowed != 2 {
			t.Errorf("%d allowed of %v", allowed, rows)
		}
		dc := readCSV(t, r.must(t, 200, "GET", "/v1/reports/disclosure?resource_type=resident&resource_id=R-100&format=csv", r.admin(t), nil).Body)
		if len(dc) != 4 || dc[0][0] != "日時 (time)" {
			t.Errorf("disclosure csv %v", dc)
		}
		r.must(t, 400, "GET", "/v1/reports/disclosure?resource_type=resident", r.admin(t), nil)
		r.must(t, 400, "GET", "/v1/reports/disclosure?resource_type=resident&resource_id=R-1&from=yesterday", r.admin(t), nil)
		r.must(t, 400, "GET", "/v1/reports/disclosure?resource_type=resident&resource_id=R-1&from=2027-03-02T00:00:00Z&to=2027-03-01T00:00:00Z", r.admin(t), nil)

		a := r.must(t, 200, "GET", "/v1/reports/anomalies?from="+from.Format(time.RFC3339), r.admin(t), nil).Map(t)
		kinds := map[string]int{}
		for _, x := range a["items"].([]any) {
			m := x.(map[string]any)
			kinds[m["kind"].(string)]++
			if m["kind"] == "decision_volume" && m["operator_id"] != clerk {
				t.Errorf("volume finding for %v", m)
			}
		}
		want := map[string]int{"off_hours_login": 1, "failure_burst": 2, "possible_clone": 1, "other_site_refusal": 1, "restricted_read": 1, "decision_volume": 1}
		if diff := cmp.Diff(want, kinds); diff != "" {
			t.Errorf("anomaly kinds (-want +got):\n%s", diff)
		}
		x := readXLSX(t, r.must(t, 200, "GET", "/v1/reports/anomalies?format=xlsx&from="+from.Format(time.RFC3339), r.admin(t), nil).Body)
		if len(x) != 8 || x[0][0] != "種別 (kind)" {
			t.Errorf("anomalies xlsx %v", x)
		}
		// A section chief has report.read at the site only: these reports
		// span every site.
		chief := r.issue(t, "honcho", "7199", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		ctok := r.token(t, chief, "honcho", "admin-console")
		r.must(t, 403, "GET", "/v1/reports/anomalies", ctok, nil)
		// Refused before the request's content is read: bad parameters
		// tell them nothing either (API.md, Conventions).
		for _, path := range []string{"/v1/reports/anomalies?from=zz", "/v1/reports/checklist?format=pdf",
			"/v1/reports/disclosure?resource_type=resident&resource_id=x&from=zz", "/v1/reports/ledger?site_id=kita&format=pdf",
			"/v1/reports/dormant?site_id=kita&format=pdf"} {
			checkProblem(t, r.call(t, "GET", path, ctok, nil), 403, "forbidden")
		}
	})
}

// TestDormant suspends an operator unused for dormant_after_s, audited,
// and reports it with what expires soon.
func TestDormant(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		pol := decodeDoc(t, []byte(defaultPolicy))
		pol["dormant_after_s"] = 86400
		r.must(t, 200, "PUT", "/v1/policy", r.admin(t), pol)
		idle := r.issue(t, "honcho", "6001", nil)
		r.grant(t, idle, "counter_clerk", "honcho", nil)
		temp := r.issue(t, "honcho", "6002", map[string]any{"employment_type": "temporary", "valid_until": r.Clock.Now().Add(20 * 24 * time.Hour).Format(time.RFC3339)})
		r.grant(t, temp, "counter_viewer", "honcho", nil)
		r.Clock.Advance(12 * time.Hour)
		// temp logs in; idle does not.
		if err := r.App.Store.InTx(ctx, func(tx store.Tx) error {
			o, err := tx.GetOperator(ctx, opgate.OperatorID(temp))
			if err != nil {
				return err
			}
			o.LastLoginAt = r.Clock.Now()
			if err := tx.UpdateOperator(ctx, o); err != nil {
				return err
			}
			return tx.PutPassword(ctx, authn.PasswordRecord{OperatorID: o.ID, Hash: "$argon2id$x", SetAt: r.Clock.Now(), ExpiresAt: r.Clock.Now().Add(10 * 24 * time.Hour)})
		}); err != nil {
			t.Fatal(err)
		}
		r.Clock.Advance(13 * time.Hour)
		rep := r.must(t, 200, "GET", "/v1/reports/dormant", r.admin(t), nil).Map(t)["items"].([]any)
		got := map[string]string{}
		for _, x := range rep {
			m := x.(map[string]any)
			got[m["operator_id"].(string)+" "+m["kind"].(string)] = m["status"].(string)
		}
		for _, k := range []string{idle + " dormant_operator", temp + " operator_expiring", temp + " grant_expiring", temp + " password_expiring"} {
			if _, ok := got[k]; !ok {
				t.Errorf("missing %s in %v", k, got)
			}
		}
		if _, ok := got[temp+" dormant_operator"]; ok {
			t.Errorf("temp logged in 13 h ago but is reported dormant")
		}
		n, err := r.App.SuspendDormant(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// idle, not temp, not the security administrator (exempt).
		if n != 1 || r.operator(t, idle)["status"] != "suspended" || r.operator(t, temp)["status"] != "active" ||
			r.operator(t, r.adminID())["status"] != "active" {
			t.Fatalf("suspended %d; idle %v", n, r.operator(t, idle)["status"])
		}
		h := r.history(t, idle)
		last := h[len(h)-1]
		if last["type"] != "operator.suspended" || last["reason"] != "dormant" {
			t.Errorf("last event %v", last)
		}
		c := readCSV(t, r.must(t, 200, "GET", "/v1/reports/dormant?format=csv", r.admin(t), nil).Body)
		if c[0][0] != "種別 (kind)" {
			t.Errorf("header %v", c[0])
		}
		// Reinstated, the ID gets a full period to be used: the next sweep
		// leaves it alone, and neither the report nor the checklist counts
		// it; a full period later without a login, it is suspended again.
		r.Clock.Advance(time.Hour)
		r.must(t, 200, "POST", "/v1/operators/"+idle+"/reinstate", r.admin(t), map[string]any{"reason": "復帰"})
		r.Clock.Advance(time.Hour)
		if n, err := r.App.SuspendDormant(ctx); err != nil || n != 0 || r.operator(t, idle)["status"] != "active" {
			t.Fatalf("the sweep after a reinstatement suspended %d (%v): %v", n, err, r.operator(t, idle)["status"])
		}
		for _, x := range r.must(t, 200, "GET", "/v1/reports/dormant", r.admin(t), nil).Map(t)["items"].([]any) {
			if m := x.(map[string]any); m["operator_id"] == idle && m["kind"] == "dormant_operator" {
				t.Errorf("a reinstated ID reported dormant: %v", m)
			}
		}
		r.Clock.Advance(24 * time.Hour)
		if n, err := r.App.SuspendDormant(ctx); err != nil || n < 1 || r.operator(t, idle)["status"] != "suspended" {
			t.Fatalf("a full period after the reinstatement: suspended %d (%v): %v", n, err, r.operator(t, idle)["status"])
		}
	})
}

func (r *rig) checklist(t testing.TB) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, x := range r.must(t, 200, "GET", "/v1/reports/checklist", r.admin(t), nil).Map(t)["items"].([]any) {
		m := x.(map[string]any)
		out[m["item"].(string)] = m["score"].(float64)
		if m["title"] == "" || m["evidence"] == "" {
			t.Errorf("item %v", m)
		}
	}
	return out
}

// TestChecklist scores items from the live policy and data over HTTP:
// the lockout policy (12-2), a departed operator's card (16-1) and the
// last completed review of each site (18-2).
func TestChecklist(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		chief := r.issue(t, "honcho", "5001", nil)
		r.grant(t, chief, "section_chief", "honcho", nil)
		got := r.checklist(t)
		if len(got) != 17 {
			t.Fatalf("%d items: %v", len(got), got)
		}
		if got["12-2"] != 3 || got["16-1"] != 3 || got["18-2"] != 1 {
			t.Fatalf("start: %v", got)
		}
		pol := decodeDoc(t, []byte(defaultPolicy))
		pol["lockout"].(map[string]any)["threshold"] = 10
		r.must(t, 200, "PUT", "/v1/policy", r.admin(t), pol)
		if s := r.checklist(t)["12-2"]; s != 2 {
			t.Errorf("12-2 with threshold 10: %v", s)
		}
		pol["lockout"].(map[string]any)["permanent_after"] = 0
		r.must(t, 200, "PUT", "/v1/policy", r.admin(t), pol)
		if s := r.checklist(t)["12-2"]; s != 1 {
			t.Errorf("12-2 with threshold 10 and no escalation: %v", s)
		}

		// A retired operator whose card was never collected.
		gone := r.issue(t, "honcho", "5002", nil)
		r.must(t, 200, "POST", "/v1/operators/"+gone+"/retire", r.admin(t), map[string]any{"reason": "退職"})
		r.addCard(t, gone, "SN-GONE")
		if s := r.checklist(t)["16-1"]; s != 2 {
			t.Errorf("16-1 with a departed operator's card: %v", s)
		}

		// A review of honcho closed today, every item decided. Closed with
		// its items escalated and undecided, it would not count.
		id := r.must(t, 201, "POST", "/v1/reviews", r.admin(t), map[string]any{"site_id": "honcho", "due_at": r.Clock.Now().Add(time.Hour).Format(time.RFC3339)}).Map(t)["review_id"].(string)
		for _, x := range r.must(t, 200, "GET", "/v1/reviews/"+id, r.admin(t), nil).Map(t)["items"].([]any) {
			it := x.(map[string]any)
			r.must(t, 200, "POST", "/v1/reviews/"+id+"/items/"+it["item_id"].(string), r.admin(t), map[string]any{"decision": "keep", "reason": "業務上必要"})
		}
		r.must(t, 200, "POST", "/v1/reviews/"+id+"/close", r.admin(t), nil)
		if s := r.checklist(t)["18-2"]; s != 3 {
			t.Errorf("18-2 after a review: %v", s)
		}
		r.Clock.Advance(200 * 24 * time.Hour)
		if s := r.checklist(t)["18-2"]; s != 2 {
			t.Errorf("18-2 200 days later: %v", s)
		}
		rows := readCSV(t, r.must(t, 200, "GET", "/v1/reports/checklist?format=csv", r.admin(t), nil).Body)
		if len(rows) != 18 || rows[0][1] != "調査項目 (title)" || rowOf(rows, "16-1")[1] != "操作者識別カードを個人ごとに貸与し、人事異動に際しては回収している" {
			t.Errorf("checklist csv %v", rows)
		}
	})
}

// TestPurgeKeepsVerifyGreen purges the history past retention through
// the wired server and checks GET /v1/audit/verify.
func TestPurgeKeepsVerifyGreen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		ctx := context.Background()
		before := r.walk(t, nil, 1000)
		r.Clock.Advance(8 * 365 * 24 * time.Hour)
		r.issue(t, "honcho", "4001", nil)
		res, err := r.App.Purge(ctx, r.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if res.Removed != int64(len(before)) {
			t.Errorf("removed %d, want the %d events older than 7 years", res.Removed, len(before))
		}
		v := r.must(t, 200, "GET", "/v1/audit/verify", r.admin(t), nil).Map(t)
		if v["ok"] != true {
			t.Fatalf("verify after purge: %v", v)
		}
		after := r.walk(t, nil, 1000)
		if after[0]["type"] != "operator.issued" || after[len(after)-1]["type"] != "audit.purged" {
			t.Errorf("left %v", typesOf(after))
		}
		if res, err := r.App.Purge(ctx, r.Clock.Now()); err != nil || res.Removed != 0 {
			t.Errorf("second purge removed %d (%v): everything left is inside retention", res.Removed, err)
		}
	})
}
