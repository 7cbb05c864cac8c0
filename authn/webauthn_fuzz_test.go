package authn

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/clock/clocktest"
)

// Every fuzz worker is its own process and runs the target's setup again.
// For the seeds the coordinator made to mean the same thing in every worker,
// the setup must be the same everywhere: the cards are seeded
// (authntest.NewSeededCard), the clock is the fixed test clock, and every
// challenge is the same bytes (fixedReader), so that every state Begin
// returns is identical from process to process.

// fixedReader yields the same bytes forever.
type fixedReader struct{}

func (fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0x5a
	}
	return len(p), nil
}

func newFuzzCeremonies(f *testing.F) *Ceremonies {
	f.Helper()
	c, err := NewCeremonies(CeremonyConfig{RPID: testRPID, RPName: "opgate fuzz", Origins: []string{testOrigin}, Clock: clocktest.New()})
	if err != nil {
		f.Fatal(err)
	}
	c.rand = fixedReader{}
	return c
}

var ceremonyReasons = []string{
	CeremonyExpired, CeremonyMalformed, CeremonyUnknownCredential, CeremonyUserNotVerified,
	CeremonyBadSignature, CeremonyOriginMismatch, CeremonyRPIDMismatch, CeremonyChallengeMismatch,
	CeremonySignCountRegressed, CeremonyBackupEligibleRefused, CeremonyAAGUIDNotAllowed,
	CeremonyAuthenticatorRevoked, CeremonyAttestationInvalid, CeremonyUserMismatch,
}

// checkRefusal fails unless err is a CeremonyError with a known reason.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	ce, ok := errors.AsType[*CeremonyError](err)
	if !ok {
		t.Fatalf("error %v is not a *CeremonyError", err)
	}
	if !slices.Contains(ceremonyReasons, ce.Reason) {
		t.Fatalf("unknown reason %q", ce.Reason)
	}
}

// fuzzJunk are seeds no card made.
var fuzzJunk = []string{
	"",
	"null",
	"{}",
	"[]",
	`"public-key"`,
	`{"id":"AA","rawId":"AA","type":"public-key","response":{}}`,
	`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"","signature":"","attestationObject":"oA"}}`,
	`{"id":"","rawId":null,"type":"public-key","response":null}`,
	strings.Repeat("[", 10000),
	`{"id":"\u0000","rawId":"AA==","type":"public-key"}`,
}

