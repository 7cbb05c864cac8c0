package authn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
)

// needsPassword reports whether card logins must also give the password.
func needsPassword(p policy.Policy) bool {
	return !p.Allows(policy.MethodCard) && p.Allows(policy.MethodCardPassword)
}

// cardOutcome is what judging a card inside the login transaction found.
type cardOutcome struct {
	card      Card
	found     bool // a card with that credential exists
	mismatch  bool // it belongs to another operator than the one named
	op        lifecycle.Operator
	lock      lifecycle.Lock
	assertion Assertion
	ceremony  error // the card was judged and refused
	locked    error // a lock in force: nothing was judged
	login     Login // set on success
	refused   error // refused after a right card (terminal, status, stop)
	reason    string
	counted   bool // a judged failure, counted against the operator
	nowLocked bool
}

// finishCardInTx judges a card inside the one transaction that records the
// outcome: the operator's row is locked (a row lock, or SQLite's single
// writer) before the lock state is read and the signature checked, so
// attempts at one operator are judged one at a time on every replica, and
// the success or failure commits with its audit event. A card's signature
// costs a fraction of a millisecond, so holding the lock for it costs
// little; a password (argon2id) is never judged here.
func (l *Logins) finishCardInTx(ctx context.Context, c Client, st loginState, credential []byte, p policy.Policy, now time.Time) (Login, error) {
	// What the decision needs besides the card, read before the write
	// transaction so that it holds nothing while reading.
	var t lifecycle.Terminal
	err := l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
		t, err = tx.GetTerminal(ctx, c.TerminalID)
		if errors.Is(err, opgate.ErrNotFound) {
			t, err = lifecycle.Terminal{}, nil
		}
		return err
	})
	if err != nil {
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	stopped, err := l.stopped(ctx, t)
	if err != nil {
		return Login{}, err
	}
	var out cardOutcome
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		out = cardOutcome{}
		var lookupErr error
		out.assertion, out.ceremony = l.cfg.Ceremonies.FinishLogin(st.Ceremony, credential, func(credID, _ []byte) (StoredCredential, error) {
			card, err := tx.GetCardByCredential(ctx, credID)
			if errors.Is(err, opgate.ErrNotFound) {
				return StoredCredential{}, ErrUnknownCredential
			}
			if err != nil {
				lookupErr = err
				return StoredCredential{}, err
			}
			out.card, out.found = card, true
			if st.Operator != "" && card.OperatorID != st.Operator {
				out.mismatch = true
				return StoredCredential{}, ErrUnknownCredential
			}
			if out.op, err = tx.GetOperatorForUpdate(ctx, card.OperatorID); err != nil {
				lookupErr = err
				return StoredCredential{}, err
			}
			if out.lock, err = tx.GetLock(ctx, card.OperatorID); err != nil {
				lookupErr = err
				return StoredCredential{}, err
			}
			if out.lock.Locked(now) {
				out.locked = &LockedError{Until: out.lock.Until}
				return StoredCredential{}, out.locked
			}
			return StoredCredential{OperatorID: card.OperatorID, CredentialID: card.CredentialID, PublicKey: card.PublicKey,
				AAGUID: card.AAGUID, SignCount: card.SignCount, Flags: card.Flags}, nil
		})
		switch {
		case lookupErr != nil:
			return lookupErr
		case out.locked != nil:
			_, err := tx.AppendAudit(ctx, refusalEvent(out.op.ID, c, ReasonLocked, "card:"+string(out.card.ID), now))
			return err
		case out.op.ID == "":
			// No operator to count against: an unknown card, a card of
			// another operator than the one named, or a malformed answer.
			out.reason = ReasonUnknownCard
			if out.mismatch {
				out.reason = ReasonOtherOperatorsCard
			} else if ce, ok := errors.AsType[*CeremonyError](out.ceremony); ok && ce.Reason != CeremonyUnknownCredential {
				out.reason = ce.Reason
			}
			_, err := tx.AppendAudit(ctx, unknownEvent(c, st.Operator, out.reason, now))
			return err
		case out.ceremony != nil || out.card.Status != CardActive:
			out.reason = "card_" + string(out.card.Status)
			clone := false
			if ce, ok := errors.AsType[*CeremonyError](out.ceremony); ok {
				out.reason, clone = ce.Reason, ce.Reason == CeremonySignCountRegressed
			} else if out.ceremony != nil {
				out.reason = "ceremony_failed"
			}
			var err error
			out.counted = true
			out.lock, out.nowLocked, err = l.failIn(ctx, tx, p.Lockout, out.op, out.lock, "", c, out.reason, out.card, clone, now)
			return err
		}
		// The card is right. What remains is whether this operator may log
		// in here and now; a refusal is audited, not counted.
		o := out.op
		var err error
		if out.refused, out.reason, err = l.refusal(ctx, o, t, stopped, now); err != nil {
			return err
		}
		if out.refused != nil {
			_, err := tx.AppendAudit(ctx, refusalEvent(o.ID, c, out.reason, "card:"+string(out.card.ID), now))
			return err
		}
		iss, err := l.succeedIn(ctx, tx, o, Succeed(out.lock, ""), t, &out.card, out.assertion.SignCount, []string{"hwk", "user"}, false, c, now)
		out.login = Login{Issued: iss}
		return err
	})
	if err != nil {
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	switch {
	case out.locked != nil:
		return Login{}, out.locked
	case out.op.ID == "":
		l.spray(ctx, c, st.Operator, now, p.Lockout)
		return Login{}, ErrInvalidCredentials
	case out.counted:
		l.spray(ctx, c, out.op.ID, now, p.Lockout)
		if out.nowLocked {
			return Login{}, &LockedError{Until: out.lock.Until}
		}
		return Login{}, ErrInvalidCredentials
	case out.refused != nil:
		return Login{}, out.refused
	}
	if out.login.Issued, err = l.cfg.Sessions.Activate(ctx, out.login.Issued); err != nil {
		return Login{}, err
	}
	return out.login, nil
}
