package authn

import (
	"time"

	"github.com/opgate/opgate"
)

// PasswordRecord is an operator's current password, as a hash.
type PasswordRecord struct {
	OperatorID opgate.OperatorID
	Hash       string // argon2id PHC string
	Temporary  bool   // set by a reset or the bootstrap: must be changed first
	SetAt      time.Time
	ExpiresAt  time.Time
}

// Enrollment is a started card enrollment, waiting for the card.
type Enrollment struct {
	CodeHash   []byte
	OperatorID opgate.OperatorID
	CardSerial string
	Label      string
	CreatedBy  opgate.OperatorID
	CreatedAt  time.Time
	ExpiresAt  time.Time
	UsedAt     time.Time
}
