package sqlite_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/sqlite"
)

// The writer leaves checkpoints to the checkpointer: without it the
// database file would not change until the log held 20,000 pages. The
// checkpointer runs on the wall clock (it is the engine's housekeeping,
// not the product's time), so the test waits for it, bounded.
func TestCheckpointerCopiesTheLogBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opgate.db")
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// Let a checkpoint of the migrations land first.
	time.Sleep(200 * time.Millisecond)
	before := size()
	pad := strings.Repeat("x", 3000)
	for i := range 300 {
		err := db.InTx(t.Context(), func(tx store.Tx) error {
			_, err := tx.AppendAudit(t.Context(), audit.Event{Type: audit.PolicyChanged, At: time.Unix(int64(i), 0), ActorID: "OP-1", Reason: pad})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() < before+300*3000 {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes after 300 events of 3 kB (was %d): the log was not copied back", size(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
