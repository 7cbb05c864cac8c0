package audit

import (
	"bytes"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/opgate/opgate"
)

// fuzzFields are the variable-length fields of an event in encoding order,
// so that neighbours in this list are neighbours in Canonical.
var fuzzFields = []struct {
	name string
	get  func(*Event) []byte
	set  func(*Event, []byte)
}{
	{"Type", func(e *Event) []byte { return []byte(e.Type) }, func(e *Event, b []byte) { e.Type = Type(b) }},
	{"ActorID", func(e *Event) []byte { return []byte(e.ActorID) }, func(e *Event, b []byte) { e.ActorID = opgate.OperatorID(b) }},
	{"OperatorID", func(e *Event) []byte { return []byte(e.OperatorID) }, func(e *Event, b []byte) { e.OperatorID = opgate.OperatorID(b) }},
	{"SiteID", func(e *Event) []byte { return []byte(e.SiteID) }, func(e *Event, b []byte) { e.SiteID = opgate.SiteID(b) }},
	{"TerminalID", func(e *Event) []byte { return []byte(e.TerminalID) }, func(e *Event, b []byte) { e.TerminalID = opgate.TerminalID(b) }},
	{"Resource", func(e *Event) []byte { return []byte(e.Resource) }, func(e *Event, b []byte) { e.Resource = string(b) }},
	{"Reason", func(e *Event) []byte { return []byte(e.Reason) }, func(e *Event, b []byte) { e.Reason = string(b) }},
	{"Data", func(e *Event) []byte { return slices.Clone(e.Data) }, func(e *Event, b []byte) { e.Data = b }},
	{"PrevHash", func(e *Event) []byte { return slices.Clone(e.PrevHash) }, func(e *Event, b []byte) { e.PrevHash = b }},
}

// sameContent reports whether a and b agree on everything Canonical covers.
func sameContent(a, b Event) bool {
	if a.Seq != b.Seq || a.At.UnixMicro() != b.At.UnixMicro() {
		return false
	}
	for _, f := range fuzzFields {
		if !bytes.Equal(f.get(&a), f.get(&b)) {
			return false
		}
	}
	return true
}

// FuzzCanonical checks that the encoding is injective: two events share an
// encoding only if they agree on every field it covers, including when
// bytes move across the border of two neighbouring fields. It also feeds the
// events, sealed and not, to verifiers and requires that nothing panics and
// that a sealed pair verifies while a changed one does not.
func FuzzCanonical(f *testing.F) {
	full := sample()
	f.Add(int64(1), int64(0), "grant.approved", "OP-1", "OP-2", "S", "T", "ab", "c", []byte(`{}`), Genesis,
		int64(1), int64(0), "grant.approved", "OP-1", "OP-2", "S", "T", "a", "bc", []byte(`{}`), Genesis)
	f.Add(int64(42), t0.UnixMicro(), string(full.Type), string(full.ActorID), string(full.OperatorID), string(full.SiteID),
		string(full.TerminalID), full.Resource, full.Reason, full.Data, Genesis,
		int64(42), t0.UnixMicro(), string(full.Type), string(full.ActorID), string(full.OperatorID), string(full.SiteID),
		string(full.TerminalID), full.Resource, full.Reason, full.Data, Genesis)
	f.Add(int64(0), int64(0), "", "", "", "", "", "", "", []byte(nil), []byte(nil),
		int64(0), int64(0), "", "", "", "", "", "", "", []byte{}, []byte{})
	f.Add(int64(math.MaxInt64), int64(math.MinInt64), "\x01", "", "", "", "", "", "", []byte("\x00"), []byte("\x01"),
		int64(math.MinInt64), int64(math.MaxInt64), "", "\x01", "", "", "", "", "", []byte("\x01"), []byte("\x00"))
	f.Add(int64(-1), int64(-1), "a", "b", "c", "d", "e", "f", "g", []byte("h"), []byte("i"),
		int64(-1), int64(-1), "ab", "c", "d", "e", "f", "g", "h", []byte("i"), []byte(nil))

	f.Fuzz(func(t *testing.T,
		seqA, usA int64, typA, actA, opA, siteA, termA, resA, reasonA string, dataA, prevA []byte,
		seqB, usB int64, typB, actB, opB, siteB, termB, resB, reasonB string, dataB, prevB []byte,
	) {
		a := Event{Seq: seqA, At: time.UnixMicro(usA), Type: Type(typA), ActorID: opgate.OperatorID(actA),
			OperatorID: opgate.OperatorID(opA), SiteID: opgate.SiteID(siteA), TerminalID: opgate.TerminalID(termA),
			Resource: resA, Reason: reasonA, Data: dataA, PrevHash: prevA}
		b := Event{Seq: seqB, At: time.UnixMicro(usB), Type: Type(typB), ActorID: opgate.OperatorID(actB),
			OperatorID: opgate.OperatorID(opB), SiteID: opgate.SiteID(siteB), TerminalID: opgate.TerminalID(termB),
			Resource: resB, Reason: reasonB, Data: dataB, PrevHash: prevB}

		ca, cb := Canonical(a), Canonical(b)
		if got, want := bytes.Equal(ca, cb), sameContent(a, b); got != want {
			t.Fatalf("Canonical equal = %v, fields equal = %v\na = %+v\nb = %+v", got, want, a, b)
		}
		// The buffer a Verifier reuses must not leak into the next encoding.
		if got := appendCanonical(cb[:0], a); !bytes.Equal(got, ca) {
			t.Fatalf("appendCanonical over a used buffer = %x, want %x", got, ca)
		}

		// Move one byte across each border, either way.
		for i := 0; i+1 < len(fuzzFields); i++ {
			l, r := fuzzFields[i], fuzzFields[i+1]
			x, y := l.get(&a), r.get(&a)
			if len(x) > 0 {
				m := a
				l.set(&m, x[:len(x)-1])
				r.set(&m, append(x[len(x)-1:len(x):len(x)], y...))
				if bytes.Equal(Canonical(m), ca) {
					t.Fatalf("moving the last byte of %s to %s keeps the encoding", l.name, r.name)
				}
			}
			if len(y) > 0 {
				m := a
				l.set(&m, append(x[:len(x):len(x)], y[0]))
				r.set(&m, y[1:])
				if bytes.Equal(Canonical(m), ca) {
					t.Fatalf("moving the first byte of %s to %s keeps the encoding", r.name, l.name)
				}
			}
		}

		// Arbitrary events, seqs and hash lengths: errors are fine, panics
		// are not.
		sa := Seal(a, seqA, prevA)
		sb := Seal(b, sa.Seq, sa.Hash)
		for _, v := range []*Verifier{new(Verifier), NewVerifier(Anchor{Seq: seqA, Hash: prevA}), NewVerifier(Anchor{Seq: seqB, Hash: prevB})} {
			for _, e := range []Event{a, b, sa, sb, {}} {
				_ = v.Next(e)
			}
			_, _, _ = v.Head()
			_ = v.Finish(seqB, prevB)
		}

		// A sealed pair verifies from where it was sealed; a changed one
		// does not. The zero Anchor stands for the genesis.
		anchor := Anchor{Seq: seqA, Hash: prevA}
		if seqA == 0 && len(prevA) == 0 {
			sa = Seal(a, 0, Genesis)
			sb = Seal(b, sa.Seq, sa.Hash)
		}
		v := NewVerifier(anchor)
		if err := v.Next(sa); err != nil {
			t.Fatalf("Next(sealed a) = %v", err)
		}
		if err := v.Next(sb); err != nil {
			t.Fatalf("Next(sealed b) = %v", err)
		}
		if err := v.Finish(sb.Seq, sb.Hash); err != nil {
			t.Fatalf("Finish() = %v", err)
		}
		changed := sb
		changed.Reason += "!"
		v = NewVerifier(anchor)
		if err := v.Next(sa); err != nil {
			t.Fatalf("Next(sealed a) = %v", err)
		}
		if err := v.Next(changed); err == nil {
			t.Fatal("Next(changed b) = nil, want an error")
		}
	})
}

