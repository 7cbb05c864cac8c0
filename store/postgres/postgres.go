// Package postgres is the PostgreSQL store, on pgx/v5 through database/sql
// so that it shares every query with the SQLite store (store/internal/
// sqlstore). It owns the PostgreSQL migrations and the translation of
// PostgreSQL errors; several replicas may share one database.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect is PostgreSQL's.
var dialect = sqlstore.Dialect{
	Name:       "postgres",
	Numbered:   true,
	ForUpdate:  " FOR UPDATE",
	SkipLocked: " FOR UPDATE SKIP LOCKED",
	ForShare:   " FOR SHARE",
	LockExclusive: func(table string) string {
		// EXCLUSIVE conflicts with the ROW SHARE lock a SELECT … FOR SHARE
		// takes, and not with plain reads.
		return "LOCK TABLE " + table + " IN EXCLUSIVE MODE"
	},
	Translate: translate,
	Retryable: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
	},
}

// translate maps PostgreSQL's errors to the store's. It may see an error
// twice (once from the statement, again from InTx), so what it returns
// translates to itself; and it keeps the driver's error in the chain so
// that Retryable still recognises a deadlock or serialisation failure
// after a statement has reported it. Errors it knows nothing about, such
// as the caller's own from inside a transaction, pass unchanged.
func translate(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505", "23503", "23514":
			return fmt.Errorf("%w: %s", store.ErrConflict, pe.ConstraintName)
		}
		return pgError{pe}
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || pgconn.SafeToRetry(err) || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return err
}

// pgError reports a PostgreSQL error by its message and code only (the
// driver's own text can carry detail such as key values).
type pgError struct{ pe *pgconn.PgError }

func (e pgError) Error() string { return fmt.Sprintf("postgres: %s (%s)", e.pe.Message, e.pe.Code) }
func (e pgError) Unwrap() error { return e.pe }

// Options tune the pool.
type Options struct {
	MaxConns int // 0 → 20
}

// Open connects to url and applies the migrations.
func Open(ctx context.Context, url string, o Options) (*sqlstore.DB, error) {
	cfg, err := pgconnConfig(url)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	if o.MaxConns <= 0 {
		o.MaxConns = 20
	}
	db.SetMaxOpenConns(o.MaxConns)
	db.SetMaxIdleConns(o.MaxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: connect: %w", store.ErrUnavailable)
	}
	if err := Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	s := sqlstore.New(db, db, dialect)
	// Four batches run their statements side by side, each a round trip
	// away; the chain's head lock still orders their commits. A deadlock
	// between two batches' row locks fails one statement, whose caller
	// alone is rolled back to its savepoint and runs again.
	s.EnableGroupCommit(4)
	return s, nil
}

// Migrate applies every pending migration. A session lock lets several
// replicas start at once.
func Migrate(ctx context.Context, db *sql.DB) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// provider applies the embedded migrations to db.
func provider(db *sql.DB) (*goose.Provider, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	return p, nil
}
