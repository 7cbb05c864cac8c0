// Package audit owns the history: the event type, the canonical encoding
// each event's hash covers, the SHA-256 chain that links every event to the
// one before it, and the walk that verifies it. It knows neither SQL nor
// HTTP: stores give events their place in the chain inside the same
// transaction as the change they record (R4.1, R4.2).
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
)

// Type names what happened. Values are stable strings kept in the history
// forever; never rename one.
type Type string

// The event types of the contract (API.md, Audit).
const (
	OperatorIssued        Type = "operator.issued"
	OperatorTransferred   Type = "operator.transferred"
	OperatorRetired       Type = "operator.retired"
	OperatorSuspended     Type = "operator.suspended"
	OperatorReinstated    Type = "operator.reinstated"
	OperatorExpired       Type = "operator.expired"
	OperatorUnlocked      Type = "operator.unlocked"
	ChangeScheduled       Type = "change.scheduled"
	ChangeCancelled       Type = "change.cancelled"
	ChangeFailed          Type = "change.failed"
	CardEnrollmentStarted Type = "card.enrollment_started"
	CardEnrolled          Type = "card.enrolled"
	CardRevoked           Type = "card.revoked"
	CardCollected         Type = "card.collected"
	PasswordChanged       Type = "password.changed"
	PasswordReset         Type = "password.reset"
	LoginSucceeded        Type = "login.succeeded"
	LoginFailed           Type = "login.failed"
	AccountLocked         Type = "account.locked"
	SessionEnded          Type = "session.ended"
	GrantRequested        Type = "grant.requested"
	GrantApproved         Type = "grant.approved"
	GrantRevoked          Type = "grant.revoked"
	GrantExpired          Type = "grant.expired"
	PolicyChanged         Type = "policy.changed"
	EmergencyStopped      Type = "emergency.stopped"
	EmergencyResumed      Type = "emergency.resumed"
	AuthzDecided          Type = "authz.decided"
	ApprovalRequested     Type = "approval.requested"
	ApprovalApproved      Type = "approval.approved"
	SiteCreated           Type = "site.created"
	TerminalRegistered    Type = "terminal.registered"
	TerminalRemoved       Type = "terminal.removed"
	RoleChanged           Type = "role.changed"
	SystemBootstrapped    Type = "system.bootstrapped"
	SigningKeyAdded       Type = "signing_key.added"
	ServiceKeyAdded       Type = "service_key.added"
	// Reviews, reports and retention (R4.3, R5).
	ReviewOpened      Type = "review.opened"
	ReviewDecided     Type = "review.decided"
	ReviewEscalated   Type = "review.escalated"
	ReviewClosed      Type = "review.closed"
	ReviewScheduled   Type = "review.scheduled"
	ReviewUnscheduled Type = "review.unscheduled"
	ReportRead        Type = "report.read"
	AuditPurged       Type = "audit.purged"
)

// Event is one entry of the history. Seq, PrevHash and Hash are assigned by
// the store when the event takes its place in the chain.
type Event struct {
	Seq        int64
	At         time.Time
	Type       Type
	ActorID    opgate.OperatorID // who decided; empty for the system itself
	OperatorID opgate.OperatorID // whom it concerns
	SiteID     opgate.SiteID
	TerminalID opgate.TerminalID
	Resource   string // e.g. "grant:G-…", "card:C-…", "resident:…"
	Reason     string
	Data       []byte // a JSON object, stored byte for byte, or empty
	PrevHash   []byte
	Hash       []byte
}

// HashSize is the length of PrevHash and Hash.
const HashSize = sha256.Size

// Genesis is the PrevHash of the first event.
var Genesis = make([]byte, HashSize)

// D encodes event data. encoding/json sorts map keys, so equal maps give
// equal bytes; the store keeps exactly these bytes and the hash covers them.
func D(m map[string]any) []byte {
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Data is built by our own code from plain values; a failure is a
		// programming error that must not silently drop history.
		panic(fmt.Sprintf("audit: encode data: %v", err))
	}
	return b
}

const domain = "opgate/audit/v1\x00"

// Canonical is the byte string an event's hash covers: a domain tag, then
// every field but Hash, each length-prefixed so that no two different
// events share an encoding. Times count at microsecond precision, which is
// what both stores keep.
func Canonical(e Event) []byte {
	return appendCanonical(make([]byte, 0, 128+len(e.Data)+len(e.Reason)+len(e.Resource)), e)
}

// appendCanonical appends Canonical(e) to b, so that a walk over many
// events can reuse one buffer instead of allocating per event.
func appendCanonical(b []byte, e Event) []byte {
	b = append(b, domain...)
	b = binary.AppendVarint(b, e.Seq)
	b = binary.AppendVarint(b, e.At.UnixMicro())
	b = appendField(b, e.Type)
	b = appendField(b, e.ActorID)
	b = appendField(b, e.OperatorID)
	b = appendField(b, e.SiteID)
	b = appendField(b, e.TerminalID)
	b = appendField(b, e.Resource)
	b = appendField(b, e.Reason)
	b = appendField(b, e.Data)
	b = appendField(b, e.PrevHash)
	return b
}

