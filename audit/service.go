package audit

import (
	"context"
	"errors"
	"runtime"
	"sync"
)

// Source is the stored chain, walked in seq order.
type Source interface {
	ScanAudit(ctx context.Context, after int64, fn func(Event) error) error
	AuditHead(ctx context.Context) (seq int64, hash []byte, err error)
	AuditAnchor(ctx context.Context) (Anchor, error)
}

// RangeSource is a Source that can walk part of the chain and read one
// event's stored hash, so that verification can walk parts at once.
type RangeSource interface {
	Source
	ScanAuditRange(ctx context.Context, after, through int64, fn func(Event) error) error
	AuditHashAt(ctx context.Context, seq int64) ([]byte, error)
}

// minPart is the least number of events worth a walker of its own.
const minPart = 20000

// VerifyChain walks the whole stored chain from its anchor and compares
// its end with the recorded head. A broken chain is a Result with OK
// false, not an error; an error means the chain could not be read.
//
// A long chain is cut into parts walked at once, one per processor. Each
// part starts from the stored hash of the event before it, and the part
// before checks that very event's hash against its content, so the parts
// together check every link exactly as one walk would.
func VerifyChain(ctx context.Context, src Source) (Result, error) {
	anchor, err := src.AuditAnchor(ctx)
	if err != nil {
		return Result{}, err
	}
	headSeq, headHash, err := src.AuditHead(ctx)
	if err != nil {
		return Result{}, err
	}
	parts := 1
	rs, ranged := src.(RangeSource)
	if ranged {
		parts = min(runtime.GOMAXPROCS(0), int((headSeq-anchor.Seq)/minPart))
	}
	if parts <= 1 {
		return verifyPart(ctx, src, anchor, headSeq, headHash)
	}
	// Cut points, and the anchors that start each part.
	bounds := make([]int64, parts+1)
	bounds[0], bounds[parts] = anchor.Seq, headSeq
	anchors := make([]Anchor, parts)
	anchors[0] = anchor
	for i := 1; i < parts; i++ {
		bounds[i] = anchor.Seq + (headSeq-anchor.Seq)*int64(i)/int64(parts)
		h, err := rs.AuditHashAt(ctx, bounds[i])
		if err != nil {
			// A missing event at a cut point is a broken chain; let a
			// single walk name the first bad event.
			return verifyPart(ctx, src, anchor, headSeq, headHash)
		}
		anchors[i] = Anchor{Seq: bounds[i], Hash: h}
	}
	results := make([]Result, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Go(func() {
			part := rangeSource{rs, bounds[i+1]}
			var endHash []byte
			if i == parts-1 {
				endHash = headHash
			}
			results[i], errs[i] = verifyPart(ctx, part, anchors[i], bounds[i+1], endHash)
		})
	}
	wg.Wait()
	total := Result{OK: true}
	for i := range parts {
		if errs[i] != nil {
			return Result{}, errs[i]
		}
		r := results[i]
		total.Events += r.Events
		if !r.OK {
			r.Events = total.Events
			return r, nil
		}
		total.HeadSeq, total.HeadHash = r.HeadSeq, r.HeadHash
	}
	return total, nil
}

// rangeSource walks one part.
type rangeSource struct {
	RangeSource
	through int64
}

func (r rangeSource) ScanAudit(ctx context.Context, after int64, fn func(Event) error) error {
	return r.ScanAuditRange(ctx, after, r.through, fn)
}

// verifyPart walks from anchor to endSeq and, unless endHash is nil,
// compares the last hash with it (the recorded head, for the last part).
func verifyPart(ctx context.Context, src Source, anchor Anchor, endSeq int64, endHash []byte) (Result, error) {
	v := NewVerifier(anchor)
	err := src.ScanAudit(ctx, anchor.Seq, func(e Event) error {
		// Events appended after the head was read belong to the next walk.
		if e.Seq > endSeq {
			return errStop
		}
		return v.Next(e)
	})
	if err == nil || errors.Is(err, errStop) {
		if endHash == nil {
			// A part that is not the last ends where the next begins; the
			// next part checks the link from this end.
			_, endHash, _ = v.Head()
		}
		err = v.Finish(endSeq, endHash)
	}
	seq, hash, n := v.Head()
	res := Result{OK: err == nil, Events: n, HeadSeq: seq, HeadHash: hash}
	var be *BrokenError
	if errors.As(err, &be) {
		res.FirstBadSeq, res.Problem = be.Seq, be.Reason
		return res, nil
	}
	return res, err
}

var errStop = errors.New("stop")
