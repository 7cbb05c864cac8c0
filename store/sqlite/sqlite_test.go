package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/internal/sqlstore"
	"github.com/opgate/opgate/store/sqlite"
	"github.com/opgate/opgate/store/storetest"
)

// open opens a store on a new file private to tb, closed when tb ends.
func open(tb testing.TB) *sqlstore.DB {
	tb.Helper()
	return openFile(tb, filepath.Join(tb.TempDir(), "opgate.db"))
}

func openFile(tb testing.TB, path string) *sqlstore.DB {
	tb.Helper()
	db, err := sqlite.Open(tb.Context(), path)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
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
			// The store's own writer pool: SQLite has one writer, and the
			// suite runs raw statements only between transactions.
			Exec: func(t *testing.T, query string) error {
				_, err := db.W.ExecContext(t.Context(), query)
				return err
			},
			Unguard: []string{
				`DROP TRIGGER audit_events_no_update`,
				`DROP TRIGGER audit_events_no_delete`,
			},
		}
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b) })
}

func reportBench(b *testing.B) storetest.ReportBench {
	db := open(b)
	return storetest.ReportBench{Store: db, Exec: func(q string) error { _, err := db.W.ExecContext(b.Context(), q); return err }}
}

func BenchmarkReviewOpen(b *testing.B) { storetest.BenchReviewOpen(b, reportBench) }

func BenchmarkLedger(b *testing.B) { storetest.BenchLedger(b, reportBench, 100_000) }

func TestGrantUsesCarriedOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opgate.db")
	old, err := sqlite.OpenAt(t.Context(), path, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	storetest.GrantUsesCarriedOver(t, func(seq, at int64, typ, data string) error {
		_, err := old.ExecContext(t.Context(), `INSERT INTO audit_events (seq, at, type, actor_id, operator_id, site_id, terminal_id, resource, reason, data, prev_hash, hash)
			VALUES (?, ?, ?, 'op-a', 'op-a', 'honcho', '', 'resident:R-1', '', ?, x'00', x'00')`, seq, at, typ, data)
		return err
	}, func() store.Store {
		old.Close()
		return openFile(t, path)
	})
}
