package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opgate/opgate"
)

// t0 is a fixed instant: tests never read the wall clock (DESIGN.md rule 6).
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC)

// sample is an event with every field set, as a store would hand it to Seal.
func sample() Event {
	return Event{
		At:         t0,
		Type:       GrantApproved,
		ActorID:    "OP-00000007",
		OperatorID: "OP-00000042",
		SiteID:     "SITE-0001",
		TerminalID: "TERM-0003",
		Resource:   "grant:G-000123",
		Reason:     "approved by supervisor",
		Data:       []byte(`{"role":"clerk"}`),
	}
}

// chain seals n events after the genesis. Each event owns its slices, so a
// test may change one without touching another.
func chain(n int) []Event {
	evs := make([]Event, 0, n)
	seq, prev := int64(0), Genesis
	for i := range n {
		e := sample()
		e.At = t0.Add(time.Duration(i) * time.Second)
		e.OperatorID = opgate.OperatorID(fmt.Sprintf("OP-%08d", i%37))
		e.Reason = fmt.Sprintf("reason %d", i)
		e.Data = D(map[string]any{"i": i})
		e = Seal(e, seq, prev)
		evs = append(evs, e)
		seq, prev = e.Seq, e.Hash
	}
	return evs
}

func hashOf(e Event) []byte {
	sum := sha256.Sum256(Canonical(e))
	return sum[:]
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSeal(t *testing.T) {
	prev := bytes.Repeat([]byte{0xab}, HashSize)
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name     string
		in       Event
		prevSeq  int64
		prevHash []byte
		want     Event // Hash is checked against the content separately
	}{
		{
			name:     "first event links to the genesis",
			in:       Event{At: t0, Type: SystemBootstrapped},
			prevSeq:  0,
			prevHash: Genesis,
			want:     Event{Seq: 1, At: t0.Truncate(time.Microsecond), Type: SystemBootstrapped, PrevHash: Genesis},
		},
		{
			name:     "later event takes the next seq and its predecessor's hash",
			in:       sample(),
			prevSeq:  41,
			prevHash: prev,
			want: func() Event {
				e := sample()
				e.Seq, e.At, e.PrevHash = 42, time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC), prev
				return e
			}(),
		},
		{
			name:     "time is cut to microseconds, as both stores keep it",
			in:       Event{At: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC), Type: LoginFailed},
			prevSeq:  7,
			prevHash: prev,
			want:     Event{Seq: 8, At: time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC), Type: LoginFailed, PrevHash: prev},
		},
		{
			name:     "time is moved to UTC",
			in:       Event{At: time.Date(2025, 1, 2, 4, 4, 5, 999, paris), Type: LoginFailed},
			prevSeq:  7,
			prevHash: prev,
			want:     Event{Seq: 8, At: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Type: LoginFailed, PrevHash: prev},
		},
		{
			name:     "given seq and hashes are replaced",
			in:       Event{Seq: 999, At: t0, Type: CardRevoked, PrevHash: []byte("forged"), Hash: []byte("forged")},
			prevSeq:  2,
			prevHash: prev,
			want:     Event{Seq: 3, At: t0.Truncate(time.Microsecond), Type: CardRevoked, PrevHash: prev},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Seal(tc.in, tc.prevSeq, tc.prevHash)
			if diff := cmp.Diff(tc.want, got, ignoreHash); diff != "" {
				t.Errorf("Seal() mismatch (-want +got):\n%s", diff)
			}
			if got.At.Location() != time.UTC {
				t.Errorf("Seal().At location = %v, want UTC", got.At.Location())
			}
			if diff := cmp.Diff(hashOf(got), got.Hash); diff != "" {
				t.Errorf("Seal().Hash is not the hash of its content (-want +got):\n%s", diff)
			}
			if len(got.Hash) != HashSize {
				t.Errorf("len(Seal().Hash) = %d, want %d", len(got.Hash), HashSize)
			}
		})
	}
}

var ignoreHash = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Hash" }, cmp.Ignore())

func TestSealCopiesPrevHash(t *testing.T) {
	prev := bytes.Repeat([]byte{1}, HashSize)
	e := Seal(sample(), 1, prev)
	prev[0] = 2
	if e.PrevHash[0] != 1 {
		t.Fatal("Seal().PrevHash shares memory with the caller's prevHash")
	}
}

