// Package sqlite is the embedded store, the default: a single file, no
// services, pure Go (modernc.org/sqlite, no cgo). It shares every query with
// the PostgreSQL store (store/internal/sqlstore) and owns the SQLite
// migrations, connection settings and error translation.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

var dialect = sqlstore.Dialect{
	Name:      "sqlite",
	Prepare:   true,
	OneWriter: true,
	Translate: translate,
	Retryable: func(err error) bool {
		var se *sqlite.Error
		if errors.As(err, &se) {
			c := se.Code() & 0xff
			return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
		}
		return false
	},
}

// translate maps SQLite's errors to the store's. It may see an error twice
// (once from the statement, again from InTx), so what it returns
// translates to itself; and it keeps the driver's error in the chain so
// that Retryable still recognises a busy database after a statement has
// reported it. Errors it knows nothing about, such as the caller's own
// from inside a transaction, pass unchanged.
func translate(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CONSTRAINT:
			return fmt.Errorf("%w: %s", store.ErrConflict, se.Error())
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL:
			return fmt.Errorf("%w: %w", store.ErrUnavailable, se)
		}
		return fmt.Errorf("sqlite: %w", se)
	}
	return err
}

// dsn builds the connection string. WAL lets readers run beside the one
// writer; synchronous(FULL) makes every commit durable before it is
// answered; write transactions begin IMMEDIATE so that two writers never
// deadlock upgrading a read lock. The statement and savepoint journals
// (group commit gives every member transaction a savepoint) stay in memory:
// they only matter until the commit, and writing them to temporary files
// cost a system call per page on every login. The writer leaves WAL
// checkpoints to the checkpointer (below) until the log is far behind.
func dsn(path string, readOnly bool) string {
	v := url.Values{}
	v.Add("_pragma", "busy_timeout(10000)")
	v.Add("_pragma", "foreign_keys(1)")
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(FULL)")
	v.Add("_pragma", "temp_store(MEMORY)")
	if readOnly {
		v.Add("_pragma", "query_only(1)")
	} else {
		v.Set("_txlock", "immediate")
		v.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", writerCheckpointPages))
	}
	return "file:" + path + "?" + v.Encode()
}

// Open opens (creating if needed) the database file and applies the
// migrations.
func Open(ctx context.Context, path string) (*sqlstore.DB, error) {
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	// Writes go through one committer (group commit), so one connection
	// writes; the second is where statements are prepared while it is busy.
	w.SetMaxOpenConns(2)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := Migrate(ctx, w); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	r.SetMaxOpenConns(4)
	// Keep every reader open: database/sql keeps two idle by default, and
	// opening a SQLite connection (its pragmas, its statement cache) cost
	// more than the reads it served.
	r.SetMaxIdleConns(4)
	cp, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s := sqlstore.New(w, r, dialect)
	s.AtClose(startCheckpointer(cp))
	s.EnableGroupCommit(1)
	return s, nil
}

// Migrate applies every pending migration.
func Migrate(ctx context.Context, db *sql.DB) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// provider applies the embedded migrations to db.
func provider(db *sql.DB) (*goose.Provider, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		return nil, fmt.Errorf("sqlite: migrations: %w", err)
	}
	return p, nil
}
