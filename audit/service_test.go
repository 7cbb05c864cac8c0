package audit

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// memChain is an in-memory stored chain, with the range reads that let
// VerifyChain walk parts at once.
type memChain struct {
	events []Event // events[i].Seq == i+1
	head   Event
}

func (m *memChain) ScanAudit(ctx context.Context, after int64, fn func(Event) error) error {
	return m.ScanAuditRange(ctx, after, 1<<62, fn)
}

func (m *memChain) ScanAuditRange(_ context.Context, after, through int64, fn func(Event) error) error {
	for _, e := range m.events {
		if e.Seq > after && e.Seq <= through {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memChain) AuditHashAt(_ context.Context, seq int64) ([]byte, error) {
	for _, e := range m.events {
		if e.Seq == seq {
			return e.Hash, nil
		}
	}
	return nil, fmt.Errorf("no event %d", seq)
}

func (m *memChain) AuditHead(context.Context) (int64, []byte, error) {
	return m.head.Seq, m.head.Hash, nil
}
func (m *memChain) AuditAnchor(context.Context) (Anchor, error) { return Anchor{}, nil }

func newMemChain(n int) *memChain {
	m := &memChain{}
	prevSeq, prev := int64(0), Genesis
	at := time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		e := Seal(Event{At: at.Add(time.Duration(i) * time.Millisecond), Type: LoginSucceeded, OperatorID: "OP-1", Resource: fmt.Sprint("session:", i)}, prevSeq, prev)
		m.events = append(m.events, e)
		prevSeq, prev = e.Seq, e.Hash
	}
	m.head = m.events[n-1]
	return m
}

// TestVerifyChainInParts checks that the walk in parts finds what one walk
// finds, wherever the damage is, including right at a cut point.
func TestVerifyChainInParts(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one processor: the chain is walked in one part")
	}
	const n = 3 * minPart
	parts := min(runtime.GOMAXPROCS(0), n/minPart)
	cut := int64(n / parts) // the first cut point
	for _, tc := range []struct {
		name   string
		tamper func(m *memChain)
		bad    int64 // 0: intact
	}{
		{"intact", func(*memChain) {}, 0},
		{"changed in the first part", func(m *memChain) { m.events[99].Reason = "x" }, 100},
		{"changed in the last part", func(m *memChain) { m.events[n-10].Reason = "x" }, n - 9},
		{"changed at the cut point", func(m *memChain) { m.events[cut-1].Reason = "x" }, cut},
		{"changed just after the cut point", func(m *memChain) { m.events[cut].Reason = "x" }, cut + 1},
		{"hash rewritten at the cut point", func(m *memChain) { m.events[cut-1].Hash = make([]byte, HashSize) }, cut},
		{"tail cut off", func(m *memChain) { m.events = m.events[:n-5] }, n - 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemChain(n)
			tc.tamper(m)
			res, err := VerifyChain(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != (tc.bad == 0) || res.FirstBadSeq != tc.bad {
				t.Fatalf("got ok=%v first bad %d (%s), want first bad %d", res.OK, res.FirstBadSeq, res.Problem, tc.bad)
			}
			if tc.bad == 0 && res.Events != n {
				t.Fatalf("verified %d events, want %d", res.Events, n)
			}
		})
	}
}
