package authntest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"
)

const (
	rpID   = "opgate.test"
	origin = "https://opgate.test"
)

var (
	challenge = b64([]byte("0123456789abcdef0123456789abcdef"))
	userID    = []byte("OP-7Q2K9X4M")
)

func createOptions(exclude ...[]byte) []byte {
	ex := []map[string]string{}
	for _, id := range exclude {
		ex = append(ex, map[string]string{"type": "public-key", "id": b64(id)})
	}
	b, _ := json.Marshal(map[string]any{"publicKey": map[string]any{
		"rp":                 map[string]string{"id": rpID, "name": "opgate"},
		"user":               map[string]string{"id": b64(userID), "name": "Tanaka"},
		"challenge":          challenge,
		"pubKeyCredParams":   []map[string]any{{"type": "public-key", "alg": -7}},
		"excludeCredentials": ex,
	}})
	return b
}

func getOptions() []byte {
	b, _ := json.Marshal(map[string]any{"publicKey": map[string]any{"rpId": rpID, "challenge": challenge}})
	return b
}

// response is the browser JSON the card produces, decoded.
type response struct {
	ID, RawID, Type string
	ClientData      map[string]any
	ClientDataJSON  []byte
	AuthData        []byte
	Fmt             string
	AttStmt         map[string]any
	Signature       []byte
	UserHandle      []byte
	HasUserHandle   bool
}