func FuzzFinishLogin(f *testing.F) {
	c := newFuzzCeremonies(f)
	card := authntest.NewSeededCard(f, "FuzzFinishLogin")
	stored := enroll(f, c, card, testOperator)
	otherCard := authntest.NewSeededCard(f, "FuzzFinishLogin other")
	otherStored := enroll(f, c, otherCard, otherOperator)
	store := newCardStore(stored, otherStored)

	optsD, stateD, _, err := c.BeginLogin(nil)
	if err != nil {
		f.Fatal(err)
	}
	_, stateA, _, err := c.BeginLogin([][]byte{stored.CredentialID})
	if err != nil {
		f.Fatal(err)
	}
	states := [][]byte{stateD, stateA}

	// signed holds every message (authenticator data, then client data
	// JSON) that a card signed below: the only ones a login may accept.
	signed := map[string]bool{}
	get := func(k *authntest.Card, origin string, uh []byte) []byte {
		raw := k.Get(optsD, origin, uh)
		var r authntest.Response
		if err := json.Unmarshal(raw, &r); err != nil {
			f.Fatal(err)
		}
		signed[string(r.Response.AuthenticatorData)+string(r.Response.ClientDataJSON)] = true
		return raw
	}
	valid := get(card, testOrigin, []byte(testOperator)) // counter 2
	if a, err := c.FinishLogin(stateD, valid, store.lookup); err != nil || a.SignCount != 2 {
		f.Fatalf("seed assertion refused (was the setup changed?): %v", err)
	}
	f.Add(valid)
	f.Add(get(card, testOrigin, nil)) // counter 3, accepted only with the allow list
	f.Add(get(card, testOrigin, []byte(otherOperator)))
	f.Add(get(otherCard, testOrigin, []byte(otherOperator)))
	f.Add(get(card, "https://evil.example", []byte(testOperator)))
	for _, fault := range []authntest.Fault{authntest.FaultRPIDHash, authntest.FaultSignature, authntest.FaultOtherKey, authntest.FaultChallenge, authntest.FaultCeremonyType} {
		card.SetFaults(fault)
		f.Add(get(card, testOrigin, []byte(testOperator)))
	}
	card.SetFaults()
	card.SetUserVerified(false)
	f.Add(get(card, testOrigin, []byte(testOperator)))
	card.SetUserVerified(true)
	card.SetBackup(true, true)
	f.Add(get(card, testOrigin, []byte(testOperator)))
	card.SetBackup(false, false)
	card.SetCounter(1) // the enrollment's counter again
	f.Add(get(card, testOrigin, []byte(testOperator)))
	f.Add(append(bytes.Clone(valid), ' '))
	f.Add(bytes.Replace(valid, []byte(`"type":"public-key"`), []byte(`"type":"public-key","type":"password"`), 1))
	for _, j := range fuzzJunk {
		f.Add([]byte(j))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, state := range states {
			a, err := c.FinishLogin(state, data, store.lookup)
			if err != nil {
				checkRefusal(t, err)
				continue
			}
			var r authntest.Response
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatalf("accepted what does not decode: %v\n%q", err, data)
			}
			ad, cd := r.Response.AuthenticatorData, r.Response.ClientDataJSON
			if !signed[string(ad)+string(cd)] {
				t.Fatalf("accepted a message no card signed:\n%q", data)
			}
			owner := store.cards[string(r.RawID)]
			want := Assertion{OperatorID: owner.OperatorID, CredentialID: owner.CredentialID,
				SignCount: binary.BigEndian.Uint32(ad[33:37]), UserVerified: true}
			if owner.OperatorID == "" || a.OperatorID != want.OperatorID || !bytes.Equal(a.CredentialID, want.CredentialID) ||
				a.SignCount != want.SignCount || !a.UserVerified {
				t.Fatalf("accepted as %+v, want %+v", a, want)
			}
			if uh := r.Response.UserHandle; len(uh) > 0 && string(uh) != string(owner.OperatorID) {
				t.Fatalf("accepted user handle %q for %s", uh, owner.OperatorID)
			}
			if a.SignCount <= owner.SignCount {
				t.Fatalf("accepted counter %d over stored %d", a.SignCount, owner.SignCount)
			}
		}
	})
}

