// Package authntest provides a software FIDO2 authenticator — a virtual IC
// card — for tests of card enrollment and card login. It answers the
// creation and request options a relying party sends with the JSON a
// browser would post back (PublicKeyCredential.toJSON()), carrying real
// CBOR attestation objects and ES256 signatures, and it can be told to
// misbehave in the ways a relying party must refuse.
//
// It does not import go-webauthn: it is written from the WebAuthn Level 3
// specification (§6.1 authenticator data, §6.5 attestation objects, §8.2
// packed and §8.7 none attestation, §5.8.1 client data), so that the
// library is checked against an independent implementation rather than
// against itself.
package authntest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Fault is a way the card misbehaves on purpose.
type Fault string

// Faults a relying party must refuse.
const (
	// FaultRPIDHash makes the authenticator data carry the hash of another
	// RP ID than the one in the options (§6.1 rpIdHash).
	FaultRPIDHash Fault = "rp_id_hash"
	// FaultSignature signs other bytes than those the card reports, so the
	// signature is well formed but wrong. Under "none" attestation nothing
	// is signed at creation and the fault has no effect there.
	FaultSignature Fault = "signature"
	// FaultOtherKey signs with a key other than the credential's.
	FaultOtherKey Fault = "other_key"
	// FaultChallenge puts another challenge in the client data.
	FaultChallenge Fault = "challenge"
	// FaultCeremonyType gives the client data the other ceremony's type
	// ("webauthn.get" at creation, "webauthn.create" at assertion).
	FaultCeremonyType Fault = "ceremony_type"
)

// Attestation statement formats the card can produce.
const (
	AttestationNone   = "none"
	AttestationPacked = "packed" // self attestation (§8.2, no x5c)
)

// Authenticator data flag bits (WebAuthn §6.1).
const (
	flagUP = 0x01
	flagUV = 0x04
	flagBE = 0x08
	flagBS = 0x10
	flagAT = 0x40
)

// coseES256 is the COSE algorithm identifier of ES256 (RFC 9053 §2.1).
const coseES256 = -7

// Card is a virtual FIDO2 card holding one ES256 credential. Its knobs are
// safe to turn from several goroutines, though a test usually owns its card.
type Card struct {
	t             TB
	deterministic bool

	mu          sync.Mutex
	key         *ecdsa.PrivateKey
	other       *ecdsa.PrivateKey
	id          []byte
	aaguid      [16]byte
	userHandle  []byte
	uv, be, bs  bool
	next        uint32
	frozen      bool
	attestation string
	faults      map[Fault]bool
}

// TB is the part of testing.TB a card uses to report misuse; a load tool
// passes its own.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// NewCard returns a card with a fresh P-256 key, a random 32-byte
// credential ID and the zero AAGUID. User verification is on, backup
// eligibility and backup state are off, attestation is "none", and the
// signature counter reports 1 at the first signature (creation included)
// and one more at each signature after it.
func NewCard(t TB) *Card {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("authntest: generate key: %v", err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("authntest: generate key: %v", err)
	}
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		t.Fatalf("authntest: credential id: %v", err)
	}
	return newCard(t, key, other, id, false)
}

// NewSeededCard is NewCard with everything derived from seed: the key, the
// other key of FaultOtherKey and the credential ID are the same in every
// process, and signatures are deterministic (RFC 6979). Fuzz targets need
// this: every fuzz worker runs the target's setup again, and a card made
// afresh there would not recognise what the coordinator's card signed.
// The seed is public; the key is a test key and nothing else.
func NewSeededCard(t TB, seed string) *Card {
	t.Helper()
	key := seededKey(t, "key:"+seed)
	other := seededKey(t, "other:"+seed)
	id := sha256.Sum256([]byte("credential id:" + seed))
	return newCard(t, key, other, id[:], true)
}

func seededKey(t TB, s string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("opgate authntest " + s))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatalf("authntest: seeded key: %v", err)
	}
	return key
}

func newCard(t TB, key, other *ecdsa.PrivateKey, id []byte, deterministic bool) *Card {
	return &Card{
		t:             t,
		deterministic: deterministic,
		key:           key,
		other:         other,
		id:            id,
		uv:            true,
		next:          1,
		attestation:   AttestationNone,
		faults:        map[Fault]bool{},
	}
}

// CredentialID returns the card's credential ID.
func (c *Card) CredentialID() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.id)
}

// PublicKey returns the credential's public key.
func (c *Card) PublicKey() *ecdsa.PublicKey { return &c.key.PublicKey }

// COSEPublicKey returns the credential's public key as the COSE_Key the
// card puts in its attested credential data (RFC 9052 §7, CTAP2 canonical
// CBOR).
func (c *Card) COSEPublicKey() []byte {
	c.t.Helper()
	return c.coseKey()
}

// UserHandle returns the user.id of the options the card last created a
// credential for, as a discoverable credential would remember it; nil
// before Create.
func (c *Card) UserHandle() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.userHandle)
}

