// Package sqlstore is the SQL both stores share: one implementation of the
// storage contract on database/sql, parameterised by a Dialect for the few
// places where PostgreSQL and SQLite differ (placeholders, row locks, error
// codes). Keeping one copy of every query is what keeps the two stores from
// drifting apart; the conformance suite holds both to the same contract.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/store"
)

// Dialect is what differs between engines.
type Dialect struct {
	Name string
	// Numbered makes placeholders $1, $2 … instead of ?.
	Numbered bool
	// ForUpdate is appended to a SELECT that locks its rows ("" where the
	// whole database is locked by a write transaction anyway).
	ForUpdate string
	// SkipLocked is appended to a SELECT that claims work.
	SkipLocked string
	// ForShare is appended to a SELECT in a write transaction that must
	// wait for, and then see, a writer holding the table exclusively (""
	// where a write transaction locks the whole database anyway).
	ForShare string
	// LockExclusive returns the statement that locks a table against
	// ForShare readers until the transaction ends ("" where not needed).
	LockExclusive func(table string) string
	// Translate maps driver errors to store errors; it returns err unchanged
	// when it knows nothing better.
	Translate func(error) error
	// Prepare keeps prepared statements, for a driver that does not cache
	// them itself.
	Prepare bool
	// Retryable reports errors after which the whole transaction may be run
	// again (deadlocks, serialisation failures, a busy database).
	Retryable func(error) bool
	// OneWriter: a write transaction excludes every other writer until it
	// ends, so what it reads stays true until it writes (the authz epoch
	// is read once per batch).
	OneWriter bool
}

// DB is a store on database/sql. Writes go through W; reads outside a write
// transaction through R (the same pool for PostgreSQL, a separate read-only
// pool for SQLite, whose single writer would otherwise queue readers).
type DB struct {
	W, R *sql.DB
	D    Dialect

	mu    sync.Mutex
	stmts map[string]string // rebound queries, by source text

	group     *grouper // nil: every InTx is a transaction of its own
	closeOnce sync.Once
	atClose   []func() error

	// Statements prepared on the writer pool, for engines whose driver
	// does not cache them (Dialect.PrepareWrites).
	pmu       sync.Mutex
	prepared  map[stmtKey]*sql.Stmt
	preparing map[stmtKey]bool
}

// New wraps the pools.
func New(w, r *sql.DB, d Dialect) *DB {
	return &DB{W: w, R: r, D: d, stmts: map[string]string{}, prepared: map[stmtKey]*sql.Stmt{}, preparing: map[stmtKey]bool{}}
}

var _ store.Store = (*DB)(nil)

// q rebinds ? placeholders for the dialect, once per query text.
func (db *DB) q(query string) string {
	if !db.D.Numbered {
		return query
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if s, ok := db.stmts[query]; ok {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	db.stmts[query] = b.String()
	return b.String()
}

func (db *DB) translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// database/sql does not export its "closed" error; a store that was
	// closed under a request is unavailable, not broken.
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, errClosed) || strings.Contains(err.Error(), "sql: database is closed") {
		return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return db.D.Translate(err)
}

const maxAttempts = 8

// InTx runs fn in a read-write transaction, retrying it on transient
// conflicts.
func (db *DB) InTx(ctx context.Context, fn func(store.Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if db.group != nil {
			err = db.group.submit(ctx, fn)
		} else {
			err = db.run(ctx, db.W, false, fn)
		}
		if err == nil || !db.D.Retryable(err) {
			return db.translate(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	return db.translate(err)
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	return db.translate(db.run(ctx, db.R, true, fn))
}

func (db *DB) run(ctx context.Context, pool *sql.DB, readOnly bool, fn func(store.Tx) error) (err error) {
	sqltx, err := pool.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly && db.D.Name == "postgres"})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t := &tx{db: db, tx: sqltx, readOnly: readOnly, pool: pool}
	// Roll back on every way out but a commit, a panic in fn included:
	// a transaction left open would hold its connection, and with it, for
	// SQLite, the only writer.
	committed := false
	defer func() {
		if !committed {
			_ = sqltx.Rollback()
		}
	}()
	if err = fn(t); err != nil {
		return err
	}
	if err = t.flush(ctx); err != nil {
		return err
	}
	committed = true
	if err = sqltx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// stmt returns the pool's statement for a rebound query, or nil while it
// is being prepared. A transaction that uses it prepares it on its own
// connection the first time and reuses it after (database/sql keeps it per
// connection), instead of parsing the SQL on every execution. The first
// preparation runs in the background: preparing needs a free connection,
// and waiting for one while holding another could deadlock a full pool.
func (db *DB) stmt(pool *sql.DB, query string) *sql.Stmt {
	key := stmtKey{pool, query}
	db.pmu.Lock()
	defer db.pmu.Unlock()
	if st, ok := db.prepared[key]; ok {
		return st
	}
	if db.preparing[key] || len(db.prepared) > 2000 {
		return nil // multi-row inserts vary in length; keep the cache bounded
	}
	db.preparing[key] = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := pool.PrepareContext(ctx, query)
		db.pmu.Lock()
		defer db.pmu.Unlock()
		delete(db.preparing, key)
		if err == nil {
			db.prepared[key] = st
		}
	}()
	return nil
}

type stmtKey struct {
	pool  *sql.DB
	query string
}

// Ping checks both pools.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.W.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	if db.R != db.W {
		if err := db.R.PingContext(ctx); err != nil {
			return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
		}
	}
	return nil
}