// TestCanonicalStable pins the encoding: every stored hash depends on it, so
// a change here breaks the verification of the whole existing history.
func TestCanonicalStable(t *testing.T) {
	e := sample()
	e.Seq = 42
	e.PrevHash = make([]byte, HashSize)
	for i := range e.PrevHash {
		e.PrevHash[i] = byte(i)
	}
	wantCanon := mustHex(t, "6f70676174652f61756469742f76310054c2c4ec9fc19298060e6772616e742e617070726f7665640b4f502d30303030303030370b4f502d303030303030343209534954452d30303031095445524d2d303030330e6772616e743a472d30303031323316617070726f7665642062792073757065727669736f72107b22726f6c65223a22636c65726b227d20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	wantHash := mustHex(t, "338b6dc8d2603b5d217e87b601389930d31d3d4faf4389263b4e5022d5b6168c")
	if diff := cmp.Diff(wantCanon, Canonical(e)); diff != "" {
		t.Errorf("Canonical() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantHash, Seal(e, 41, e.PrevHash).Hash); diff != "" {
		t.Errorf("Seal().Hash mismatch (-want +got):\n%s", diff)
	}
}

// TestCanonicalDistinguishesFields changes one thing at a time and requires
// a different encoding, and requires all the changed events to differ from
// each other too. The "moves" shift bytes across the border of two adjacent
// fields: only the length prefixes tell those apart.
func TestCanonicalDistinguishesFields(t *testing.T) {
	base := sample()
	base.Seq = 10
	base.PrevHash = bytes.Repeat([]byte{7}, HashSize)

	type mutator struct {
		name string
		f    func(*Event)
	}
	muts := []mutator{
		{"Seq", func(e *Event) { e.Seq++ }},
		{"Seq negative", func(e *Event) { e.Seq = -e.Seq }},
		{"At by one microsecond", func(e *Event) { e.At = e.At.Add(time.Microsecond) }},
		{"At before 1970", func(e *Event) { e.At = time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC) }},
		{"At zero", func(e *Event) { e.At = time.Time{} }},
		{"Type", func(e *Event) { e.Type = GrantRevoked }},
		{"ActorID", func(e *Event) { e.ActorID = "OP-00000008" }},
		{"ActorID empty", func(e *Event) { e.ActorID = "" }},
		{"OperatorID", func(e *Event) { e.OperatorID = "OP-00000043" }},
		{"SiteID", func(e *Event) { e.SiteID = "SITE-0002" }},
		{"TerminalID", func(e *Event) { e.TerminalID = "TERM-0004" }},
		{"Resource", func(e *Event) { e.Resource = "grant:G-000124" }},
		{"Reason", func(e *Event) { e.Reason = "approved by supervisor." }},
		{"Data", func(e *Event) { e.Data = []byte(`{"role":"clerc"}`) }},
		{"Data empty", func(e *Event) { e.Data = nil }},
		{"PrevHash", func(e *Event) { e.PrevHash = Genesis }},
		{"PrevHash shorter", func(e *Event) { e.PrevHash = e.PrevHash[:HashSize-1] }},
	}
	// Every pair of neighbours in the encoding, with a byte moved either way
	// and with the whole of one moved into the other.
	type field struct {
		name string
		get  func(*Event) string
		set  func(*Event, string)
	}
	fields := []field{
		{"Type", func(e *Event) string { return string(e.Type) }, func(e *Event, s string) { e.Type = Type(s) }},
		{"ActorID", func(e *Event) string { return string(e.ActorID) }, func(e *Event, s string) { e.ActorID = opgate.OperatorID(s) }},
		{"OperatorID", func(e *Event) string { return string(e.OperatorID) }, func(e *Event, s string) { e.OperatorID = opgate.OperatorID(s) }},
		{"SiteID", func(e *Event) string { return string(e.SiteID) }, func(e *Event, s string) { e.SiteID = opgate.SiteID(s) }},
		{"TerminalID", func(e *Event) string { return string(e.TerminalID) }, func(e *Event, s string) { e.TerminalID = opgate.TerminalID(s) }},
		{"Resource", func(e *Event) string { return e.Resource }, func(e *Event, s string) { e.Resource = s }},
		{"Reason", func(e *Event) string { return e.Reason }, func(e *Event, s string) { e.Reason = s }},
		{"Data", func(e *Event) string { return string(e.Data) }, func(e *Event, s string) { e.Data = []byte(s) }},
		{"PrevHash", func(e *Event) string { return string(e.PrevHash) }, func(e *Event, s string) { e.PrevHash = []byte(s) }},
	}
	for i := 0; i+1 < len(fields); i++ {
		a, b := fields[i], fields[i+1]
		muts = append(muts,
			mutator{"move last byte of " + a.name + " to " + b.name, func(e *Event) {
				x, y := a.get(e), b.get(e)
				a.set(e, x[:len(x)-1])
				b.set(e, x[len(x)-1:]+y)
			}},
			mutator{"move first byte of " + b.name + " to " + a.name, func(e *Event) {
				x, y := a.get(e), b.get(e)
				a.set(e, x+y[:1])
				b.set(e, y[1:])
			}},
			mutator{"move all of " + a.name + " to " + b.name, func(e *Event) {
				x, y := a.get(e), b.get(e)
				a.set(e, "")
				b.set(e, x+y)
			}},
		)
	}

	seen := map[string]string{string(Canonical(base)): "base"}
	for _, m := range muts {
		t.Run(m.name, func(t *testing.T) {
			e := base
			e.PrevHash = slices.Clone(base.PrevHash)
			m.f(&e)
			if cmp.Equal(base, e) {
				t.Fatal("mutator changed nothing")
			}
			got := string(Canonical(e))
			if other, dup := seen[got]; dup {
				t.Fatalf("Canonical() equals that of %q", other)
			}
			seen[got] = m.name
		})
	}

	// The moves above, spelled out for one pair as in the requirement.
	x, y := base, base
	x.Resource, x.Reason = "ab", "c"
	y.Resource, y.Reason = "a", "bc"
	if bytes.Equal(Canonical(x), Canonical(y)) {
		t.Error(`Resource "ab"/Reason "c" and Resource "a"/Reason "bc" share an encoding`)
	}
}

// TestCanonicalEquivalences pins what the encoding deliberately does not
// see, so that an event read back from either store keeps its hash.
func TestCanonicalEquivalences(t *testing.T) {
	with := func(f func(*Event)) Event {
		e := sample()
		e.Seq = 3
		e.PrevHash = Genesis
		f(&e)
		return e
	}
	same := func(*Event) {}
	for _, tc := range []struct {
		name string
		a, b Event
	}{
		{"Hash is not covered", with(same), with(func(e *Event) { e.Hash = []byte("anything") })},
		{"below a microsecond", with(same), with(func(e *Event) { e.At = e.At.Add(999 * time.Nanosecond) })},
		{"time zone", with(same), with(func(e *Event) { e.At = e.At.In(time.FixedZone("X", -7*3600)) })},
		{"nil and empty Data", with(func(e *Event) { e.Data = nil }), with(func(e *Event) { e.Data = []byte{} })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(Canonical(tc.a), Canonical(tc.b)); diff != "" {
				t.Errorf("Canonical() mismatch (-a +b):\n%s", diff)
			}
		})
	}
}

