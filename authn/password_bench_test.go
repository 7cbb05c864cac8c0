package authn

import (
	"crypto/sha256"
	"testing"
)

// BenchmarkPassword prices argon2id with the default parameters against a
// single salted SHA-256 of the same input, so that the cost can be read as
// a ratio: what an attacker holding the hashes pays per guess, compared
// with a fast hash.
func BenchmarkPassword(b *testing.B) {
	const pw = "correct horse battery 42"
	b.Run("argon2id-default", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := HashPassword(pw, DefaultPasswordParams); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify-default", func(b *testing.B) {
		h, err := HashPassword(pw, DefaultPasswordParams)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := VerifyPassword(h, pw); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("dummy-default", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			DummyVerify(DefaultPasswordParams)
		}
	})
	b.Run("baseline-sha256", func(b *testing.B) {
		in := []byte(dummySalt + pw)
		b.ReportAllocs()
		for b.Loop() {
			_ = sha256.Sum256(in)
		}
	})
}
