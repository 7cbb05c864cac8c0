package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	res, err := verifyFrom(ctx, src, anchor)
	if err != nil || !res.OK || anchor.Seq == 0 || res.attested {
		return res, err
	}
	// Events before the anchor are gone. Only a purge may remove them, and
	// it says so in the chain itself, naming the anchor it left: an anchor
	// moved any other way (one UPDATE of the head row) would let anyone
	// with the database cut history off unseen.
	return Result{Events: res.Events, HeadSeq: res.HeadSeq, HeadHash: res.HeadHash, FirstBadSeq: anchor.Seq,
		Problem: fmt.Sprintf("the chain starts after seq %d, but no audit.purged event in it names that anchor: events were removed outside a purge", anchor.Seq)}, nil
}

func verifyFrom(ctx context.Context, src Source, anchor Anchor) (Result, error) {
	var err error
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
		return verifyPart(ctx, src, anchor, anchor, headSeq, headHash)
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
			return verifyPart(ctx, src, anchor, anchor, headSeq, headHash)
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
			results[i], errs[i] = verifyPart(ctx, part, anchor, anchors[i], bounds[i+1], endHash)
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
		total.attested = total.attested || r.attested
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
// It notes a purge event naming the chain's anchor, chainAnchor.
func verifyPart(ctx context.Context, src Source, chainAnchor, anchor Anchor, endSeq int64, endHash []byte) (Result, error) {
	v := NewVerifier(anchor)
	attested := false
	err := src.ScanAudit(ctx, anchor.Seq, func(e Event) error {
		// Events appended after the head was read belong to the next walk.
		if e.Seq > endSeq {
			return errStop
		}
		if err := v.Next(e); err != nil {
			return err
		}
		if !attested && e.Type == AuditPurged {
			attested = Attests(e, chainAnchor)
		}
		return nil
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
	res := Result{OK: err == nil, Events: n, HeadSeq: seq, HeadHash: hash, attested: attested}
	var be *BrokenError
	if errors.As(err, &be) {
		res.FirstBadSeq, res.Problem = be.Seq, be.Reason
		return res, nil
	}
	return res, err
}

var errStop = errors.New("stop")

// Attests reports whether e, an audit.purged event, names a as the anchor
// its purge left. A purge recorded before the anchor's hash was written
// into the event names its seq alone.
func Attests(e Event, a Anchor) bool {
	var d struct {
		Seq  *int64 `json:"anchor_seq"`
		Hash string `json:"anchor_hash"`
	}
	if e.Type != AuditPurged || json.Unmarshal(e.Data, &d) != nil || d.Seq == nil || *d.Seq != a.Seq {
		return false
	}
	return d.Hash == "" || d.Hash == hex.EncodeToString(a.Hash)
}