// FuzzFinishEnrollment feeds FinishEnrollment arbitrary registration JSON.
// What an accepted response must satisfy depends on its attestation: a
// "packed" statement signs the authenticator data and the client data, so
// they must be what a card signed; "none" signs nothing — the WebAuthn
// relying party cannot tell a card's "none" response from a client's
// rewrite of one — so the response must at least be bound to this ceremony
// (type, challenge, origin), verified (UV) and scoped to our RP ID, and the
// credential returned must be the one it carries.
func FuzzFinishEnrollment(f *testing.F) {
	c := newFuzzCeremonies(f)
	u := EnrollUser{OperatorID: testOperator, Name: "Tanaka Hanako", Exclude: [][]byte{[]byte("old card")}}
	opts, state, _, err := c.BeginEnrollment(u)
	if err != nil {
		f.Fatal(err)
	}
	var o creationOptions
	if err := json.Unmarshal(opts, &o); err != nil {
		f.Fatal(err)
	}
	challenge := o.PublicKey.Challenge

	signed := map[string]bool{}
	create := func(k *authntest.Card, origin string) []byte {
		raw := k.Create(opts, origin)
		var r authntest.Response
		if err := json.Unmarshal(raw, &r); err != nil {
			f.Fatal(err)
		}
		signed[string(r.Response.AuthenticatorData)+string(r.Response.ClientDataJSON)] = true
		return raw
	}
	card := authntest.NewSeededCard(f, "FuzzFinishEnrollment")
	valid := create(card, testOrigin)
	if _, err := c.FinishEnrollment(state, valid, u, CardPolicy{}); err != nil {
		f.Fatalf("seed enrollment refused (was the setup changed?): %v", err)
	}
	f.Add(valid)
	card.SetAttestation(authntest.AttestationPacked)
	packed := create(card, testOrigin)
	if _, err := c.FinishEnrollment(state, packed, u, CardPolicy{}); err != nil {
		f.Fatalf("seed packed enrollment refused: %v", err)
	}
	f.Add(packed)
	f.Add(create(card, "https://evil.example"))
	for _, fault := range []authntest.Fault{authntest.FaultRPIDHash, authntest.FaultSignature, authntest.FaultOtherKey, authntest.FaultChallenge, authntest.FaultCeremonyType} {
		card.SetFaults(fault)
		f.Add(create(card, testOrigin))
	}
	card.SetFaults()
	card.SetUserVerified(false)
	f.Add(create(card, testOrigin))
	card.SetUserVerified(true)
	card.SetBackup(true, true)
	f.Add(create(card, testOrigin))
	card.SetBackup(false, false)
	card.SetAAGUID(aaguidOther)
	f.Add(create(card, testOrigin))
	f.Add(bytes.Replace(packed, []byte(`"fmt"`), []byte(`"fmt","fmt"`), 1))
	for _, j := range fuzzJunk {
		f.Add([]byte(j))
	}
	pol := CardPolicy{AllowedAAGUIDs: []string{"00000000-0000-0000-0000-000000000000"}}
	rpHash := sha256.Sum256([]byte(testRPID))

	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := c.FinishEnrollment(state, data, u, pol)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		var r authntest.Response
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("accepted what does not decode: %v\n%q", err, data)
		}
		var att struct {
			Fmt      string `cbor:"fmt"`
			AuthData []byte `cbor:"authData"`
		}
		if err := cbor.Unmarshal(r.Response.AttestationObject, &att); err != nil {
			t.Fatalf("accepted an attestation object that does not decode: %v", err)
		}
		ad := att.AuthData
		if len(ad) < 55 {
			t.Fatalf("accepted %d bytes of authenticator data", len(ad))
		}
		var cd struct{ Type, Challenge, Origin string }
		if err := json.Unmarshal(r.Response.ClientDataJSON, &cd); err != nil {
			t.Fatalf("accepted client data that does not decode: %v", err)
		}
		switch {
		case cd.Type != "webauthn.create" || cd.Challenge != challenge || !strings.EqualFold(strings.TrimSuffix(cd.Origin, ":443"), testOrigin):
			t.Fatalf("accepted client data %+v", cd)
		case !bytes.Equal(ad[:32], rpHash[:]) || ad[32]&0x05 != 0x05:
			t.Fatalf("accepted authenticator data %x", ad[:37])
		case att.Fmt != "none" && !signed[string(ad)+string(r.Response.ClientDataJSON)]:
			t.Fatalf("accepted a %q attestation of a message no card signed:\n%q", att.Fmt, data)
		case nc.Attestation != att.Fmt || !bytes.Equal(nc.CredentialID, r.RawID) ||
			!bytes.Equal(nc.CredentialID, ad[55:55+int(binary.BigEndian.Uint16(ad[53:55]))]) ||
			!bytes.Equal(nc.AAGUID, ad[37:53]) || nc.SignCount != binary.BigEndian.Uint32(ad[33:37]) ||
			nc.Flags != ad[32]&(FlagUserVerified|FlagBackupEligible|FlagBackupState) || nc.Flags&FlagBackupEligible != 0:
			t.Fatalf("accepted as %+v, which is not what the response carries", nc)
		}
	})
}