func decodeResponse(t *testing.T, raw []byte) response {
	t.Helper()
	var j struct {
		ID       string `json:"id"`
		RawID    string `json:"rawId"`
		Type     string `json:"type"`
		Response struct {
			ClientDataJSON    string  `json:"clientDataJSON"`
			AttestationObject string  `json:"attestationObject"`
			AuthenticatorData string  `json:"authenticatorData"`
			Signature         string  `json:"signature"`
			UserHandle        *string `json:"userHandle"`
		} `json:"response"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("%q is not raw base64url: %v", s, err)
		}
		return b
	}
	r := response{ID: j.ID, RawID: j.RawID, Type: j.Type, ClientDataJSON: dec(j.Response.ClientDataJSON)}
	if err := json.Unmarshal(r.ClientDataJSON, &r.ClientData); err != nil {
		t.Fatal(err)
	}
	if j.Response.AttestationObject != "" {
		var att struct {
			Fmt      string         `cbor:"fmt"`
			AttStmt  map[string]any `cbor:"attStmt"`
			AuthData []byte         `cbor:"authData"`
		}
		if err := cbor.Unmarshal(dec(j.Response.AttestationObject), &att); err != nil {
			t.Fatal(err)
		}
		r.Fmt, r.AttStmt, r.AuthData = att.Fmt, att.AttStmt, att.AuthData
		if got := dec(j.Response.AuthenticatorData); !bytes.Equal(got, r.AuthData) {
			t.Error("response.authenticatorData differs from the attestation object's")
		}
	} else {
		r.AuthData, r.Signature = dec(j.Response.AuthenticatorData), dec(j.Response.Signature)
	}
	if j.Response.UserHandle != nil {
		r.HasUserHandle, r.UserHandle = true, dec(*j.Response.UserHandle)
	}
	return r
}

// parsedAuthData is authenticator data split per WebAuthn §6.1.
type parsedAuthData struct {
	RPIDHash []byte
	Flags    byte
	Counter  uint32
	AAGUID   []byte
	CredID   []byte
	Key      map[int]any
}

func parseAuthData(t *testing.T, a []byte) parsedAuthData {
	t.Helper()
	if len(a) < 37 {
		t.Fatalf("authenticator data is %d bytes", len(a))
	}
	p := parsedAuthData{RPIDHash: a[:32], Flags: a[32], Counter: binary.BigEndian.Uint32(a[33:37])}
	if p.Flags&flagAT == 0 {
		if len(a) != 37 {
			t.Fatalf("%d bytes after the counter without AT", len(a)-37)
		}
		return p
	}
	p.AAGUID = a[37:53]
	n := int(binary.BigEndian.Uint16(a[53:55]))
	p.CredID = a[55 : 55+n]
	rest, err := cbor.UnmarshalFirst(a[55+n:], &p.Key)
	if err != nil || len(rest) != 0 {
		t.Fatalf("credential public key: %v, %d bytes left", err, len(rest))
	}
	return p
}

func verify(t *testing.T, pub *ecdsa.PublicKey, auth, clientData, sig []byte) bool {
	t.Helper()
	cdh := sha256.Sum256(clientData)
	d := sha256.Sum256(append(bytes.Clone(auth), cdh[:]...))
	return ecdsa.VerifyASN1(pub, d[:], sig)
}

func TestCardCreate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(*Card)
		flags  byte
		fmt    string
		packed bool // attStmt carries a valid self-attestation
	}{
		{"defaults", func(*Card) {}, flagUP | flagUV | flagAT, "none", false},
		{"packed", func(c *Card) { c.SetAttestation(AttestationPacked) }, flagUP | flagUV | flagAT, "packed", true},
		{"no UV", func(c *Card) { c.SetUserVerified(false) }, flagUP | flagAT, "none", false},
		{"backed up", func(c *Card) { c.SetBackup(true, true) }, flagUP | flagUV | flagBE | flagBS | flagAT, "none", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCard(t)
			c.SetAAGUID("2FC0579F-8113-47EA-B116-BB5A8DB9202A")
			tc.setup(c)
			r := decodeResponse(t, c.Create(createOptions([]byte("another card")), origin))
			ad := parseAuthData(t, r.AuthData)
			rp := sha256.Sum256([]byte(rpID))
			pt, _ := c.PublicKey().Bytes()
			want := parsedAuthData{
				RPIDHash: rp[:], Flags: tc.flags, Counter: 1,
				AAGUID: []byte{0x2f, 0xc0, 0x57, 0x9f, 0x81, 0x13, 0x47, 0xea, 0xb1, 0x16, 0xbb, 0x5a, 0x8d, 0xb9, 0x20, 0x2a},
				CredID: c.CredentialID(),
				Key:    map[int]any{1: uint64(2), 3: int64(-7), -1: uint64(1), -2: pt[1:33], -3: pt[33:65]},
			}
			if diff := cmp.Diff(want, ad); diff != "" {
				t.Errorf("authenticator data (-want +got):\n%s", diff)
			}
			wantCD := map[string]any{"type": "webauthn.create", "challenge": challenge, "origin": origin, "crossOrigin": false}
			if diff := cmp.Diff(wantCD, r.ClientData); diff != "" {
				t.Errorf("client data (-want +got):\n%s", diff)
			}
			if r.ID != b64(c.CredentialID()) || r.RawID != r.ID || r.Type != "public-key" || r.Fmt != tc.fmt {
				t.Errorf("id %q rawId %q type %q fmt %q", r.ID, r.RawID, r.Type, r.Fmt)
			}
			if tc.packed {
				if r.AttStmt["alg"] != int64(-7) || !verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.AttStmt["sig"].([]byte)) {
					t.Errorf("packed self attestation does not verify: %v", r.AttStmt)
				}
			} else if len(r.AttStmt) != 0 {
				t.Errorf("none attestation with a statement: %v", r.AttStmt)
			}
			if !bytes.Equal(c.UserHandle(), userID) {
				t.Errorf("user handle %q, want %q", c.UserHandle(), userID)
			}
			if !bytes.Equal(c.COSEPublicKey(), r.AuthData[55+len(c.CredentialID()):]) {
				t.Error("COSEPublicKey differs from the attested key")
			}
		})
	}
}

func TestCardGet(t *testing.T) {
	other := NewCard(t)
	for _, tc := range []struct {
		name       string
		setup      func(*Card)
		userHandle []byte
		check      func(t *testing.T, c *Card, r response, ad parsedAuthData)
	}{
		{"defaults", func(*Card) {}, userID, func(t *testing.T, c *Card, r response, ad parsedAuthData) {
			if !verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature does not verify")
			}
			if ad.Flags != flagUP|flagUV || ad.Counter != 1 || !r.HasUserHandle || !bytes.Equal(r.UserHandle, userID) {
				t.Errorf("flags %#x counter %d user handle %q", ad.Flags, ad.Counter, r.UserHandle)
			}
		}},
		{"no user handle", func(*Card) {}, nil, func(t *testing.T, _ *Card, r response, _ parsedAuthData) {
			if r.HasUserHandle {
				t.Error("user handle present")
			}
		}},
		{"FaultRPIDHash", func(c *Card) { c.SetFaults(FaultRPIDHash) }, nil, func(t *testing.T, c *Card, r response, ad parsedAuthData) {
			if h := sha256.Sum256([]byte("evil.example")); !bytes.Equal(ad.RPIDHash, h[:]) {
				t.Error("rpIdHash is not another RP ID's")
			}
			if !verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature should still verify")
			}
		}},
		{"FaultSignature", func(c *Card) { c.SetFaults(FaultSignature) }, nil, func(t *testing.T, c *Card, r response, _ parsedAuthData) {
			if verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature verifies")
			}
		}},
		{"FaultOtherKey", func(c *Card) { c.SetFaults(FaultOtherKey) }, nil, func(t *testing.T, c *Card, r response, _ parsedAuthData) {
			if verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature verifies with the credential key")
			}
			if !verify(t, &c.other.PublicKey, r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature is not the other key's")
			}
		}},
		{"FaultChallenge and FaultCeremonyType", func(c *Card) { c.SetFaults(FaultChallenge, FaultCeremonyType) }, nil, func(t *testing.T, _ *Card, r response, _ parsedAuthData) {
			if r.ClientData["challenge"] == challenge || r.ClientData["type"] != "webauthn.create" {
				t.Errorf("client data %v", r.ClientData)
			}
		}},
		{"faults cleared", func(c *Card) { c.SetFaults(FaultSignature); c.SetFaults() }, nil, func(t *testing.T, c *Card, r response, _ parsedAuthData) {
			if !verify(t, c.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("signature does not verify")
			}
		}},
		{"not the other card's key", func(*Card) {}, nil, func(t *testing.T, c *Card, r response, _ parsedAuthData) {
			if verify(t, other.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
				t.Error("two cards share a key")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCard(t)
			tc.setup(c)
			r := decodeResponse(t, c.Get(getOptions(), origin, tc.userHandle))
			tc.check(t, c, r, parseAuthData(t, r.AuthData))
		})
	}
}

func TestCardCounter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*Card)
		want  []uint32
	}{
		{"counts from 1", func(*Card) {}, []uint32{1, 2, 3}},
		{"set", func(c *Card) { c.SetCounter(41) }, []uint32{41, 42, 43}},
		{"frozen at zero", func(c *Card) { c.SetCounter(0); c.FreezeCounter(true) }, []uint32{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCard(t)
			tc.setup(c)
			got := []uint32{parseAuthData(t, decodeResponse(t, c.Create(createOptions(), origin)).AuthData).Counter}
			for range 2 {
				got = append(got, parseAuthData(t, decodeResponse(t, c.Get(getOptions(), origin, nil)).AuthData).Counter)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCardSeeded(t *testing.T) {
	a, b := NewSeededCard(t, "fuzz"), NewSeededCard(t, "fuzz")
	if !a.PublicKey().Equal(b.PublicKey()) || !bytes.Equal(a.CredentialID(), b.CredentialID()) {
		t.Fatal("same seed, different cards")
	}
	if c := NewSeededCard(t, "other"); c.PublicKey().Equal(a.PublicKey()) || bytes.Equal(c.CredentialID(), a.CredentialID()) {
		t.Fatal("different seeds, same card")
	}
	if ra, rb := a.Get(getOptions(), origin, nil), b.Get(getOptions(), origin, nil); !bytes.Equal(ra, rb) {
		t.Errorf("seeded cards answer differently:\n%s\n%s", ra, rb)
	}
	// The deterministic signature is a valid one.
	r := decodeResponse(t, a.Get(getOptions(), origin, nil))
	if !verify(t, a.PublicKey(), r.AuthData, r.ClientDataJSON, r.Signature) {
		t.Error("seeded signature does not verify")
	}
	if a.PublicKey().Curve != elliptic.P256() {
		t.Error("not a P-256 key")
	}
}

func TestCardAAGUID(t *testing.T) {
	c := NewCard(t)
	if got := c.AAGUID(); got != "00000000-0000-0000-0000-000000000000" {
		t.Errorf("default AAGUID %q", got)
	}
	c.SetAAGUID("2FC0579F-8113-47EA-B116-BB5A8DB9202A")
	if got := c.AAGUID(); got != "2fc0579f-8113-47ea-b116-bb5a8db9202a" {
		t.Errorf("AAGUID %q", got)
	}
}
