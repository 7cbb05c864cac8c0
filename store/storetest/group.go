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
