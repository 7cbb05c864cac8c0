package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
)

// Tx is what a policy change reads and writes.
type Tx interface {
	GetPolicy(ctx context.Context) (Policy, error)
	PutPolicy(ctx context.Context, p Policy, at time.Time, by opgate.OperatorID) (Policy, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// DB runs policy transactions.
type DB interface {
	InTx(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
}

// Load reads the stored policy (the default when none was ever saved).
func Load(ctx context.Context, db DB) (Policy, error) {
	var p Policy
	err := db.View(ctx, func(tx Tx) (err error) { p, err = tx.GetPolicy(ctx); return })
	return p, err
}

// Save validates p and stores it as the next version, with a
// policy.changed event holding the old and the new document (R4.1).
// Permission to change the policy is the caller's to check.
func Save(ctx context.Context, db DB, clk clock.Clock, by opgate.OperatorID, terminal opgate.TerminalID, p Policy) (Policy, error) {
	if err := p.Validate(); err != nil {
		return p, err
	}
	if clk == nil {
		clk = clock.Real{}
	}
	now := clk.Now()
	for attempt := 0; ; attempt++ {
		err := db.InTx(ctx, func(tx Tx) error {
			old, err := tx.GetPolicy(ctx)
			if err != nil {
				return err
			}
			if p, err = tx.PutPolicy(ctx, p, now, by); err != nil {
				return err
			}
			e := audit.Event{Type: audit.PolicyChanged, At: now, ActorID: by, TerminalID: terminal, Resource: fmt.Sprintf("policy:%d", p.Version)}
			e.Data = audit.D(map[string]any{"old": json.RawMessage(Encode(old)), "new": json.RawMessage(Encode(p))})
			_, err = tx.AppendAudit(ctx, e)
			return err
		})
		// Two concurrent saves race for the next version; the loser
		// retries on top of the winner.
		if errors.Is(err, opgate.ErrConflict) && attempt < 3 {
			continue
		}
		return p, err
	}
}
