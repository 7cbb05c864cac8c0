package report

import (
	"context"
	"encoding/hex"
	"errors"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/policy"
)

// PurgePlan says which events may go: those of each kind older than the
// kind's cutoff. Only a prefix of the chain can go, so a purge stops at
// the first event that must stay, whatever follows it.
type PurgePlan struct {
	Decisions, Logins, Other time.Time
}

// LoginTypes are the events kept for the login retention.
var LoginTypes = []audit.Type{audit.LoginSucceeded, audit.LoginFailed, audit.AccountLocked, audit.SessionEnded}

// Plan is the cutoffs for a purge asked to remove what is older than
// before, now: never younger than each kind's retention.
func Plan(p policy.Policy, before, now time.Time) PurgePlan {
	cut := func(keep time.Duration) time.Time {
		c := now.Add(-keep)
		if before.Before(c) {
			return before
		}
		return c
	}
	return PurgePlan{Decisions: cut(p.Retention.Decisions), Logins: cut(p.Retention.Logins), Other: cut(p.Retention.Other)}
}

// Purged is what a purge removed.
type Purged struct {
	Removed    int64
	ByType     map[string]int64
	AnchorSeq  int64 // the last removed event, where verification starts now
	AnchorHash []byte
	Oldest     time.Time // the oldest event left behind the new anchor
}

// PurgeTx removes the prefix of the history a plan allows, moving the
// chain's anchor to the last event removed.
type PurgeTx interface {
	PurgeAudit(ctx context.Context, p PurgePlan, at time.Time) (Purged, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// PurgeDB runs the purge's transaction.
type PurgeDB interface {
	InTx(ctx context.Context, fn func(PurgeTx) error) error
}

// ErrNothingToPurge is returned when no event is past its retention.
var ErrNothingToPurge = errors.New("report: nothing past retention")

// ErrChainBroken is returned, and nothing removed, when the history a
// purge would remove does not verify: removing it would erase the
// evidence and anchor on a forged hash.
var ErrChainBroken = errors.New("report: the history to purge does not verify; nothing was removed")

// Purge removes the history past retention and older than before, and
// records one audit.purged event saying what went, in the same
// transaction (R4.3). The chain stays verifiable: the store keeps the
// last removed event's seq and hash as the anchor verification starts
// from, and the purge event itself is chained after the head.
func Purge(ctx context.Context, db PurgeDB, p policy.Policy, before, now time.Time, by opgate.OperatorID) (Purged, error) {
	plan := Plan(p, before, now)
	var out Purged
	err := db.InTx(ctx, func(tx PurgeTx) (err error) {
		if out, err = tx.PurgeAudit(ctx, plan, now); err != nil {
			return err
		}
		if out.Removed == 0 {
			return ErrNothingToPurge
		}
		types := map[string]any{}
		for k, v := range out.ByType {
			types[k] = v
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.AuditPurged, At: now, ActorID: by, Resource: "audit",
			Reason: "retention", Data: audit.D(map[string]any{"removed": out.Removed, "by_type": types, "anchor_seq": out.AnchorSeq, "anchor_hash": hex.EncodeToString(out.AnchorHash),
				"before": before.UTC().Format(time.RFC3339), "cutoff_decisions": plan.Decisions.UTC().Format(time.RFC3339),
				"cutoff_logins": plan.Logins.UTC().Format(time.RFC3339), "cutoff_other": plan.Other.UTC().Format(time.RFC3339)})})
		return err
	})
	if errors.Is(err, ErrNothingToPurge) {
		return out, nil
	}
	return out, err
}
