package postgres_test

import (
	"testing"

	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/internal/sqlstore"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/storetest"
)

// open opens a store on a new database private to tb, dropped when tb
// ends. It skips without OPGATE_TEST_POSTGRES_URL, and fails instead when
// OPGATE_TEST_REQUIRE_SERVICES=1.
func open(tb testing.TB) *sqlstore.DB {
	tb.Helper()
	url := testenv.PostgresURL(tb)
	db, err := postgres.Open(tb.Context(), url, postgres.Options{})
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	// Registered after PostgresURL's cleanup, so it runs first: the pool
	// is closed before the database is dropped.
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return db
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		db := open(t)
		return storetest.Harness{
			Store: db,
			Exec: func(t *testing.T, query string) error {
				_, err := db.W.ExecContext(t.Context(), query)
				return err
			},
			Unguard: []string{`DROP TRIGGER audit_events_no_update ON audit_events`},
		}
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b) })
}

func reportBench(b *testing.B) storetest.ReportBench {
	db := open(b)
	return storetest.ReportBench{Store: db, Postgres: true, Exec: func(q string) error { _, err := db.W.ExecContext(b.Context(), q); return err }}
}

func BenchmarkReviewOpen(b *testing.B) { storetest.BenchReviewOpen(b, reportBench) }

func BenchmarkLedger(b *testing.B) { storetest.BenchLedger(b, reportBench, 100_000) }

func TestGrantUsesCarriedOver(t *testing.T) {
	url := testenv.PostgresURL(t)
	old, err := postgres.OpenAt(t.Context(), url, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	storetest.GrantUsesCarriedOver(t, func(seq, at int64, typ, data string) error {
		_, err := old.ExecContext(t.Context(), `INSERT INTO audit_events (seq, at, type, actor_id, operator_id, site_id, terminal_id, resource, reason, data, prev_hash, hash)
			VALUES ($1, $2, $3, 'op-a', 'op-a', 'honcho', '', 'resident:R-1', '', $4, '\x00', '\x00')`, seq, at, typ, data)
		return err
	}, func() store.Store {
		old.Close()
		db, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
