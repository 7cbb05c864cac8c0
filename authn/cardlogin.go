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

// finishCardInTx judges a card in two steps. The signature, the client
// data and the authenticator data are checked first, outside any write
// transaction: a card's public key never changes, so that work (the bulk
// of a login's CPU) runs on the request's own goroutine, beside other
// logins. What can change between two attempts (the card's status and
// counter, the operator's status and lock) is then read and judged inside
// the one transaction that records the outcome, with the operator's row
// locked (a row lock, or SQLite's single writer) first: attempts at one
// operator are judged one at a time on every replica, a counter that did
// not increase since the last committed login is caught however the
// attempts interleave, and the success or failure commits with its audit
// event. A password (argon2id) is never judged here.
func (l *Logins) finishCardInTx(ctx context.Context, c Client, st loginState, credential []byte, p policy.Policy, now time.Time) (Login, error) {
	// The terminal and the card are read in one read transaction, when
	// the ceremony names the credential.
	var (
		t         lifecycle.Terminal
		pre       Card
		found     bool
		mismatch  bool
		lookupErr error
	)
	assertion, ceremony := l.cfg.Ceremonies.FinishLogin(st.Ceremony, credential, func(credID, _ []byte) (StoredCredential, error) {
		lookupErr = l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
			if t, err = tx.GetTerminal(ctx, c.TerminalID); errors.Is(err, opgate.ErrNotFound) {
				t, err = lifecycle.Terminal{}, nil
			}
			if err != nil {
				return err
			}
			if pre, err = tx.GetCardByCredential(ctx, credID); err == nil {
				found = true
			} else if errors.Is(err, opgate.ErrNotFound) {
				err = nil
			}
			return err
		})
		switch {
		case lookupErr != nil:
			return StoredCredential{}, lookupErr
		case !found:
			return StoredCredential{}, ErrUnknownCredential
		case st.Operator != "" && pre.OperatorID != st.Operator:
			mismatch = true
			return StoredCredential{}, ErrUnknownCredential
		}
		return StoredCredential{OperatorID: pre.OperatorID, CredentialID: pre.CredentialID, PublicKey: pre.PublicKey,
			AAGUID: pre.AAGUID, SignCount: pre.SignCount, Flags: pre.Flags}, nil
	})
	if lookupErr != nil {
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, lookupErr)
	}
	if !found || mismatch {
		// A ceremony that named no known credential never read the
		// terminal; the refusal below does not need it.
		t = lifecycle.Terminal{}
	}
	var out cardOutcome
	err := l.cfg.DB.InTx(ctx, func(tx LoginTx) (err error) {
		out = cardOutcome{assertion: assertion, ceremony: ceremony, mismatch: mismatch}
		if found && !mismatch {
			if out.op, err = tx.GetOperatorForUpdate(ctx, pre.OperatorID); err != nil {
				return err
			}
			switch out.card, err = tx.GetCardByCredential(ctx, pre.CredentialID); {
			case errors.Is(err, opgate.ErrNotFound):
				// Deleted since it was read: unknown now.
				out.op = lifecycle.Operator{}
			case err != nil:
				return err
			default:
				out.found = true
				if out.lock, err = tx.GetLock(ctx, pre.OperatorID); err != nil {
					return err
				}
				if out.lock.Locked(now) {
					out.locked = &LockedError{Until: out.lock.Until}
				}
			}
		}
		if out.ceremony == nil && out.found && counterRegressed(out.assertion.SignCount, out.card.SignCount) {
			// Another login of this card committed a counter at least as
			// high after the signature was checked against the older one.
			out.ceremony = refuse(CeremonySignCountRegressed)
		}
		switch {
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
		// in here and now — the operator as locked here, the emergency
		// stops as this transaction sees them; a refusal is audited, not
		// counted.
		o := out.op
		stopped, err := l.stoppedIn(ctx, tx, t)
		if err != nil {
			return err
		}
		if out.refused, out.reason, err = l.refusal(ctx, o, t, stopped, now); err != nil {
			return err
		}
		if out.refused != nil {
			_, err := tx.AppendAudit(ctx, refusalEvent(o.ID, c, out.reason, "card:"+string(out.card.ID), now))
			return err
		}
		iss, err := l.succeedIn(ctx, tx, o, out.lock, "", t, &out.card, out.assertion.SignCount, []string{"hwk", "user"}, false, c, now)
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

// counterRegressed is WebAuthn §7.2 step 17 as go-webauthn applies it: a
// signature counter that is not zero on both sides must increase.
func counterRegressed(got, stored uint32) bool {
	return got <= stored && (got != 0 || stored != 0)
}
