package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/store"
)

// testMixedOutcomes runs many concurrent transactions, every other one
// failing after it wrote a row and an event. Stores that commit
// concurrent transactions together must keep them as separate as
// transactions of their own: every failure leaves nothing, every success
// everything, and the chain verifies.
func testMixedOutcomes(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := context.Background()
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	if err := s.InTx(ctx, func(tx store.Tx) error {
		return tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: now})
	}); err != nil {
		t.Fatal(err)
	}
	errPlanned := errors.New("planned failure")
	const n = 120
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i] = s.InTx(ctx, func(tx store.Tx) error {
				id := opgate.OperatorID(fmt.Sprintf("OP-%08d", i))
				if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: id, StaffNumber: fmt.Sprint(i), Name: "職員", SiteID: "honcho",
					EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now}); err != nil {
					return err
				}
				if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.OperatorIssued, At: now, OperatorID: id, Resource: "operator:" + string(id)}); err != nil {
					return err
				}
				if i%2 == 1 {
					return errPlanned
				}
				// Some transactions fail inside the database, after
				// their own writes: a duplicate staff number.
				if i%10 == 4 {
					return tx.CreateOperator(ctx, lifecycle.Operator{ID: id + "X", StaffNumber: fmt.Sprint(i), Name: "重複", SiteID: "honcho",
						EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now})
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range results {
		switch {
		case i%2 == 1 && !errors.Is(err, errPlanned):
			t.Errorf("tx %d: %v, want the planned failure", i, err)
		case i%10 == 4 && !errors.Is(err, store.ErrConflict):
			t.Errorf("tx %d: %v, want a conflict", i, err)
		case i%2 == 0 && i%10 != 4 && err != nil:
			t.Errorf("tx %d: %v", i, err)
		}
	}
	var ops []lifecycle.Operator
	var evs []audit.Event
	if err := s.View(ctx, func(tx store.Tx) (err error) {
		if ops, err = tx.ListOperators(ctx, lifecycle.OperatorFilter{Limit: 1000}); err != nil {
			return err
		}
		evs, err = tx.ListAudit(ctx, audit.Filter{Type: audit.OperatorIssued, Limit: 1000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range n {
		if i%2 == 0 && i%10 != 4 {
			want++
		}
	}
	if len(ops) != want || len(evs) != want {
		t.Fatalf("%d operators and %d events survived, want %d of each", len(ops), len(evs), want)
	}
	logged := map[opgate.OperatorID]bool{}
	for _, e := range evs {
		logged[e.OperatorID] = true
	}
	for _, o := range ops {
		if !logged[o.ID] {
			t.Errorf("operator %s committed without its event", o.ID)
		}
	}
	res, err := audit.VerifyChain(ctx, s)
	if err != nil || !res.OK {
		t.Fatalf("chain: %+v %v", res, err)
	}
}

// testHistoryReadThenFailure: a transaction that reads the history (which
// seals and writes the events pending before it, in a shared commit those
// of other callers too) and then fails takes back only its own work: the
// events of the caller committed with it before it stay, and the chain
// verifies. Both run in one commit where the store groups them.
func testHistoryReadThenFailure(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := context.Background()
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	// Keep every committer busy, so that the two callers below queue up
	// and are batched together: blockers start one by one until one waits.
	release := make(chan struct{})
	var busy sync.WaitGroup
	for range 16 {
		started := make(chan struct{})
		busy.Go(func() {
			_ = s.InTx(ctx, func(store.Tx) error {
				select {
				case <-started:
				default:
					close(started)
				}
				<-release
				return nil
			})
		})
		select {
		case <-started:
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	errPlanned := errors.New("planned failure")
	var first, second error
	var wg sync.WaitGroup
	wg.Go(func() {
		first = s.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.PolicyChanged, At: now, ActorID: "OP-FIRST", Reason: "kept"})
			return err
		})
	})
	time.Sleep(50 * time.Millisecond) // queued behind the first
	wg.Go(func() {
		second = s.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.PolicyChanged, At: now, ActorID: "OP-SECOND", Reason: "undone"}); err != nil {
				return err
			}
			if _, err := tx.ListAudit(ctx, audit.Filter{ActorID: "OP-FIRST"}); err != nil {
				return err
			}
			return errPlanned
		})
	})
	time.Sleep(50 * time.Millisecond)
	close(release)
	busy.Wait()
	wg.Wait()
	if first != nil || !errors.Is(second, errPlanned) {
		t.Fatalf("first %v, second %v", first, second)
	}
	var actors []opgate.OperatorID
	for _, e := range scanAll(t, s, 0) {
		actors = append(actors, e.ActorID)
	}
	diff(t, "events", []opgate.OperatorID{"OP-FIRST"}, actors)
	if err := verify(ctx, s); err != nil {
		t.Fatal(err)
	}
}

// testCloseAnswersEveryone: writers racing a Close are each answered,
// done or refused, however their requests and the close interleave.
func testCloseAnswersEveryone(t *testing.T, open func(*testing.T) Harness) {
	s := open(t).Store
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for s.InTx(ctx, func(store.Tx) error { return nil }) == nil {
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers still waiting ten seconds after Close")
	}
}
