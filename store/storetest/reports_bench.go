package storetest

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/store"
)

// ReportBench reaches one implementation for the report benchmarks.
type ReportBench struct {
	Store store.Store
	// Exec runs a statement on the same database, outside the store, to
	// load rows in bulk.
	Exec func(query string) error
	// Postgres says which SQL the bulk loads are written in.
	Postgres bool
}

// bulk loads n operators at site(i) with one card and grants each, and
// decisions naming their grants, in a few set-based statements. Times are
// microseconds: 1.8e15 is 2027-01-15.
func bulk(b *testing.B, h ReportBench, n, decisions int, site func(i string) string) {
	b.Helper()
	series := func(n int) string {
		return fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d) `, n)
	}
	blob := `randomblob(16)`
	if h.Postgres {
		series = func(n int) string { return fmt.Sprintf(`WITH s(i) AS (SELECT generate_series(1, %d)) `, n) }
		blob = `decode(md5(i::text), 'hex')`
	}
	const t0 = `1800000000000000`
	stmts := []string{
		`WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 9) INSERT INTO sites (site_id, name, municipality_code, created_at) SELECT 'site-' || i, '支所 ' || i, '132152', ` + t0 + ` FROM s`,
		series(n) + `INSERT INTO operators (operator_id, staff_number, name, site_id, employment_type, status, valid_until, issued_at, issued_by, status_changed_at, last_login_at)
			SELECT 'OP-' || (100000000 + i), 'S' || (100000000 + i), '職員 ' || i, ` + site("i") + `, 'regular', 'active', NULL, ` + t0 + `, 'OP-ADMIN', ` + t0 + `, ` + t0 + ` + i FROM s`,
		series(n) + `INSERT INTO cards (card_id, operator_id, serial, label, status, credential_id, public_key, sign_count, aaguid, flags, attestation, clone_suspected, enrolled_at, enrolled_by, status_changed_at)
			SELECT 'C-' || (100000000 + i), 'OP-' || (100000000 + i), 'SN-' || i, '職員証', 'active', ` + blob + `, ` + blob + `, 0, ` + blob + `, 0, 'none', false, ` + t0 + `, 'OP-ADMIN', ` + t0 + ` FROM s`,
		series(n) + `INSERT INTO grants (grant_id, operator_id, role_id, site_id, status, granted_by, approved_by, reason, created_at, valid_from, valid_until, ended_at, ended_by, end_reason)
			SELECT 'G-' || (100000000 + i), 'OP-' || (100000000 + i), 'counter_clerk', ` + site("i") + `, 'active', 'OP-ADMIN', '', '配属', ` + t0 + `, ` + t0 + `, NULL, NULL, '', '' FROM s`,
		series(n) + `INSERT INTO passwords (operator_id, hash, temporary, set_at, expires_at) SELECT 'OP-' || (100000000 + i), '$argon2id$x', false, ` + t0 + `, ` + t0 + ` + 7776000000000 FROM s`,
	}
	if decisions > 0 {
		stmts = append(stmts,
			series(decisions)+`INSERT INTO audit_events (seq, at, type, actor_id, operator_id, site_id, terminal_id, resource, reason, data, prev_hash, hash)
				SELECT i, `+t0+` + i, 'authz.decided', 'OP-' || (100000000 + i % `+fmt.Sprint(n)+` + 1), 'OP-' || (100000000 + i % `+fmt.Sprint(n)+` + 1), 'site-0', 't', 'resident:R-' || i, 'allowed',
				'{"allowed":true,"grant_id":"G-' || (100000000 + i % `+fmt.Sprint(n)+` + 1) || '","restricted":false}', `+blob+`, `+blob+` FROM s`,
			// What the store keeps beside each decision it writes.
			series(decisions)+`INSERT INTO grant_last_use (grant_id, at)
				SELECT 'G-' || (100000000 + i % `+fmt.Sprint(n)+` + 1), MAX(`+t0+` + i) FROM s GROUP BY 1`,
			fmt.Sprintf(`UPDATE audit_head SET seq = %d`, decisions))
	}
	for _, q := range stmts {
		if err := h.Exec(q); err != nil {
			b.Fatalf("bulk load: %v\n%s", err, q)
		}
	}
	if err := h.Store.InTx(b.Context(), func(tx store.Tx) error { return authz.SeedRoles(b.Context(), tx) }); err != nil {
		b.Fatal(err)
	}
}

type fixedPolicy struct{}

func (fixedPolicy) Policy(context.Context) (policy.Policy, error) { return policy.Default(), nil }

type allowAll struct{}

func (allowAll) Require(context.Context, opgate.OperatorID, opgate.Permission, opgate.SiteID) error {
	return nil
}

// BenchReviewOpen opens a campaign for a site with 5,000 live grants and
// 20,000 decisions naming them; the baseline of the same run reads the
// same grants with a bare paged SELECT.
func BenchReviewOpen(b *testing.B, open func(b *testing.B) ReportBench) {
	const grants = 5000
	h := open(b)
	bulk(b, h, grants, 4*grants, func(string) string { return `'site-0'` })
	clk := clocktest.New()
	clk.Set(time.UnixMicro(1800000000000000).Add(100 * 24 * time.Hour))
	svc, err := review.New(review.Config{DB: store.Runner[review.Tx]{S: h.Store}, Authorizer: allowAll{}, Policies: fixedPolicy{}, Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.Run("open-5000-grants", func(b *testing.B) {
		for b.Loop() {
			c, err := svc.Open(ctx, review.Actor{ID: "OP-CHIEF"}, review.OpenRequest{SiteID: "site-0", DueAt: clk.Now().Add(14 * 24 * time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			_, items, err := svc.Get(ctx, review.Actor{ID: "OP-CHIEF"}, c.ID)
			if err != nil || len(items) != grants || len(items[0].Hints) == 0 {
				b.Fatalf("%d items: %v", len(items), err)
			}
		}
	})
	b.Run("baseline-select-grants", func(b *testing.B) {
		for b.Loop() {
			n := 0
			err := h.Store.View(ctx, func(tx store.Tx) error {
				for after := opgate.GrantID(""); ; {
					gs, err := tx.ListGrants(ctx, authz.GrantFilter{SiteID: "site-0", Status: authz.Active, After: after, Limit: 1000})
					if err != nil {
						return err
					}
					n += len(gs)
					if len(gs) < 1000 {
						return nil
					}
					after = gs[len(gs)-1].ID
				}
			})
			if err != nil || n != grants {
				b.Fatalf("%d grants: %v", n, err)
			}
		}
	})
}

// BenchLedger writes the ledger of n operators as CSV and reports the
// peak heap in use while it streams, beside the same walk over the
// operators table alone (the baseline of the same run). A site of a tenth
// of the operators shows that the peak does not grow with the rows.
func BenchLedger(b *testing.B, open func(b *testing.B) ReportBench, n int) {
	h := open(b)
	bulk(b, h, n, 0, func(i string) string { return `'site-' || (` + i + ` % 10)` })
	ctx := b.Context()
	now := time.UnixMicro(1800000000000000)
	run := func(b *testing.B, site opgate.SiteID, want int, f report.Format) {
		var peak uint64
		for b.Loop() {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			w, err := report.NewWriter(io.Discard, f, report.LedgerTable, nil)
			if err != nil {
				b.Fatal(err)
			}
			rows := 0
			err = h.Store.Ledger(ctx, site, now, func(r report.LedgerRow) error {
				rows++
				if rows%5000 == 0 {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > base && ms.HeapInuse-base > peak {
						peak = ms.HeapInuse - base
					}
				}
				return w.Write(r)
			})
			if err == nil {
				err = w.Close()
			}
			if err != nil || rows != want {
				b.Fatalf("%d rows: %v", rows, err)
			}
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(want), "rows")
	}
	b.Run(fmt.Sprintf("csv-%d", n), func(b *testing.B) { run(b, "", n, report.CSV) })
	b.Run(fmt.Sprintf("csv-site-%d", n/10), func(b *testing.B) { run(b, "site-0", n/10, report.CSV) })
	b.Run(fmt.Sprintf("xlsx-%d", n), func(b *testing.B) { run(b, "", n, report.XLSX) })
	b.Run(fmt.Sprintf("xlsx-site-%d", n/10), func(b *testing.B) { run(b, "site-0", n/10, report.XLSX) })
	b.Run(fmt.Sprintf("baseline-select-operators-%d", n), func(b *testing.B) {
		for b.Loop() {
			rows := 0
			err := h.Store.View(ctx, func(tx store.Tx) error {
				for after := opgate.OperatorID(""); ; {
					page, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{After: after, Limit: 1000})
					if err != nil {
						return err
					}
					rows += len(page)
					if len(page) < 1000 {
						return nil
					}
					after = page[len(page)-1].ID
				}
			})
			if err != nil || rows != n {
				b.Fatalf("%d rows: %v", rows, err)
			}
		}
	})
}