// FuzzVerify applies a fuzzed list of edits to a sealed chain and requires
// that the walk, checked against the recorded head, passes exactly when the
// edits left the chain as it was.
func FuzzVerify(f *testing.F) {
	orig := chain(8)
	head := orig[len(orig)-1]
	f.Add([]byte{})
	f.Add([]byte{0, 3, 0})          // delete
	f.Add([]byte{1, 2, 5})          // duplicate
	f.Add([]byte{2, 3, 4})          // swap
	f.Add([]byte{2, 3, 3})          // swap with itself: no change
	f.Add([]byte{3, 4, 6})          // change a field
	f.Add([]byte{4, 7, 0})          // cut the tail
	f.Add([]byte{5, 4, 'x'})        // re-seal a changed event
	f.Add([]byte{5, 7, 'x'})        // re-seal the last: only the head notices
	f.Add([]byte{1, 7, 8, 2, 8, 0}) // append a copy of the last, move it first

	f.Fuzz(func(t *testing.T, ops []byte) {
		evs := slices.Clone(orig)
		for len(ops) >= 3 && len(evs) > 0 {
			op, i, x := ops[0]%6, int(ops[1])%len(evs), ops[2]
			ops = ops[3:]
			switch op {
			case 0:
				evs = slices.Delete(evs, i, i+1)
			case 1:
				evs = slices.Insert(evs, int(x)%(len(evs)+1), evs[i])
			case 2:
				j := int(x) % len(evs)
				evs[i], evs[j] = evs[j], evs[i]
			case 3:
				evs[i] = changeField(evs[i], x)
			case 4:
				evs = evs[:i]
			case 5:
				e := evs[i]
				e.Reason += string(rune(x))
				prevSeq, prevHash := int64(0), Genesis
				if i > 0 {
					prevSeq, prevHash = evs[i-1].Seq, evs[i-1].Hash
				}
				evs[i] = Seal(e, prevSeq, prevHash)
			}
		}

		same := len(evs) == len(orig)
		for i := 0; same && i < len(evs); i++ {
			same = sameContent(evs[i], orig[i]) && bytes.Equal(evs[i].Hash, orig[i].Hash)
		}
		var v Verifier
		var err error
		for _, e := range evs {
			if err = v.Next(e); err != nil {
				break
			}
		}
		if err == nil {
			err = v.Finish(head.Seq, head.Hash)
		}
		if ok := err == nil; ok != same {
			t.Fatalf("verification passed = %v (%v), chain unchanged = %v", ok, err, same)
		}
	})
}

// changeField returns e with one field changed; x picks the field and the
// change, which never leaves the field as it was.
func changeField(e Event, x byte) Event {
	switch k := int(x) % (len(fuzzFields) + 3); k {
	case len(fuzzFields):
		e.Seq++
	case len(fuzzFields) + 1:
		e.At = e.At.Add(time.Duration(1+x/16) * time.Microsecond)
	case len(fuzzFields) + 2:
		h := slices.Clone(e.Hash)
		if len(h) == 0 {
			h = []byte{x}
		} else {
			h[int(x)%len(h)] ^= 1
		}
		e.Hash = h
	default:
		fl := fuzzFields[k]
		fl.set(&e, append(fl.get(&e), x))
	}
	return e
}