func TestVerifyChain(t *testing.T) {
	evs := chain(1000)
	var v Verifier
	for _, e := range evs {
		if err := v.Next(e); err != nil {
			t.Fatalf("Next(seq %d) = %v", e.Seq, err)
		}
	}
	last := evs[len(evs)-1]
	if err := v.Finish(last.Seq, last.Hash); err != nil {
		t.Fatalf("Finish() = %v", err)
	}
	type head struct {
		Seq  int64
		Hash []byte
		N    int64
	}
	var got head
	got.Seq, got.Hash, got.N = v.Head()
	if diff := cmp.Diff(head{1000, last.Hash, 1000}, got); diff != "" {
		t.Errorf("Head() mismatch (-want +got):\n%s", diff)
	}
}

func TestEmptyChain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		headSeq  int64
		headHash []byte
		want     *BrokenError
	}{
		{name: "empty head", headSeq: 0, headHash: Genesis},
		{name: "head records events", headSeq: 3, headHash: Genesis, want: &BrokenError{Seq: 1}},
		{name: "head hash is not the genesis", headSeq: 0, headHash: []byte("x"), want: &BrokenError{Seq: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v Verifier
			got := brokenAt(t, v.Finish(tc.headSeq, tc.headHash))
			if diff := cmp.Diff(tc.want, got, ignoreReason); diff != "" {
				t.Errorf("Finish() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

var ignoreReason = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Reason" }, cmp.Ignore())

// brokenAt returns the BrokenError in err, nil for nil, and fails the test
// for any other error.
func brokenAt(t *testing.T, err error) *BrokenError {
	t.Helper()
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrBroken) {
		t.Errorf("error %v does not wrap ErrBroken", err)
	}
	be, ok := errors.AsType[*BrokenError](err)
	if !ok {
		t.Fatalf("error %v is not a *BrokenError", err)
	}
	return be
}

// verdict is where a walk over evs found the first problem: in Next or, when
// every event passed, in Finish against the head the store recorded.
type verdict struct {
	Stage string // "next", "finish" or "" when the chain holds
	Seq   int64
}

func walk(t *testing.T, v *Verifier, evs []Event, headSeq int64, headHash []byte) verdict {
	t.Helper()
	for _, e := range evs {
		if be := brokenAt(t, v.Next(e)); be != nil {
			return verdict{"next", be.Seq}
		}
	}
	if be := brokenAt(t, v.Finish(headSeq, headHash)); be != nil {
		return verdict{"finish", be.Seq}
	}
	return verdict{}
}

func TestTamper(t *testing.T) {
	const n, k = 20, 10 // k is the seq of the event in the middle; it sits at index k-1
	change := func(f func(*Event)) func([]Event) []Event {
		return func(evs []Event) []Event { f(&evs[k-1]); return evs }
	}
	for _, tc := range []struct {
		name   string
		tamper func([]Event) []Event
		want   verdict
	}{
		{"untouched", func(evs []Event) []Event { return evs }, verdict{}},

		{"Reason changed", change(func(e *Event) { e.Reason = "nothing to see" }), verdict{"next", k}},
		{"Data changed", change(func(e *Event) { e.Data = D(map[string]any{"i": 0}) }), verdict{"next", k}},
		{"Data removed", change(func(e *Event) { e.Data = nil }), verdict{"next", k}},
		{"At changed", change(func(e *Event) { e.At = e.At.Add(-time.Hour) }), verdict{"next", k}},
		{"At changed by a microsecond", change(func(e *Event) { e.At = e.At.Add(time.Microsecond) }), verdict{"next", k}},
		{"Type changed", change(func(e *Event) { e.Type = GrantRevoked }), verdict{"next", k}},
		{"ActorID changed", change(func(e *Event) { e.ActorID = "OP-99999999" }), verdict{"next", k}},
		{"ActorID erased", change(func(e *Event) { e.ActorID = "" }), verdict{"next", k}},
		{"OperatorID changed", change(func(e *Event) { e.OperatorID = "OP-99999999" }), verdict{"next", k}},
		{"SiteID changed", change(func(e *Event) { e.SiteID = "SITE-9999" }), verdict{"next", k}},
		{"TerminalID changed", change(func(e *Event) { e.TerminalID = "TERM-9999" }), verdict{"next", k}},
		{"Resource changed", change(func(e *Event) { e.Resource = "grant:G-999999" }), verdict{"next", k}},
		{"Seq changed", change(func(e *Event) { e.Seq = 1000 }), verdict{"next", k}},
		{"PrevHash changed", change(func(e *Event) { e.PrevHash = Genesis }), verdict{"next", k}},
		{"Hash changed", change(func(e *Event) { e.Hash = slices.Clone(e.Hash); e.Hash[0] ^= 1 }), verdict{"next", k}},
		{"Hash truncated", change(func(e *Event) { e.Hash = e.Hash[:HashSize-1] }), verdict{"next", k}},

		{"event removed", func(evs []Event) []Event { return slices.Delete(evs, k-1, k) }, verdict{"next", k}},
		{"first event removed", func(evs []Event) []Event { return evs[1:] }, verdict{"next", 1}},
		{"two events swapped", func(evs []Event) []Event {
			evs[k-1], evs[k] = evs[k], evs[k-1]
			return evs
		}, verdict{"next", k}},
		{"earlier event inserted again", func(evs []Event) []Event {
			return slices.Insert(evs, k-1, evs[k-3])
		}, verdict{"next", k}},
		{"event inserted with a fresh seal", func(evs []Event) []Event {
			// The forged event fits after k-1 and takes seq k; the original
			// event k, which follows it, is where the chain no longer holds.
			forged := Seal(Event{At: t0, Type: GrantApproved, OperatorID: "OP-66666666"}, k-1, evs[k-2].Hash)
			return slices.Insert(evs, k-1, forged)
		}, verdict{"next", k + 1}},
		{"event re-sealed", func(evs []Event) []Event {
			// The attacker recomputes the hash of the changed event, so it
			// passes; its successor still names the old hash.
			e := evs[k-1]
			e.Reason = "nothing to see"
			evs[k-1] = Seal(e, k-1, evs[k-2].Hash)
			return evs
		}, verdict{"next", k + 1}},

		{"last event removed", func(evs []Event) []Event { return evs[:n-1] }, verdict{"finish", n}},
		{"last three events removed", func(evs []Event) []Event { return evs[:n-3] }, verdict{"finish", n - 2}},
		{"all events removed", func(evs []Event) []Event { return nil }, verdict{"finish", 1}},
		{"event appended past the head", func(evs []Event) []Event {
			last := evs[n-1]
			return append(evs, Seal(Event{At: t0, Type: GrantApproved}, last.Seq, last.Hash))
		}, verdict{"finish", n + 1}},
		{"last event re-sealed", func(evs []Event) []Event {
			e := evs[n-1]
			e.Reason = "nothing to see"
			evs[n-1] = Seal(e, n-1, evs[n-2].Hash)
			return evs
		}, verdict{"finish", n}},
		{"whole tail re-sealed after a removal", func(evs []Event) []Event {
			// Without the recorded head, rewriting everything after a point
			// would go unnoticed. The head catches it, though it can only
			// name the seq the rewritten chain falls short of.
			evs = slices.Delete(evs, k-1, k)
			for i := k - 1; i < len(evs); i++ {
				evs[i] = Seal(evs[i], evs[i-1].Seq, evs[i-1].Hash)
			}
			return evs
		}, verdict{"finish", n}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := chain(n)
			head := orig[n-1]
			evs := tc.tamper(chain(n))
			var v Verifier
			got := walk(t, &v, evs, head.Seq, head.Hash)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("verdict mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestVerifyFromAnchor walks what is left after a purge of the oldest
// events, starting from the checkpoint the purge left behind.
func TestVerifyFromAnchor(t *testing.T) {
	const n, purged = 100, 40
	evs := chain(n)
	head := evs[n-1]
	for _, tc := range []struct {
		name   string
		anchor Anchor
		evs    []Event
		want   verdict
		wantN  int64
	}{
		{"genesis", Anchor{Seq: 0, Hash: Genesis}, evs, verdict{}, n},
		{"zero anchor is the genesis", Anchor{}, evs, verdict{}, n},
		{"after a purge", Anchor{Seq: purged, Hash: evs[purged-1].Hash}, evs[purged:], verdict{}, n - purged},
		{"after purging all but the last", Anchor{Seq: n - 1, Hash: evs[n-2].Hash}, evs[n-1:], verdict{}, 1},
		{"after purging everything", Anchor{Seq: n, Hash: head.Hash}, nil, verdict{}, 0},
		{"anchor hash wrong", Anchor{Seq: purged, Hash: evs[purged-2].Hash}, evs[purged:], verdict{"next", purged + 1}, 0},
		{"anchor seq wrong", Anchor{Seq: purged - 1, Hash: evs[purged-1].Hash}, evs[purged:], verdict{"next", purged}, 0},
		{"one more event purged than the anchor says", Anchor{Seq: purged, Hash: evs[purged-1].Hash}, evs[purged+1:], verdict{"next", purged + 1}, 0},
		{"first kept event changed", Anchor{Seq: purged, Hash: evs[purged-1].Hash}, func() []Event {
			kept := slices.Clone(evs[purged:])
			kept[0].Reason = "rewritten"
			return kept
		}(), verdict{"next", purged + 1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(tc.anchor)
			got := walk(t, v, tc.evs, head.Seq, head.Hash)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("verdict mismatch (-want +got):\n%s", diff)
			}
			if _, _, gotN := v.Head(); got == (verdict{}) && gotN != tc.wantN {
				t.Errorf("Head() n = %d, want %d", gotN, tc.wantN)
			}
		})
	}
}

// TestVerifierOwnsItsState: stores may scan rows into reused buffers, and
// callers may keep what Head returns; neither may change the walk.
func TestVerifierOwnsItsState(t *testing.T) {
	evs := chain(3)
	anchorHash := slices.Clone(evs[0].Hash)
	v := NewVerifier(Anchor{Seq: 1, Hash: anchorHash})
	anchorHash[0] ^= 1
	if err := v.Next(evs[1]); err != nil {
		t.Fatalf("Next() after the caller changed the anchor's hash = %v", err)
	}
	// The store reuses the buffer it scanned the hash into.
	scanned := evs[1].Hash
	want := slices.Clone(scanned)
	for i := range scanned {
		scanned[i] = 0
	}
	_, h, _ := v.Head()
	h[0] ^= 1
	if diff := cmp.Diff(want, func() []byte { _, h, _ := v.Head(); return h }()); diff != "" {
		t.Errorf("Head() hash mismatch (-want +got):\n%s", diff)
	}
	if err := v.Next(evs[2]); err != nil {
		t.Fatalf("Next() after the caller reused its buffers = %v", err)
	}

	var zero Verifier
	_, g, _ := zero.Head()
	g[0] = 1
	if !bytes.Equal(Genesis, make([]byte, HashSize)) {
		t.Fatal("Head() of a fresh Verifier let the caller change Genesis")
	}
}

func TestD(t *testing.T) {
	build := func(kvs ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kvs); i += 2 {
			m[kvs[i].(string)] = kvs[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name string
		a, b map[string]any
		want []byte
	}{
		{"nil map", nil, nil, nil},
		{"empty map", map[string]any{}, build(), nil},
		{
			name: "insertion order does not matter",
			a:    build("role", "clerk", "site", "SITE-1", "until", "2025-04-01", "approver", "OP-2"),
			b:    build("approver", "OP-2", "until", "2025-04-01", "site", "SITE-1", "role", "clerk"),
			want: []byte(`{"approver":"OP-2","role":"clerk","site":"SITE-1","until":"2025-04-01"}`),
		},
		{
			name: "nested maps are sorted too",
			a:    build("z", 1, "a", build("y", true, "b", nil)),
			b:    build("a", build("b", nil, "y", true), "z", 1),
			want: []byte(`{"a":{"b":null,"y":true},"z":1}`),
		},
		{
			name: "many keys",
			a: func() map[string]any {
				m := map[string]any{}
				for i := range 100 {
					m[fmt.Sprintf("k%03d", i)] = i
				}
				return m
			}(),
			b: func() map[string]any {
				m := map[string]any{}
				for i := 99; i >= 0; i-- {
					m[fmt.Sprintf("k%03d", i)] = i
				}
				return m
			}(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := D(tc.a), D(tc.b)
			if diff := cmp.Diff(string(a), string(b)); diff != "" {
				t.Errorf("D(a) and D(b) differ (-a +b):\n%s", diff)
			}
			if tc.want != nil || len(tc.a) == 0 {
				if diff := cmp.Diff(tc.want, a); diff != "" {
					t.Errorf("D() mismatch (-want +got):\n%s", diff)
				}
			}
			for i := range 10 { // map iteration order is random; repeat to give it a chance to show
				if got := D(tc.a); !bytes.Equal(got, a) {
					t.Fatalf("D() run %d = %s, first run %s", i, got, a)
				}
			}
		})
	}
}

func TestDPanicsOnUnencodableData(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("D() with a channel value did not panic")
		}
	}()
	D(map[string]any{"c": make(chan int)})
}
