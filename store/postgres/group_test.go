package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/store"
)

// TestCancelledCallerLeavesItsBatch: a caller whose client goes away
// while its statement waits on a row lock must not take down the batch it
// shares with others. pgx answers a cancelled statement by closing the
// connection, and with it the transaction every caller in the batch
// writes in; the batch runs its callers' statements without their
// cancellation instead.
func TestCancelledCallerLeavesItsBatch(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	if err := db.InTx(ctx, func(tx store.Tx) error {
		if err := tx.CreateSite(ctx, lifecycle.Site{ID: "honcho", Name: "本町", MunicipalityCode: "132152", CreatedAt: now}); err != nil {
			return err
		}
		return tx.CreateOperator(ctx, lifecycle.Operator{ID: "OP-LOCKED", StaffNumber: "1", Name: "職員", SiteID: "honcho",
			EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now})
	}); err != nil {
		t.Fatal(err)
	}
	// Another session holds the operator's row.
	holder, err := db.W.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	for _, q := range []string{`BEGIN`, `SELECT 1 FROM operators WHERE operator_id = 'OP-LOCKED' FOR UPDATE`} {
		if _, err := holder.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Every committer busy, one at a time, so that the callers below queue
	// up and are batched together once they are free.
	release := make(chan struct{})
	var busy sync.WaitGroup
	for range 4 {
		started := make(chan struct{})
		busy.Go(func() {
			_ = db.InTx(ctx, func(store.Tx) error { close(started); <-release; return nil })
		})
		<-started
	}
	victimCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, 11)
	var wg sync.WaitGroup
	wg.Go(func() {
		errs[0] = db.InTx(victimCtx, func(tx store.Tx) error {
			_, err := tx.GetOperatorForUpdate(victimCtx, "OP-LOCKED")
			return err
		})
	})
	for i := 1; i < len(errs); i++ {
		wg.Go(func() {
			errs[i] = db.InTx(ctx, func(tx store.Tx) error {
				_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.PolicyChanged, At: now, ActorID: "OP-X", Reason: "bystander"})
				return err
			})
		})
	}
	time.Sleep(100 * time.Millisecond) // all eleven queued
	close(release)
	busy.Wait()
	time.Sleep(100 * time.Millisecond) // the victim waits on the lock
	cancel()
	time.Sleep(100 * time.Millisecond)
	if _, err := holder.ExecContext(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("bystander %d failed with the cancelled caller: %v", i+1, err)
		}
	}
	if errs[0] != nil && !errors.Is(errs[0], context.Canceled) {
		t.Errorf("the cancelled caller: %v", errs[0])
	}
}
