package audit

import (
	"context"
	"errors"
)

// Source is the stored chain, walked in seq order.
type Source interface {
	ScanAudit(ctx context.Context, after int64, fn func(Event) error) error
	AuditHead(ctx context.Context) (seq int64, hash []byte, err error)
	AuditAnchor(ctx context.Context) (Anchor, error)
}

// VerifyChain walks the whole stored chain from its anchor and compares
// its end with the recorded head. A broken chain is a Result with OK
// false, not an error; an error means the chain could not be read.
func VerifyChain(ctx context.Context, src Source) (Result, error) {
	anchor, err := src.AuditAnchor(ctx)
	if err != nil {
		return Result{}, err
	}
	headSeq, headHash, err := src.AuditHead(ctx)
	if err != nil {
		return Result{}, err
	}
	v := NewVerifier(anchor)
	err = src.ScanAudit(ctx, anchor.Seq, func(e Event) error {
		// Events appended after the head was read belong to the next walk.
		if e.Seq > headSeq {
			return errStop
		}
		return v.Next(e)
	})
	if err == nil || errors.Is(err, errStop) {
		err = v.Finish(headSeq, headHash)
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
