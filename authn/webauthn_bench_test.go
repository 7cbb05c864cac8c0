package authn

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/opgate/opgate/authn/authntest"
)

// BenchmarkFinishLogin measures one whole assertion check — state, JSON and
// CBOR parsing, our pre-checks, the lookup and go-webauthn's validation —
// against its floor, a bare ecdsa.VerifyASN1 of the same signature over the
// same message (WebAuthn §7.2 step 20: authenticatorData ‖
// SHA-256(clientDataJSON)). The unknown-card case shows that a card nobody
// enrolled costs about as much as a known one (DESIGN.md rule 9).
func BenchmarkFinishLogin(b *testing.B) {
	c, _ := newTestCeremonies(b)
	card := authntest.NewCard(b)
	store := newCardStore(enroll(b, c, card, testOperator))
	opts, state, _, err := c.BeginLogin(nil)
	if err != nil {
		b.Fatal(err)
	}
	assertion := card.Get(opts, testOrigin, card.UserHandle())
	unknown := authntest.NewCard(b).Get(opts, testOrigin, []byte(testOperator))

	b.Run("bare-ecdsa-VerifyASN1", func(b *testing.B) {
		var r authntest.Response
		if err := json.Unmarshal(assertion, &r); err != nil {
			b.Fatal(err)
		}
		cdh := sha256.Sum256(r.Response.ClientDataJSON)
		digest := sha256.Sum256(append(r.Response.AuthenticatorData, cdh[:]...))
		pub, sig := card.PublicKey(), []byte(r.Response.Signature)
		b.ReportAllocs()
		for b.Loop() {
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
	b.Run("opgate-FinishLogin", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.FinishLogin(state, assertion, store.lookup); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("opgate-FinishLogin-unknown-card", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.FinishLogin(state, unknown, store.lookup); ceremonyReason(err) != CeremonyUnknownCredential {
				b.Fatal(err)
			}
		}
	})
}
