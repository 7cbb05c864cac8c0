package authn

import "crypto/sha256"

// hashToken is how opaque secrets (refresh tokens, enrollment codes,
// service keys) are kept: their SHA-256. They carry 128 bits or more of
// randomness, so a slow hash would add nothing.
func hashToken(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// EnrollmentCodeHash is how an enrollment code is kept: the hash of its
// normalised form, so that the code a person types matches.
func EnrollmentCodeHash(code string) []byte { return hashToken(NormalizeEnrollmentCode(code)) }