// Close stops the committer and closes both pools.
func (db *DB) Close() error {
	var err error
	db.closeOnce.Do(func() { err = db.close() })
	return err
}

// AtClose registers fn to run on Close, after the last write and before
// the pools close: an engine's own background work.
func (db *DB) AtClose(fn func() error) { db.atClose = append(db.atClose, fn) }

func (db *DB) close() error {
	if db.group != nil {
		db.group.close()
	}
	var errs []error
	for _, fn := range db.atClose {
		errs = append(errs, fn())
	}
	db.pmu.Lock()
	for _, st := range db.prepared {
		_ = st.Close()
	}
	db.pmu.Unlock()
	errs = append(errs, db.W.Close())
	if db.R != db.W {
		errs = append(errs, db.R.Close())
	}
	return errors.Join(errs...)
}

// ScanAudit walks the history in seq order, in pages, so that memory stays
// flat however long the chain is.
func (db *DB) ScanAudit(ctx context.Context, after int64, fn func(audit.Event) error) error {
	return db.ScanAuditRange(ctx, after, math.MaxInt64, fn)
}

// ScanAuditRange walks the events with after < seq <= through in seq
// order, in pages, so that memory stays flat however long the chain is;
// verification walks disjoint ranges on several connections at once.
func (db *DB) ScanAuditRange(ctx context.Context, after, through int64, fn func(audit.Event) error) error {
	return db.eventPages(ctx, 10000, func(last *audit.Event) (string, []any) {
		if last != nil {
			after = last.Seq
		}
		return `SELECT ` + eventCols + ` FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`, []any{after, through}
	}, fn)
}

// eventPages walks events a page of at most page rows at a time: next
// gives each page's query (ending in LIMIT ?) and its arguments from the
// last event of the page before (nil for the first), so that memory stays
// flat however many events match.
func (db *DB) eventPages(ctx context.Context, page int, next func(last *audit.Event) (string, []any), fn func(audit.Event) error) error {
	var last *audit.Event
	var lastEv audit.Event // one variable: the page's last event does not escape per row
	for {
		query, args := next(last)
		rows, err := db.R.QueryContext(ctx, db.q(query), append(args, page)...)
		if err != nil {
			return db.translate(err)
		}
		n := 0
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return db.translate(err)
			}
			if err := fn(e); err != nil {
				rows.Close()
				return err
			}
			lastEv, last = e, &lastEv
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return db.translate(err)
		}
		if n < page {
			return nil
		}
	}
}

// AuditHashAt is the stored hash of the event at seq.
func (db *DB) AuditHashAt(ctx context.Context, seq int64) ([]byte, error) {
	var h []byte
	err := db.R.QueryRowContext(ctx, db.q(`SELECT hash FROM audit_events WHERE seq = ?`), seq).Scan(&h)
	return h, db.translate(err)
}

// AuditHead is the recorded end of the chain.
func (db *DB) AuditHead(ctx context.Context) (int64, []byte, error) {
	var seq int64
	var hash []byte
	err := db.R.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, db.translate(err)
}

// AuditAnchor is where verification starts.
func (db *DB) AuditAnchor(ctx context.Context) (audit.Anchor, error) {
	var a audit.Anchor
	err := db.R.QueryRowContext(ctx, `SELECT anchor_seq, anchor_hash FROM audit_head WHERE id = 1`).Scan(&a.Seq, &a.Hash)
	return a, db.translate(err)
}

// micros converts a time for storage; the zero time is NULL.
func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func must(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

func at(n int64) time.Time { return time.UnixMicro(n).UTC() }

func limit(n int) int {
	if n <= 0 || n > 1000 {
		return 1000
	}
	return n
}
