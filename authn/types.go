package authn

import (
	"time"

	"github.com/opgate/opgate"
)

// CardStatus is where a card stands (API.md, Cards).
type CardStatus string

// Card states. Only Active cards log in.
const (
	CardActive    CardStatus = "active"
	CardLost      CardStatus = "lost"
	CardStolen    CardStatus = "stolen"
	CardCollected CardStatus = "collected"
	CardRevoked   CardStatus = "revoked"
)

// Card is an operator's IC card, registered as a WebAuthn credential.
type Card struct {
	ID             opgate.CardID
	OperatorID     opgate.OperatorID
	Serial         string
	Label          string
	Status         CardStatus
	CredentialID   []byte
	PublicKey      []byte // COSE key
	SignCount      uint32
	AAGUID         []byte
	Flags          uint8 // authenticator data flags at enrollment (UV, BE, BS)
	Attestation    string
	CloneSuspected bool
	EnrolledAt     time.Time
	EnrolledBy     opgate.OperatorID
	StatusChanged  time.Time
}

// Session is one login. It lives durably in the store, so that an ended
// session stays ended whatever happens to the ephemeral cache, and is
// mirrored in the ephemeral store, so that every replica sees its end at
// once.
type Session struct {
	ID                     opgate.SessionID
	OperatorID             opgate.OperatorID
	SiteID                 opgate.SiteID
	TerminalID             opgate.TerminalID
	CardID                 opgate.CardID // empty for a password-only login
	AMR                    []string
	CreatedAt              time.Time
	LastSeenAt             time.Time
	ExpiresAt              time.Time // absolute end
	EndedAt                time.Time // zero while it lives
	EndReason              string
	PasswordChangeRequired bool
	RefreshHash            []byte // SHA-256 of the current refresh token
}

// Live reports whether the session may be used at now under the idle
// timeout given.
func (s Session) Live(now time.Time, idle time.Duration) bool {
	if !s.EndedAt.IsZero() || !now.Before(s.ExpiresAt) {
		return false
	}
	return idle <= 0 || now.Before(s.LastSeenAt.Add(idle))
}

// SessionScope selects sessions to end.
type SessionScope struct {
	OperatorID opgate.OperatorID
	CardID     opgate.CardID
	SiteID     opgate.SiteID
	All        bool
	Except     opgate.SessionID // keep this one (a password change keeps the session that made it)
}
