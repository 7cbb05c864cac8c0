package audit

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/opgate/opgate"
)

// benchEvents is the size of the history walked per iteration: enough that
// a verify run over a municipal deployment's year is measured, not a cache.
const benchEvents = 100_000

// realistic returns an event with the field sizes the stores see: a type of
// about 15 bytes, ids of 11, a resource of 20, a reason of 40 and about 120
// bytes of JSON data.
func realistic(i int) Event {
	return Event{
		At:         t0.Add(time.Duration(i) * 1500 * time.Millisecond),
		Type:       GrantRequested,                                           // 15
		ActorID:    opgate.OperatorID(fmt.Sprintf("OP-%08d", i%523)),         // 11
		OperatorID: opgate.OperatorID(fmt.Sprintf("OP-%08d", (i*7)%5003)),    // 11
		SiteID:     opgate.SiteID(fmt.Sprintf("ST-%08d", i%17)),              // 11
		TerminalID: opgate.TerminalID(fmt.Sprintf("TM-%08d", i%211)),         // 11
		Resource:   fmt.Sprintf("grant:G-%012d", i),                          // 20
		Reason:     fmt.Sprintf("temporary cover for leave, ticket %06d", i), // 40
		Data: D(map[string]any{ // ~120
			"role":      "registry-clerk",
			"scope":     "site",
			"site":      fmt.Sprintf("ST-%08d", i%17),
			"not_after": "2025-06-30T23:59:59Z",
			"approver":  fmt.Sprintf("OP-%08d", (i*3)%523),
		}),
	}
}

func sealedChain(n int) []Event {
	evs := make([]Event, n)
	seq, prev := int64(0), Genesis
	for i := range evs {
		evs[i] = Seal(realistic(i), seq, prev)
		seq, prev = evs[i].Seq, evs[i].Hash
	}
	return evs
}

func BenchmarkVerify(b *testing.B) {
	evs := sealedChain(benchEvents)
	head := evs[len(evs)-1]
	n := len(evs)

	b.Run("chain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v Verifier
			for _, e := range evs {
				if err := v.Next(e); err != nil {
					b.Fatal(err)
				}
			}
			if err := v.Finish(head.Seq, head.Hash); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
	})

	// The floor for any walk: hashing the same canonical bytes and nothing
	// else. chain's events/s over this one's is the cost of the walk itself.
	b.Run("baseline-sha256-only", func(b *testing.B) {
		canon := make([][]byte, n)
		for i, e := range evs {
			canon[i] = Canonical(e)
		}
		b.ReportAllocs()
		var sink byte
		for b.Loop() {
			for _, c := range canon {
				sum := sha256.Sum256(c)
				sink ^= sum[0]
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		_ = sink
	})
}

func BenchmarkSeal(b *testing.B) {
	evs := make([]Event, 1024)
	for i := range evs {
		evs[i] = realistic(i)
	}
	b.ReportAllocs()
	seq, prev := int64(0), Genesis
	i := 0
	for b.Loop() {
		e := Seal(evs[i%len(evs)], seq, prev)
		seq, prev = e.Seq, e.Hash
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
