package memory

import (
	"fmt"
	"testing"
	"time"

	"github.com/opgate/opgate/internal/clock/clocktest"
)

// TestSweep checks that expired keys nobody reads again are collected by
// later writes, so the map does not grow without bound.
func TestSweep(t *testing.T) {
	clk := clocktest.New()
	s := New(Config{Clock: clk})
	ctx := t.Context()
	const n = 10_000
	for i := range n {
		if err := s.Put(ctx, fmt.Sprint("old:", i), []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	for i := range n {
		if _, err := s.Incr(ctx, fmt.Sprint("new:", i), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	got := len(s.entries)
	s.mu.Unlock()
	if got > n {
		t.Errorf("%d entries after %d old keys expired and %d new were written, want at most %d", got, n, n, n)
	}
}
