package policy

import (
	"context"
	"sync"
	"time"

	"github.com/opgate/opgate/internal/clock"
)

// Source keeps the policy in force in memory and reloads it from the store
// after MaxAge, so that every request does not read the store and a change
// made on another replica holds everywhere within MaxAge. The replica that
// makes a change calls Set and sees it at once.
type Source struct {
	load   func(ctx context.Context) (Policy, error)
	clk    clock.Clock
	maxAge time.Duration

	mu     sync.Mutex
	cur    Policy
	loaded time.Time
	ok     bool
}

// NewSource returns a Source. maxAge of zero means two seconds.
func NewSource(load func(ctx context.Context) (Policy, error), clk clock.Clock, maxAge time.Duration) *Source {
	if clk == nil {
		clk = clock.Real{}
	}
	if maxAge <= 0 {
		maxAge = 2 * time.Second
	}
	return &Source{load: load, clk: clk, maxAge: maxAge}
}

// Policy returns the policy in force.
func (s *Source) Policy(ctx context.Context) (Policy, error) {
	now := s.clk.Now()
	s.mu.Lock()
	if s.ok && now.Sub(s.loaded) < s.maxAge && !now.Before(s.loaded) {
		p := s.cur
		s.mu.Unlock()
		return p, nil
	}
	s.mu.Unlock()
	p, err := s.load(ctx)
	if err != nil {
		return Policy{}, err
	}
	s.Set(p)
	return p, nil
}

// Set makes p the policy in force on this replica now.
func (s *Source) Set(p Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ok && p.Version < s.cur.Version {
		return // a slower reload must not undo a newer change
	}
	s.cur, s.loaded, s.ok = p, s.clk.Now(), true
}