// appendField appends s with its length in front. Taking []byte as it is
// avoids the copy a conversion to string would make.
func appendField[S ~string | ~[]byte](b []byte, s S) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Seal gives e its place after the event whose seq and hash are given and
// returns it with Seq, PrevHash and Hash set.
func Seal(e Event, prevSeq int64, prevHash []byte) Event {
	e.Seq = prevSeq + 1
	e.At = e.At.UTC().Truncate(time.Microsecond)
	e.PrevHash = append([]byte(nil), prevHash...)
	sum := sha256.Sum256(Canonical(e))
	e.Hash = sum[:]
	return e
}

// ErrBroken is wrapped by every verification failure.
var ErrBroken = errors.New("audit: chain broken")

// BrokenError names the first event where the chain does not hold.
type BrokenError struct {
	Seq    int64 // the sequence number expected or found there
	Reason string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("audit: chain broken at seq %d: %s", e.Seq, e.Reason)
}

func (e *BrokenError) Unwrap() error { return ErrBroken }

// Anchor is where a verification starts: the genesis, or a checkpoint left
// by a purge of events past retention.
type Anchor struct {
	Seq  int64 // the last seq before the first event to check (0 at genesis)
	Hash []byte
}

// Verifier walks the chain event by event. The zero value starts at the
// genesis.
type Verifier struct {
	started bool
	seq     int64
	hash    []byte // owned by the Verifier: never the caller's nor Genesis
	n       int64
	buf     []byte // canonical encoding of the event being checked
}

// NewVerifier starts a walk after the anchor. The zero Anchor is the
// genesis, like the zero Verifier.
func NewVerifier(a Anchor) *Verifier {
	h := a.Hash
	if a.Seq == 0 && len(h) == 0 {
		h = Genesis
	}
	return &Verifier{started: true, seq: a.Seq, hash: append([]byte(nil), h...)}
}

// Next checks one event, which must follow the last one checked. A changed
// event fails its own hash; a removed or reordered one breaks the sequence
// or the link to its predecessor.
func (v *Verifier) Next(e Event) error {
	if !v.started {
		v.started, v.hash = true, append([]byte(nil), Genesis...)
	}
	if e.Seq != v.seq+1 {
		return &BrokenError{Seq: v.seq + 1, Reason: fmt.Sprintf("expected seq %d, found %d", v.seq+1, e.Seq)}
	}
	if string(e.PrevHash) != string(v.hash) {
		return &BrokenError{Seq: e.Seq, Reason: "previous hash does not match"}
	}
	v.buf = appendCanonical(v.buf[:0], e)
	sum := sha256.Sum256(v.buf)
	if string(sum[:]) != string(e.Hash) {
		return &BrokenError{Seq: e.Seq, Reason: "event hash does not match its content"}
	}
	// Keep a copy: stores may scan the next row into the same buffer.
	v.seq, v.hash = e.Seq, append(v.hash[:0], sum[:]...)
	v.n++
	return nil
}

// Head is the last verified position. The hash is the caller's to keep.
func (v *Verifier) Head() (seq int64, hash []byte, n int64) {
	if !v.started {
		return 0, append([]byte(nil), Genesis...), 0
	}
	return v.seq, append([]byte(nil), v.hash...), v.n
}

// Finish compares the walk's end with the head the store recorded, so that
// events cut off the end of the chain are found too, as are events added
// past it.
func (v *Verifier) Finish(headSeq int64, headHash []byte) error {
	seq, hash := v.seq, v.hash
	if !v.started {
		seq, hash = 0, Genesis
	}
	if seq != headSeq {
		// The first bad seq is the first one missing (chain too short) or
		// the first one the head does not know of (chain too long).
		return &BrokenError{Seq: min(seq, headSeq) + 1, Reason: fmt.Sprintf("chain ends at seq %d but the head records %d", seq, headSeq)}
	}
	if string(hash) != string(headHash) {
		return &BrokenError{Seq: seq, Reason: "last hash differs from the recorded head"}
	}
	return nil
}

// Result summarises a verification for people and the API.
type Result struct {
	OK          bool
	Events      int64
	HeadSeq     int64
	HeadHash    []byte
	FirstBadSeq int64 // 0 when OK
	Problem     string

	attested bool // a purge event in the walk names the anchor
}

// Filter selects events for the history endpoints. Zero fields do not
// filter.
type Filter struct {
	OperatorID opgate.OperatorID
	ActorID    opgate.OperatorID
	Type       Type
	Resource   string
	SiteID     opgate.SiteID
	From, To   time.Time // From inclusive, To exclusive
	AfterSeq   int64     // cursor
	Limit      int
}
