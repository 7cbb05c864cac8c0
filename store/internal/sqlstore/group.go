package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/store"
)

// Group commit. Every write transaction ends by taking the audit chain's
// head lock and making its commit durable, and no other writer can seal
// events until that commit returns: one commit at a time, each waiting for
// the disk. To make durability not cost one disk flush per change, write
// transactions from concurrent callers are run one after another inside one
// database transaction and committed together. Each caller's function runs
// under its own savepoint, taken lazily at its first statement, so a
// function that fails is rolled back alone, exactly as if it had run in a
// transaction of its own; the others commit. Callers are answered only
// after the shared commit, so nobody is told "done" before the disk has it.

// maxGroup bounds a batch; PostgreSQL keeps up to 64 subtransactions of a
// transaction in shared memory and slows every snapshot beyond that.
const maxGroup = 60

type request struct {
	ctx  context.Context
	fn   func(store.Tx) error
	done chan error
}

type grouper struct {
	db    *DB
	queue chan request
	stop  chan struct{}
	wg    sync.WaitGroup
	// stopped is closed once no committer runs and the queue has been
	// answered: a request queued after that is answered by its caller.
	stopped chan struct{}
}

// EnableGroupCommit starts n committers, each batching on a connection
// of its own. One suits an engine with one writer (SQLite); several let a
// server with row locks (PostgreSQL) run batches' statements side by side,
// while the chain's head lock still orders their commits. Call it once,
// before use; Close stops them.
func (db *DB) EnableGroupCommit(n int) {
	g := &grouper{db: db, queue: make(chan request, 1024), stop: make(chan struct{}), stopped: make(chan struct{})}
	for range max(n, 1) {
		g.wg.Add(1)
		go g.loop()
	}
	db.group = g
}

var errClosed = errors.New("sqlstore: store closed")

func (g *grouper) submit(ctx context.Context, fn func(store.Tx) error) error {
	r := request{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case g.queue <- r:
	case <-g.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the request is answered whatever the caller's context
	// does: it may already be inside a commit. A select may queue it even
	// after stop was closed, when no committer is left to read it; the
	// last drain answers it, or, queued later still, nobody will.
	select {
	case err := <-r.done:
		return err
	case <-g.stopped:
		select {
		case err := <-r.done:
			return err
		default:
			return errClosed
		}
	}
}

// gatherWait is how long a batch waits for callers that were in the last
// batch to come back, when they have not yet. Writers answered by one
// commit usually submit again within microseconds; waiting for them a
// little makes the next commit carry them all (PostgreSQL's commit_delay,
// done where the chain's lock is taken).
const gatherWait = 300 * time.Microsecond

func (g *grouper) loop() {
	defer g.wg.Done()
	last := 1
	for {
		var first request
		select {
		case first = <-g.queue:
		case <-g.stop:
			g.drain()
			return
		}
		batch := []request{first}
		var deadline <-chan time.Time
	collect:
		for len(batch) < maxGroup {
			select {
			case r := <-g.queue:
				batch = append(batch, r)
				continue
			default:
			}
			if len(batch) >= last || deadline == nil && last <= 1 {
				break
			}
			if deadline == nil {
				deadline = time.After(gatherWait)
			}
			select {
			case r := <-g.queue:
				batch = append(batch, r)
			case <-deadline:
				break collect
			}
		}
		last = len(batch)
		g.run(batch)
	}
}

func (g *grouper) drain() {
	for {
		select {
		case r := <-g.queue:
			r.done <- errClosed
		default:
			return
		}
	}
}

func (g *grouper) close() {
	close(g.stop)
	g.wg.Wait()
	g.drain()
	close(g.stopped)
}

func (g *grouper) run(batch []request) {
	db := g.db
	results := make([]error, len(batch))
	fail := func(err error) {
		for _, r := range batch {
			r.done <- err
		}
	}
	sqltx, err := db.W.BeginTx(context.Background(), nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	t := &tx{db: db, tx: sqltx, pool: db.W, grouped: true}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		mark := t.mark()
		t.savepoint = fmt.Sprintf("g%d", i)
		err := runFn(r.fn, t)
		t.savepoint = ""
		if err == nil {
			continue
		}
		results[i] = err
		if rerr := t.undo(r.ctx, mark); rerr != nil {
			// The shared transaction cannot be trusted any more: nobody
			// in the batch commits.
			_ = sqltx.Rollback()
			fail(fmt.Errorf("group rollback: %w", rerr))
			return
		}
	}
	// No caller is undone past this point: the batch commits or fails
	// whole. Releasing the outermost savepoint (and with it every later
	// one) spares the history's writes below a copy of each page they
	// touch into SQLite's statement journal, kept for a rollback to a
	// savepoint that can no longer happen.
	if t.firstSP != "" {
		if _, err := sqltx.ExecContext(context.Background(), "RELEASE SAVEPOINT "+t.firstSP); err != nil {
			_ = sqltx.Rollback()
			fail(fmt.Errorf("group release: %w", err))
			return
		}
	}
	if err := t.flush(context.Background()); err != nil {
		_ = sqltx.Rollback()
		fail(err)
		return
	}
	if err := sqltx.Commit(); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// runFn runs one caller's function, turning a panic into an error for that
// caller alone.
func runFn(fn func(store.Tx) error, t *tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("sqlstore: transaction function panicked: %v", v)
		}
	}()
	return fn(t)
}

// txMark is what undo restores.
type txMark struct {
	// pending is the events of the callers before this one, as they were:
	// a read of the history inside this caller's function may have sealed
	// and written them under its savepoint, and rolling that back takes
	// them out of the database again, so they must be pending once more.
	// (Sealing makes new values; this slice's elements never change.)
	pending    []audit.Event
	headLocked bool
	headSeq    int64
	headHash   []byte
}

func (t *tx) mark() txMark {
	t.spTaken = false
	return txMark{t.pending[:len(t.pending):len(t.pending)], t.headLocked, t.headSeq, t.headHash}
}

// undo rolls one caller's work back to its savepoint.
func (t *tx) undo(ctx context.Context, m txMark) error {
	t.epochOK = false
	if t.spTaken {
		if _, err := t.tx.ExecContext(context.Background(), "ROLLBACK TO SAVEPOINT "+t.lastSP); err != nil {
			return err
		}
	}
	t.pending = m.pending
	t.headLocked, t.headSeq, t.headHash = m.headLocked, m.headSeq, m.headHash
	return nil
}

// beforeStatement takes the caller's savepoint the first time its function
// touches the database.
func (t *tx) beforeStatement() error {
	if t.savepoint == "" || t.spTaken {
		return nil
	}
	if _, err := t.tx.ExecContext(context.Background(), "SAVEPOINT "+t.savepoint); err != nil {
		return err
	}
	t.spTaken, t.lastSP = true, t.savepoint
	if t.firstSP == "" {
		t.firstSP = t.savepoint
	}
	return nil
}
