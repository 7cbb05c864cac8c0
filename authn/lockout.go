package authn

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
)

// LockedError is returned while an operator's login lock is in force.
// Until is zero for a lock only a chief lifts.
type LockedError struct {
	Until time.Time
}

func (e *LockedError) Error() string {
	if e.Until.IsZero() {
		return "authn: account locked until a chief unlocks it"
	}
	return fmt.Sprintf("authn: account locked until %s", e.Until.Format(time.RFC3339))
}

// ErrBusy means as many attempts as the lockout still allows are being
// judged right now; the attempt is refused unjudged and may be retried in
// a moment. It keeps concurrent guessing from exceeding the threshold.
var ErrBusy = errors.New("authn: too many login attempts in progress for this operator")

// reservationTTL bounds how long an attempt slot is held: a replica that
// dies while judging frees its slot after this.
const reservationTTL = 30 * time.Second

// Reserve takes an attempt slot before a credential is judged (R2.4). It
// refuses while a lock is in force, and while the failures already in the
// window plus the attempts being judged reach the threshold, so that even
// a flood of concurrent attempts, on any number of replicas, gets exactly
// threshold credentials judged before the lock.
func Reserve(p policy.Lockout, l lifecycle.Lock, id string, now time.Time) (lifecycle.Lock, error) {
	if l.Locked(now) {
		return l, &LockedError{Until: l.Until}
	}
	l = prune(p, l, now)
	if len(l.Recent)+len(l.Pending) >= p.Threshold {
		return l, ErrBusy
	}
	l.Pending = append(l.Pending, lifecycle.Reservation{ID: id, Until: now.Add(reservationTTL)})
	return l, nil
}

// prune forgets failures outside the window and slots past their TTL.
func prune(p policy.Lockout, l lifecycle.Lock, now time.Time) lifecycle.Lock {
	cut := now.Add(-p.Window)
	l.Recent = slices.DeleteFunc(slices.Clone(l.Recent), func(t time.Time) bool { return !t.After(cut) })
	l.Pending = slices.DeleteFunc(slices.Clone(l.Pending), func(r lifecycle.Reservation) bool { return !now.Before(r.Until) })
	return l
}

func release(l lifecycle.Lock, id string) lifecycle.Lock {
	l.Pending = slices.DeleteFunc(slices.Clone(l.Pending), func(r lifecycle.Reservation) bool { return r.ID == id })
	return l
}

// Succeed records a successful login: the slot is freed, and failures and
// the count of locks in a row start again.
func Succeed(l lifecycle.Lock, id string) lifecycle.Lock {
	l = release(l, id)
	l.Recent, l.LocksInRow, l.Until, l.Permanent = nil, 0, time.Time{}, false
	return l
}

// lockClear reports whether l records nothing: no failure, no attempt in
// progress, no lock.
func lockClear(l lifecycle.Lock) bool {
	return len(l.Recent) == 0 && len(l.Pending) == 0 && l.Until.IsZero() && !l.Permanent && l.LocksInRow == 0
}

// Fail records a judged failure. At the threshold the operator is locked
// for the policy's duration; when permanent_after temporary locks are
// already in the row, the lock lasts until a chief unlocks.
func Fail(p policy.Lockout, l lifecycle.Lock, id string, now time.Time) (next lifecycle.Lock, locked bool) {
	l = prune(p, release(l, id), now)
	l.Recent = append(l.Recent, now)
	if len(l.Recent) < p.Threshold {
		return l, false
	}
	l.Recent = nil
	if l.LocksInRow >= p.PermanentAfter {
		l.Permanent, l.Until = true, time.Time{}
	} else {
		l.Until = now.Add(p.Duration)
	}
	l.LocksInRow++
	return l, true
}

// Abandon frees a slot whose attempt was not judged (the store or the
// ephemeral state failed): nothing is counted against the operator.
func Abandon(l lifecycle.Lock, id string) lifecycle.Lock { return release(l, id) }
