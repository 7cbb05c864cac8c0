package authn

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
)

func lockoutPolicy() policy.Lockout {
	p := policy.Default().Lockout
	p.Threshold, p.Window, p.Duration, p.PermanentAfter = 3, 10*time.Minute, 30*time.Minute, 2
	return p
}

// attempt reserves a slot and records a failure, as a login does.
func attempt(t *testing.T, p policy.Lockout, l lifecycle.Lock, now time.Time) (lifecycle.Lock, bool, error) {
	t.Helper()
	id := fmt.Sprint(now.UnixNano())
	l, err := Reserve(p, l, id, now)
	if err != nil {
		return l, false, err
	}
	l, locked := Fail(p, l, id, now)
	return l, locked, nil
}

func TestLockoutLocksAtThreshold(t *testing.T) {
	p := lockoutPolicy()
	t0 := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	var l lifecycle.Lock
	for i := range 3 {
		var locked bool
		var err error
		l, locked, err = attempt(t, p, l, t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if locked != (i == 2) {
			t.Fatalf("attempt %d: locked=%v", i, locked)
		}
	}
	if got, want := l.Until, t0.Add(2*time.Second+30*time.Minute); !got.Equal(want) {
		t.Fatalf("until %v, want %v", got, want)
	}
	// While locked nothing is judged.
	if _, err := Reserve(p, l, "x", t0.Add(time.Minute)); !isLocked(err) {
		t.Fatalf("reserve while locked: %v", err)
	}
	// At the lock's end, attempts are judged again.
	if _, err := Reserve(p, l, "x", l.Until); err != nil {
		t.Fatalf("reserve after the lock: %v", err)
	}
}

func isLocked(err error) bool {
	_, ok := errors.AsType[*LockedError](err)
	return ok
}

func TestLockoutSlidingWindow(t *testing.T) {
	// Failures spread so that no window holds threshold of them never
	// lock; failures bunched across a window boundary do (a fixed window
	// would let an attacker guess almost twice as often).
	p := lockoutPolicy()
	t0 := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		at     []time.Duration
		locked bool
	}{
		{"spread beyond the window", []time.Duration{0, 6 * time.Minute, 12 * time.Minute, 18 * time.Minute}, false},
		{"two early and one late inside the window", []time.Duration{0, 1 * time.Minute, 9 * time.Minute}, true},
		{"across a fixed window's boundary", []time.Duration{9 * time.Minute, 10*time.Minute + time.Second, 11 * time.Minute}, true},
		{"exactly window apart does not count", []time.Duration{0, 5 * time.Minute, 10 * time.Minute}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l lifecycle.Lock
			locked := false
			for _, d := range tc.at {
				var lk bool
				var err error
				l, lk, err = attempt(t, p, l, t0.Add(d))
				if err != nil {
					t.Fatal(err)
				}
				locked = locked || lk
			}
			if locked != tc.locked {
				t.Fatalf("locked=%v, want %v", locked, tc.locked)
			}
		})
	}
}

func TestLockoutEscalatesToPermanent(t *testing.T) {
	p := lockoutPolicy() // permanent after 2 temporary locks in a row
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	var l lifecycle.Lock
	for lock := 1; lock <= 3; lock++ {
		for range p.Threshold {
			var err error
			if l, _, err = attempt(t, p, l, now); err != nil {
				t.Fatalf("lock %d: %v", lock, err)
			}
			now = now.Add(time.Second)
		}
		if lock < 3 && (l.Permanent || l.Until.IsZero()) {
			t.Fatalf("lock %d should be temporary: %+v", lock, l)
		}
		if lock == 3 && !l.Permanent {
			t.Fatalf("third lock should be permanent: %+v", l)
		}
		now = l.Until.Add(time.Second)
	}
	if _, err := Reserve(p, l, "x", now.Add(365*24*time.Hour)); !isLocked(err) {
		t.Fatalf("a permanent lock lifted itself: %v", err)
	}
	// A success resets the row of locks.
	l = Succeed(lifecycle.Lock{LocksInRow: 2, Recent: []time.Time{now}}, "x")
	if l.LocksInRow != 0 || len(l.Recent) != 0 {
		t.Fatalf("success kept %+v", l)
	}
}

func TestLockoutReservationsCapConcurrentJudging(t *testing.T) {
	p := lockoutPolicy()
	now := time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)
	var l lifecycle.Lock
	var err error
	l, _, _ = attempt(t, p, l, now) // one failure in the window
	// Two more may be judged at once; a third must wait.
	if l, err = Reserve(p, l, "a", now); err != nil {
		t.Fatal(err)
	}
	if l, err = Reserve(p, l, "b", now); err != nil {
		t.Fatal(err)
	}
	if _, err = Reserve(p, l, "c", now); !errors.Is(err, ErrBusy) {
		t.Fatalf("third concurrent slot: %v", err)
	}
	// An abandoned attempt frees its slot without counting.
	l = Abandon(l, "a")
	if len(l.Recent) != 1 {
		t.Fatalf("abandon counted: %+v", l)
	}
	if _, err = Reserve(p, l, "c", now); err != nil {
		t.Fatalf("slot after abandon: %v", err)
	}
	// A slot whose holder died is freed after its TTL.
	if _, err = Reserve(p, l, "d", now.Add(reservationTTL)); err != nil {
		t.Fatalf("slot after TTL: %v", err)
	}
}