// SetAAGUID sets the AAGUID the card reports, in canonical 8-4-4-4-12 form.
func (c *Card) SetAAGUID(aaguid string) {
	c.t.Helper()
	raw, err := hex.DecodeString(strings.ReplaceAll(aaguid, "-", ""))
	if err != nil || len(raw) != 16 || len(aaguid) != 36 {
		c.t.Fatalf("authntest: %q is not an AAGUID", aaguid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.aaguid[:], raw)
}

// AAGUID returns the AAGUID the card reports, in canonical lower-case form.
func (c *Card) AAGUID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := hex.EncodeToString(c.aaguid[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// SetUserVerified sets whether the card reports user verification (its PIN
// or fingerprint checked, UV flag). User presence is always reported.
func (c *Card) SetUserVerified(uv bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uv = uv
}

// SetBackup sets the backup eligibility (BE) and backup state (BS) flags.
func (c *Card) SetBackup(eligible, state bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.be, c.bs = eligible, state
}

// SetCounter makes the next signature report n; later ones count up from
// there unless the counter is frozen. Setting a value already reported
// replays it, as a cloned card would.
func (c *Card) SetCounter(n uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = n
}

// FreezeCounter stops (or restarts) the counter: while frozen every
// signature reports the same value. SetCounter(0) and FreezeCounter(true)
// make a card without a counter, which FIDO allows (CTAP2.1 §6.1: a
// counter that is always zero).
func (c *Card) FreezeCounter(frozen bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = frozen
}

// SetAttestation chooses the attestation statement format of Create:
// AttestationNone (the default) or AttestationPacked (self attestation).
func (c *Card) SetAttestation(format string) {
	c.t.Helper()
	if format != AttestationNone && format != AttestationPacked {
		c.t.Fatalf("authntest: attestation format %q is not supported", format)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attestation = format
}

// SetFaults replaces the card's faults; no argument makes it behave.
func (c *Card) SetFaults(faults ...Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = map[Fault]bool{}
	for _, f := range faults {
		c.faults[f] = true
	}
}

// creationOptions is what the card reads of PublicKeyCredentialCreationOptions.
type creationOptions struct {
	PublicKey struct {
		RP struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Challenge string `json:"challenge"`
		Params    []struct {
			Alg int `json:"alg"`
		} `json:"pubKeyCredParams"`
		Exclude []struct {
			ID string `json:"id"`
		} `json:"excludeCredentials"`
	} `json:"publicKey"`
}

// requestOptions is what the card reads of PublicKeyCredentialRequestOptions.
type requestOptions struct {
	PublicKey struct {
		RPID      string `json:"rpId"`
		Challenge string `json:"challenge"`
	} `json:"publicKey"`
}

// Create answers creation options ({"publicKey":{...}}, as
// navigator.credentials.create receives them) as a browser at origin would,
// returning the registration response JSON. It fails the test if the
// options do not parse, do not offer ES256, or exclude this card's
// credential (a real card would refuse with InvalidStateError).
func (c *Card) Create(optionsJSON []byte, origin string) []byte {
	c.t.Helper()
	var o creationOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		c.t.Fatalf("authntest: creation options: %v", err)
	}
	p := o.PublicKey
	if p.RP.ID == "" || p.Challenge == "" || p.User.ID == "" {
		c.t.Fatalf("authntest: creation options lack rp.id, challenge or user.id")
	}
	es256 := false
	for _, prm := range p.Params {
		es256 = es256 || prm.Alg == coseES256
	}
	if !es256 {
		c.t.Fatalf("authntest: creation options do not offer ES256")
	}
	user := c.decode(p.User.ID, "user.id")
	ex := make([][]byte, len(p.Exclude))
	for i, e := range p.Exclude {
		ex[i] = c.decode(e.ID, "excludeCredentials")
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range ex {
		if bytes.Equal(e, c.id) {
			c.t.Fatalf("authntest: the card's credential is in excludeCredentials")
		}
	}
	c.userHandle = user

	clientData := c.clientData("webauthn.create", "webauthn.get", p.Challenge, origin)
	cose := c.coseKey()
	auth := c.authData(p.RP.ID, flagAT)
	auth = append(auth, c.aaguid[:]...)
	auth = binary.BigEndian.AppendUint16(auth, uint16(len(c.id)))
	auth = append(auth, c.id...)
	auth = append(auth, cose...)

	stmt := map[string]any{}
	if c.attestation == AttestationPacked {
		hash := sha256.Sum256(clientData)
		stmt = map[string]any{"alg": coseES256, "sig": c.sign(append(bytes.Clone(auth), hash[:]...))}
	}
	attObj := c.cbor(struct {
		Fmt      string         `cbor:"fmt"`
		AttStmt  map[string]any `cbor:"attStmt"`
		AuthData []byte         `cbor:"authData"`
	}{c.attestation, stmt, auth})

	spki, err := x509.MarshalPKIXPublicKey(&c.key.PublicKey)
	if err != nil {
		c.t.Fatalf("authntest: public key: %v", err)
	}
	return c.json(map[string]any{
		"id":                      b64(c.id),
		"rawId":                   b64(c.id),
		"type":                    "public-key",
		"authenticatorAttachment": "cross-platform",
		"clientExtensionResults":  map[string]any{},
		"response": map[string]any{
			"clientDataJSON":     b64(clientData),
			"attestationObject":  b64(attObj),
			"authenticatorData":  b64(auth),
			"publicKey":          b64(spki),
			"publicKeyAlgorithm": coseES256,
			"transports":         []string{"nfc", "usb"},
		},
	})
}

// Get answers request options ({"publicKey":{...}}) as a browser at origin
// would, returning the authentication response JSON. userHandle is what the
// card reports as response.userHandle; nil leaves it out, as a card does
// for a credential that is not discoverable. The card signs whatever the
// options' allowCredentials say, so that tests can present a card the
// relying party did not ask for.
func (c *Card) Get(optionsJSON []byte, origin string, userHandle []byte) []byte {
	c.t.Helper()
	var o requestOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		c.t.Fatalf("authntest: request options: %v", err)
	}
	p := o.PublicKey
	if p.RPID == "" || p.Challenge == "" {
		c.t.Fatalf("authntest: request options lack rpId or challenge")
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	clientData := c.clientData("webauthn.get", "webauthn.create", p.Challenge, origin)
	auth := c.authData(p.RPID, 0)
	hash := sha256.Sum256(clientData)
	sig := c.sign(append(bytes.Clone(auth), hash[:]...))

	resp := map[string]any{
		"clientDataJSON":    b64(clientData),
		"authenticatorData": b64(auth),
		"signature":         b64(sig),
	}
	if userHandle != nil {
		resp["userHandle"] = b64(userHandle)
	}
	return c.json(map[string]any{
		"id":                      b64(c.id),
		"rawId":                   b64(c.id),
		"type":                    "public-key",
		"authenticatorAttachment": "cross-platform",
		"clientExtensionResults":  map[string]any{},
		"response":                resp,
	})
}

// clientData builds the CollectedClientData JSON (§5.8.1) in the order
// browsers serialise it.
func (c *Card) clientData(typ, otherType, challenge, origin string) []byte {
	if c.faults[FaultCeremonyType] {
		typ = otherType
	}
	if c.faults[FaultChallenge] {
		challenge = b64([]byte("a challenge the relying party never sent"))
	}
	return c.json(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{typ, challenge, origin, false})
}

// authData builds the first 37 bytes of authenticator data (§6.1) and
// counts one signature. Callers hold c.mu.
func (c *Card) authData(rpID string, extra byte) []byte {
	if c.faults[FaultRPIDHash] {
		rpID = "evil.example"
	}
	h := sha256.Sum256([]byte(rpID))
	flags := flagUP | extra
	if c.uv {
		flags |= flagUV
	}
	if c.be {
		flags |= flagBE
	}
	if c.bs {
		flags |= flagBS
	}
	counter := c.next
	if !c.frozen {
		c.next++
	}
	b := append(h[:], flags)
	return binary.BigEndian.AppendUint32(b, counter)
}

// coseKey encodes the credential public key as an EC2 COSE_Key.
func (c *Card) coseKey() []byte {
	pt, err := c.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		c.t.Fatalf("authntest: public key: %v", err)
	}
	return c.cbor(map[int]any{
		1:  2,         // kty: EC2
		3:  coseES256, // alg
		-1: 1,         // crv: P-256
		-2: pt[1:33],  // x
		-3: pt[33:65], // y
	})
}

// sign signs msg as ES256 (ASN.1 DER), honouring the signing faults.
func (c *Card) sign(msg []byte) []byte {
	key := c.key
	if c.faults[FaultOtherKey] {
		key = c.other
	}
	if c.faults[FaultSignature] {
		msg = bytes.Clone(msg)
		msg[len(msg)-1] ^= 0x01
	}
	digest := sha256.Sum256(msg)
	var (
		sig []byte
		err error
	)
	if c.deterministic {
		sig, err = key.Sign(nil, digest[:], crypto.SHA256)
	} else {
		sig, err = ecdsa.SignASN1(rand.Reader, key, digest[:])
	}
	if err != nil {
		c.t.Fatalf("authntest: sign: %v", err)
	}
	return sig
}

func (c *Card) cbor(v any) []byte {
	em, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		c.t.Fatalf("authntest: cbor: %v", err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		c.t.Fatalf("authntest: cbor: %v", err)
	}
	return b
}

func (c *Card) json(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatalf("authntest: json: %v", err)
	}
	return b
}

func (c *Card) decode(s, what string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		c.t.Fatalf("authntest: %s is not base64url: %v", what, err)
	}
	return b
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
