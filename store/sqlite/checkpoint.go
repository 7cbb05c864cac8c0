package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// WAL checkpoints. SQLite's default has the committing connection copy
// the log back into the database file, and fsync it, every 1,000 pages,
// inside a commit: with group commit that is the one goroutine every
// writer waits for. The checkpointer does it beside the writer instead,
// on a connection of its own, in PASSIVE mode, which never blocks the
// writer or a reader. The writer still checkpoints by itself, as SQLite
// would, if the log ever grows past writerCheckpointPages (a stalled or
// slow checkpointer must not let the log grow without bound).
const (
	checkpointEvery       = 50 * time.Millisecond
	writerCheckpointPages = 20000
)

// startCheckpointer runs PASSIVE checkpoints on db until the returned
// function is called; that function stops it and closes db.
func startCheckpointer(db *sql.DB) func() error {
	db.SetMaxOpenConns(1)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failure (a busy lock, a full disk) is the writer's to
				// report on its next commit; the next tick tries again.
				_, _ = db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
			}
		}
	}()
	return func() error {
		close(stop)
		<-done
		return db.Close()
	}
}
