package authn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/clock/clocktest"
)

const (
	testRPID      = "opgate.test"
	testOrigin    = "https://opgate.test"
	testOperator  = opgate.OperatorID("OP-7Q2K9X4M")
	otherOperator = opgate.OperatorID("OP-3H8R2W6N")

	// AAGUIDs of made-up card models.
	aaguidGood    = "2fc0579f-8113-47ea-b116-bb5a8db9202a"
	aaguidOther   = "9c835346-796b-4c27-8898-d6032f515cc5"
	aaguidRevoked = "ee882879-721c-4913-9775-3dfcce97072a"
	aaguidCompro  = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
	aaguidLater   = "0bb43545-fd2c-4185-87dd-feb0b2916ace"
	aaguidUVBypas = "5b0e46ba-db02-44ac-b979-ca9b84f5e335"
)

func newTestCeremonies(t testing.TB, change ...func(*CeremonyConfig)) (*Ceremonies, *clocktest.Clock) {
	t.Helper()
	clk := clocktest.New()
	cfg := CeremonyConfig{RPID: testRPID, RPName: "opgate test", Origins: []string{testOrigin}, Clock: clk}
	for _, f := range change {
		f(&cfg)
	}
	c, err := NewCeremonies(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// cardStore is an in-memory store of enrolled cards, for FinishLogin's
// lookup.
type cardStore struct {
	mu    sync.Mutex
	cards map[string]StoredCredential
	calls int
}

func newCardStore(creds ...StoredCredential) *cardStore {
	s := &cardStore{cards: map[string]StoredCredential{}}
	for _, c := range creds {
		s.cards[string(c.CredentialID)] = c
	}
	return s
}

func (s *cardStore) lookup(id, _ []byte) (StoredCredential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	c, ok := s.cards[string(id)]
	if !ok {
		return StoredCredential{}, ErrUnknownCredential
	}
	return c, nil
}

func (s *cardStore) setCount(id []byte, n uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cards[string(id)]
	c.SignCount = n
	s.cards[string(id)] = c
}

// enroll enrolls card for op and returns it as stored.
func enroll(t testing.TB, c *Ceremonies, card *authntest.Card, op opgate.OperatorID) StoredCredential {
	t.Helper()
	u := EnrollUser{OperatorID: op, Name: "Tanaka Hanako"}
	opts, state, _, err := c.BeginEnrollment(u)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := c.FinishEnrollment(state, card.Create(opts, testOrigin), u, CardPolicy{})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return StoredCredential{OperatorID: op, CredentialID: nc.CredentialID, PublicKey: nc.PublicKey,
		AAGUID: nc.AAGUID, SignCount: nc.SignCount, Flags: nc.Flags}
}

func ceremonyReason(err error) string {
	if ce, ok := errors.AsType[*CeremonyError](err); ok {
		return ce.Reason
	}
	if err == nil {
		return ""
	}
	return "not a CeremonyError: " + err.Error()
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestCeremoniesConfig(t *testing.T) {
	good := CeremonyConfig{RPID: testRPID, RPName: "opgate", Origins: []string{testOrigin}}
	missing := filepath.Join(t.TempDir(), "no-such-blob.jwt")
	for _, tc := range []struct {
		name   string
		change func(*CeremonyConfig)
		want   []string // substrings of the error; nil = valid
	}{
		{"valid", func(*CeremonyConfig) {}, nil},
		{"localhost over http", func(c *CeremonyConfig) {
			c.RPID, c.Origins = "localhost", []string{"http://localhost:8080"}
		}, nil},
		{"subdomain origin", func(c *CeremonyConfig) { c.Origins = []string{"https://counter.opgate.test:8443"} }, nil},
		{"everything missing", func(c *CeremonyConfig) { *c = CeremonyConfig{} },
			[]string{"RPID is required", "RPName is required", "at least one origin"}},
		{"origin of another site", func(c *CeremonyConfig) { c.Origins = []string{"https://evil.example"} },
			[]string{`"https://evil.example"`, "subdomain"}},
		{"suffix that is not a subdomain", func(c *CeremonyConfig) { c.Origins = []string{"https://notopgate.test"} },
			[]string{"subdomain"}},
		{"origin with a path", func(c *CeremonyConfig) { c.Origins = []string{testOrigin + "/login"} },
			[]string{"scheme://host[:port] only"}},
		{"origin without scheme", func(c *CeremonyConfig) { c.Origins = []string{"opgate.test"} },
			[]string{"scheme must be https"}},
		{"http off localhost", func(c *CeremonyConfig) { c.Origins = []string{"http://opgate.test"} },
			[]string{"localhost only"}},
		{"RP ID with a scheme", func(c *CeremonyConfig) { c.RPID = "https://opgate.test" },
			[]string{"RPID", "not a domain"}},
		{"negative timeout", func(c *CeremonyConfig) { c.Timeout = -time.Second }, []string{"Timeout"}},
		{"timeout over ten minutes", func(c *CeremonyConfig) { c.Timeout = time.Hour }, []string{"Timeout"}},
		{"metadata file missing", func(c *CeremonyConfig) { c.MetadataFile = missing }, []string{"MetadataFile"}},
		{"all problems joined", func(c *CeremonyConfig) { c.RPName, c.Timeout, c.MetadataFile = "", -1, missing },
			[]string{"RPName", "Timeout", "MetadataFile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			_, err := NewCeremonies(cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("NewCeremonies: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("NewCeremonies accepted the config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// creationOptions is what the tests read of BeginEnrollment's options.
type creationOptions struct {
	PublicKey struct {
		RP struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"rp"`
		User struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			DisplayName string `json:"displayName"`
		} `json:"user"`
		Challenge string `json:"challenge"`
		Params    []struct {
			Type string `json:"type"`
			Alg  int    `json:"alg"`
		} `json:"pubKeyCredParams"`
		Timeout int `json:"timeout"`
		Exclude []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"excludeCredentials"`
		Selection struct {
			Attachment         string `json:"authenticatorAttachment"`
			ResidentKey        string `json:"residentKey"`
			RequireResidentKey bool   `json:"requireResidentKey"`
			UserVerification   string `json:"userVerification"`
		} `json:"authenticatorSelection"`
		Hints       []string `json:"hints"`
		Attestation string   `json:"attestation"`
	} `json:"publicKey"`
}

func TestEnrollmentOptions(t *testing.T) {
	c, clk := newTestCeremonies(t)
	existing := [][]byte{[]byte("card-one-credential-id"), {0x00, 0xff, 0x10}}
	for _, tc := range []struct {
		name    string
		exclude [][]byte
	}{
		{"first card", nil},
		{"existing cards excluded", existing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, state, expires, err := c.BeginEnrollment(EnrollUser{OperatorID: testOperator, Name: "Tanaka Hanako", Exclude: tc.exclude})
			if err != nil {
				t.Fatal(err)
			}
			if len(state) == 0 {
				t.Error("no state")
			}
			if want := clk.Now().Add(120 * time.Second); !expires.Equal(want) {
				t.Errorf("expiresAt = %v, want %v", expires, want)
			}
			var got creationOptions
			if err := json.Unmarshal(opts, &got); err != nil {
				t.Fatalf("options are not {\"publicKey\":{...}}: %v\n%s", err, opts)
			}
			var want creationOptions
			p := &want.PublicKey
			p.RP.ID, p.RP.Name = testRPID, "opgate test"
			p.User.ID, p.User.Name, p.User.DisplayName = b64url([]byte(testOperator)), "Tanaka Hanako", "Tanaka Hanako"
			p.Challenge = got.PublicKey.Challenge
			p.Params = []struct {
				Type string `json:"type"`
				Alg  int    `json:"alg"`
			}{{"public-key", -7}, {"public-key", -8}, {"public-key", -257}}
			p.Timeout = 120000
			for _, id := range tc.exclude {
				p.Exclude = append(p.Exclude, struct {
					Type string `json:"type"`
					ID   string `json:"id"`
				}{"public-key", b64url(id)})
			}
			p.Selection.Attachment, p.Selection.ResidentKey, p.Selection.UserVerification = "cross-platform", "preferred", "required"
			p.Hints = []string{"security-key"}
			p.Attestation = "direct"
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("creation options (-want +got):\n%s", diff)
			}
			if ch, err := base64.RawURLEncoding.DecodeString(got.PublicKey.Challenge); err != nil || len(ch) < 16 {
				t.Errorf("challenge %q is not 16+ bytes of base64url", got.PublicKey.Challenge)
			}
		})
	}
}

func TestEnrollmentBeginRefusesBadInput(t *testing.T) {
	c, _ := newTestCeremonies(t)
	for _, tc := range []struct {
		name string
		u    EnrollUser
	}{
		{"no operator", EnrollUser{}},
		{"operator ID over 64 bytes", EnrollUser{OperatorID: opgate.OperatorID(strings.Repeat("X", 65))}},
		{"empty excluded ID", EnrollUser{OperatorID: testOperator, Exclude: [][]byte{{}}}},
		{"excluded ID over 1023 bytes", EnrollUser{OperatorID: testOperator, Exclude: [][]byte{make([]byte, 1024)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, _, err := c.BeginEnrollment(tc.u); err == nil {
				t.Fatal("BeginEnrollment accepted it")
			}
		})
	}
}

func TestEnrollmentRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		card    func(*authntest.Card)
		pol     CardPolicy
		format  string
		flags   uint8
		counter uint32
	}{
		{"none attestation", func(*authntest.Card) {}, CardPolicy{}, "none", FlagUserVerified, 1},
		{"packed self attestation", func(k *authntest.Card) { k.SetAttestation(authntest.AttestationPacked) }, CardPolicy{}, "packed", FlagUserVerified, 1},
		{"AAGUID on the allow list", func(k *authntest.Card) { k.SetAAGUID(aaguidGood) },
			CardPolicy{AllowedAAGUIDs: []string{aaguidOther, strings.ToUpper(aaguidGood)}}, "none", FlagUserVerified, 1},
		{"backup eligible where policy allows", func(k *authntest.Card) { k.SetBackup(true, true) },
			CardPolicy{AllowBackupEligible: true}, "none", FlagUserVerified | FlagBackupEligible | FlagBackupState, 1},
		{"counter starting at zero", func(k *authntest.Card) { k.SetCounter(0) }, CardPolicy{}, "none", FlagUserVerified, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCeremonies(t)
			card := authntest.NewCard(t)
			card.SetAAGUID(aaguidGood)
			tc.card(card)
			u := EnrollUser{OperatorID: testOperator, Name: "Tanaka Hanako", Exclude: [][]byte{[]byte("old card")}}
			opts, state, _, err := c.BeginEnrollment(u)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.FinishEnrollment(state, card.Create(opts, testOrigin), u, tc.pol)
			if err != nil {
				t.Fatalf("FinishEnrollment: %v", err)
			}
			want := NewCredential{
				CredentialID: card.CredentialID(),
				PublicKey:    card.COSEPublicKey(),
				AAGUID:       mustAAGUID(t, card.AAGUID()),
				SignCount:    tc.counter,
				Flags:        tc.flags,
				Attestation:  tc.format,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("NewCredential (-want +got):\n%s", diff)
			}
			if !bytes.Equal(card.UserHandle(), []byte(testOperator)) {
				t.Errorf("the card keeps user handle %q, want the operator ID", card.UserHandle())
			}
		})
	}
}

func mustAAGUID(t testing.TB, s string) []byte {
	t.Helper()
	id, ok := parseAAGUID(s)
	if !ok {
		t.Fatalf("bad AAGUID %q", s)
	}
	return id[:]
}

// mdsSigner is a metadata signing root of the tests' own, as the FIDO
// Alliance's is for real blobs: its key signs, its certificate
// (base64 DER, CeremonyConfig.MetadataRoot) verifies.
type mdsSigner struct {
	key  *ecdsa.PrivateKey
	root string
}

var testMDS, otherMDS = newMDSSigner(), newMDSSigner()

func newMDSSigner() mdsSigner {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "test MDS3 root"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return mdsSigner{key: key, root: base64.StdEncoding.EncodeToString(der)}
}

// sign makes a JWS of payload as the MDS3 blob is: ES256, no x5c (the
// root itself signs).
func (m mdsSigner) sign(payload []byte) string {
	input := b64url([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + b64url(payload)
	sig, err := jwt.SigningMethodES256.Sign(input, m.key)
	if err != nil {
		panic(err)
	}
	return input + "." + b64url(sig)
}

// writeBlob writes an MDS3 blob signed by testMDS whose payload has the
// given entries.
func writeBlob(t testing.TB, entries ...map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(map[string]any{
		"legalHeader": "test", "no": 7, "nextUpdate": "2027-05-01", "entries": entries,
	})
	if err != nil {
		t.Fatal(err)
	}
	blob := testMDS.sign(payload)
	path := filepath.Join(t.TempDir(), "mds3.jwt")
	if err := os.WriteFile(path, []byte(blob+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mdsEntry(aaguid string, reports ...map[string]any) map[string]any {
	return map[string]any{"aaguid": aaguid, "statusReports": reports, "timeOfLastStatusChange": "2026-01-01"}
}

func status(s, effective string) map[string]any {
	return map[string]any{"status": s, "effectiveDate": effective}
}

func TestEnrollmentRefusals(t *testing.T) {
	blob := writeBlob(t,
		mdsEntry(aaguidGood, status("FIDO_CERTIFIED_L1", "2024-01-01")),
		mdsEntry(aaguidRevoked, status("FIDO_CERTIFIED_L1", "2024-01-01"), status("REVOKED", "2026-06-01")),
		mdsEntry(aaguidCompro, status("FIDO_CERTIFIED_L2", "2024-01-01"), status("USER_KEY_PHYSICAL_COMPROMISE", "2026-06-01"), status("UPDATE_AVAILABLE", "2026-07-01")),
		mdsEntry(aaguidUVBypas, status("FIDO_CERTIFIED_L1", "2024-01-01"), status("USER_VERIFICATION_BYPASS", "2026-05-01")),
		mdsEntry(aaguidLater, status("REVOKED", "2028-01-01")),                                       // not yet in effect at the test clock
		map[string]any{"aaid": "4e4e#4005", "statusReports": []any{status("REVOKED", "2020-01-01")}}, // a UAF model, no AAGUID
	)
	for _, tc := range []struct {
		name   string
		card   func(*authntest.Card)
		pol    CardPolicy
		mangle func(t *testing.T, c *Ceremonies, clk *clocktest.Clock, state, cred []byte, u *EnrollUser) ([]byte, []byte)
		want   string // "" = accepted
	}{
		{name: "no user verification", card: func(k *authntest.Card) { k.SetUserVerified(false) }, want: CeremonyUserNotVerified},
		{name: "backup eligible refused by default", card: func(k *authntest.Card) { k.SetBackup(true, false) }, want: CeremonyBackupEligibleRefused},
		{name: "backed up refused by default", card: func(k *authntest.Card) { k.SetBackup(true, true) }, want: CeremonyBackupEligibleRefused},
		{name: "backup state without eligibility", card: func(k *authntest.Card) { k.SetBackup(false, true) }, pol: CardPolicy{AllowBackupEligible: true}, want: CeremonyMalformed},
		{name: "AAGUID not on the list", card: func(k *authntest.Card) { k.SetAAGUID(aaguidOther) },
			pol: CardPolicy{AllowedAAGUIDs: []string{aaguidGood}}, want: CeremonyAAGUIDNotAllowed},
		{name: "zero AAGUID not on the list", card: func(k *authntest.Card) { k.SetAAGUID("00000000-0000-0000-0000-000000000000") },
			pol: CardPolicy{AllowedAAGUIDs: []string{aaguidGood}}, want: CeremonyAAGUIDNotAllowed},
		{name: "wrong origin", card: func(*authntest.Card) {}, mangle: answerAt("https://evil.example"), want: CeremonyOriginMismatch},
		{name: "origin of another port", card: func(*authntest.Card) {}, mangle: answerAt(testOrigin + ":8443"), want: CeremonyOriginMismatch},
		{name: "wrong RP ID hash", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultRPIDHash) }, want: CeremonyRPIDMismatch},
		{name: "wrong challenge", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultChallenge) }, want: CeremonyChallengeMismatch},
		{name: "assertion type at creation", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultCeremonyType) }, want: CeremonyMalformed},
		{name: "packed attestation with a bad signature", card: func(k *authntest.Card) {
			k.SetAttestation(authntest.AttestationPacked)
			k.SetFaults(authntest.FaultSignature)
		}, want: CeremonyAttestationInvalid},
		{name: "packed attestation by another key", card: func(k *authntest.Card) {
			k.SetAttestation(authntest.AttestationPacked)
			k.SetFaults(authntest.FaultOtherKey)
		}, want: CeremonyAttestationInvalid},
		{name: "metadata: revoked model", card: func(k *authntest.Card) { k.SetAAGUID(aaguidRevoked) }, want: CeremonyAuthenticatorRevoked},
		{name: "metadata: key compromise stays after a later report", card: func(k *authntest.Card) { k.SetAAGUID(aaguidCompro) }, want: CeremonyAuthenticatorRevoked},
		{name: "metadata: revocation not yet in effect", card: func(k *authntest.Card) { k.SetAAGUID(aaguidLater) }},
		{name: "metadata: the card's PIN or fingerprint can be bypassed", card: func(k *authntest.Card) { k.SetAAGUID(aaguidUVBypas) }, want: CeremonyAuthenticatorRevoked},
		{name: "metadata: certified model", card: func(k *authntest.Card) { k.SetAAGUID(aaguidGood) }},
		{name: "metadata: model not listed", card: func(k *authntest.Card) { k.SetAAGUID(aaguidOther) }},
		{name: "revoked model even when allow-listed", card: func(k *authntest.Card) { k.SetAAGUID(aaguidRevoked) },
			pol: CardPolicy{AllowedAAGUIDs: []string{aaguidRevoked}}, want: CeremonyAuthenticatorRevoked},
		{name: "state of another operator", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, _ *clocktest.Clock, state, cred []byte, u *EnrollUser) ([]byte, []byte) {
				u.OperatorID = otherOperator
				return state, cred
			}, want: CeremonyUserMismatch},
		{name: "expired", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, clk *clocktest.Clock, state, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				clk.Advance(120 * time.Second)
				return state, cred
			}, want: CeremonyExpired},
		{name: "just before expiry", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, clk *clocktest.Clock, state, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				clk.Advance(120*time.Second - time.Microsecond)
				return state, cred
			}},
		{name: "login state", card: func(*authntest.Card) {},
			mangle: func(t *testing.T, c *Ceremonies, _ *clocktest.Clock, _, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				_, state, _, err := c.BeginLogin(nil)
				if err != nil {
					t.Fatal(err)
				}
				return state, cred
			}, want: CeremonyMalformed},
		{name: "garbage state", card: func(*authntest.Card) {}, mangle: replace([]byte("{"), nil), want: CeremonyMalformed},
		{name: "not JSON", card: func(*authntest.Card) {}, mangle: replace(nil, []byte("<html>")), want: CeremonyMalformed},
		{name: "a key in another case", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, _ *clocktest.Clock, state, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				return state, bytes.Replace(cred, []byte(`"rawId"`), []byte(`"RawId"`), 1)
			}, want: CeremonyMalformed},
		{name: "empty", card: func(*authntest.Card) {}, mangle: replace(nil, []byte{}), want: CeremonyMalformed},
		{name: "an assertion instead", card: func(*authntest.Card) {},
			mangle: func(t *testing.T, c *Ceremonies, _ *clocktest.Clock, state, _ []byte, _ *EnrollUser) ([]byte, []byte) {
				opts, _, _, err := c.BeginLogin(nil)
				if err != nil {
					t.Fatal(err)
				}
				return state, authntest.NewCard(t).Get(opts, testOrigin, []byte(testOperator))
			}, want: CeremonyMalformed},
		{name: "over 64 KiB", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, _ *clocktest.Clock, state, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				return state, append(cred[:len(cred)-1], []byte(`,"pad":"`+strings.Repeat("A", 64<<10)+`"}`)...)
			}, want: CeremonyMalformed},
		{name: "trailing data", card: func(*authntest.Card) {},
			mangle: func(_ *testing.T, _ *Ceremonies, _ *clocktest.Clock, state, cred []byte, _ *EnrollUser) ([]byte, []byte) {
				return state, append(cred, []byte(" {}")...)
			}, want: CeremonyMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTestCeremonies(t, func(cfg *CeremonyConfig) { cfg.MetadataFile, cfg.MetadataRoot = blob, testMDS.root })
			card := authntest.NewCard(t)
			tc.card(card)
			u := EnrollUser{OperatorID: testOperator, Name: "Tanaka Hanako"}
			opts, state, _, err := c.BeginEnrollment(u)
			if err != nil {
				t.Fatal(err)
			}
			cred := card.Create(opts, testOrigin)
			if tc.mangle != nil {
				state, cred = tc.mangle(t, c, clk, state, cred, &u)
			}
			_, err = c.FinishEnrollment(state, cred, u, tc.pol)
			if got := ceremonyReason(err); got != tc.want {
				t.Fatalf("reason = %q, want %q (err %v)", got, tc.want, err)
			}
			if err != nil && !errors.Is(err, ErrCeremonyFailed) {
				t.Errorf("%v does not match ErrCeremonyFailed", err)
			}
		})
	}
}

// answerAt makes the card answer again as if at origin.
func answerAt(origin string) func(*testing.T, *Ceremonies, *clocktest.Clock, []byte, []byte, *EnrollUser) ([]byte, []byte) {
	return func(t *testing.T, _ *Ceremonies, _ *clocktest.Clock, state, _ []byte, _ *EnrollUser) ([]byte, []byte) {
		t.Helper()
		var st ceremonyState
		if err := json.Unmarshal(state, &st); err != nil {
			t.Fatal(err)
		}
		card := authntest.NewCard(t)
		opts := fmt.Appendf(nil, `{"publicKey":{"rp":{"id":%q},"user":{"id":%q},"challenge":%q,"pubKeyCredParams":[{"type":"public-key","alg":-7}]}}`,
			testRPID, b64url([]byte(testOperator)), st.Session.Challenge)
		return state, card.Create(opts, origin)
	}
}

// replace swaps the state and/or the credential for the given bytes (nil
// keeps the original).
func replace(state, cred []byte) func(*testing.T, *Ceremonies, *clocktest.Clock, []byte, []byte, *EnrollUser) ([]byte, []byte) {
	return func(_ *testing.T, _ *Ceremonies, _ *clocktest.Clock, s, c []byte, _ *EnrollUser) ([]byte, []byte) {
		if state != nil {
			s = state
		}
		if cred != nil {
			c = cred
		}
		return s, c
	}
}

func TestEnrollmentMetadataFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		blob string
		want string // substring of the error; "" = loads
	}{
		{"not a JWS", "just some text", "three parts"},
		{"unsigned", "a." + b64url([]byte(`{"nextUpdate":"2027-01-01","entries":[]}`)) + ".c", "signature"},
		{"signed by another root", otherMDS.sign([]byte(`{"nextUpdate":"2027-01-01","entries":[]}`)), "signature"},
		{"payload not JSON", testMDS.sign([]byte("nope")), "signature"},
		{"no nextUpdate", testMDS.sign([]byte(`{"entries":[]}`)), "nextUpdate"},
		{"bad AAGUID", testMDS.sign([]byte(`{"nextUpdate":"2027-01-01","entries":[{"aaguid":"xyz"}]}`)), "aaguid"},
		{"bad effective date", testMDS.sign([]byte(`{"nextUpdate":"2027-01-01","entries":[{"aaguid":"` + aaguidGood + `","statusReports":[{"status":"REVOKED","effectiveDate":"soon"}]}]}`)), "status report 0"},
		{"empty entries", testMDS.sign([]byte(`{"nextUpdate":"2027-01-01","entries":[]}`)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "blob.jwt")
			if err := os.WriteFile(path, []byte(tc.blob), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := NewCeremonies(CeremonyConfig{RPID: testRPID, RPName: "opgate", Origins: []string{testOrigin}, MetadataFile: path, MetadataRoot: testMDS.root})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("NewCeremonies: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("NewCeremonies error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// requestOptions is what the tests read of BeginLogin's options.
type requestOptions struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		Timeout   int    `json:"timeout"`
		RPID      string `json:"rpId"`
		Allow     []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"allowCredentials"`
		UserVerification string   `json:"userVerification"`
		Hints            []string `json:"hints"`
	} `json:"publicKey"`
}

func TestLoginOptions(t *testing.T) {
	c, clk := newTestCeremonies(t, func(cfg *CeremonyConfig) { cfg.Timeout = 30 * time.Second })
	for _, tc := range []struct {
		name  string
		allow [][]byte
	}{
		{"discoverable", nil},
		{"allow list", [][]byte{[]byte("card-a"), []byte("card-b")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, _, expires, err := c.BeginLogin(tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			if want := clk.Now().Add(30 * time.Second); !expires.Equal(want) {
				t.Errorf("expiresAt = %v, want %v", expires, want)
			}
			var got requestOptions
			if err := json.Unmarshal(opts, &got); err != nil {
				t.Fatal(err)
			}
			var want requestOptions
			want.PublicKey.Challenge = got.PublicKey.Challenge
			want.PublicKey.Timeout = 30000
			want.PublicKey.RPID = testRPID
			want.PublicKey.UserVerification = "required"
			want.PublicKey.Hints = []string{"security-key"}
			for _, id := range tc.allow {
				want.PublicKey.Allow = append(want.PublicKey.Allow, struct {
					Type string `json:"type"`
					ID   string `json:"id"`
				}{"public-key", b64url(id)})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("request options (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, _, err := c.BeginLogin([][]byte{{}}); err == nil {
		t.Error("BeginLogin accepted an empty credential ID")
	}
}

func TestLoginRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		allow      bool
		userHandle bool
	}{
		{"allow list, no user handle", true, false},
		{"allow list with user handle", true, true},
		{"discoverable", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCeremonies(t)
			card := authntest.NewCard(t)
			other := authntest.NewCard(t)
			stored := enroll(t, c, card, testOperator)
			store := newCardStore(stored, enroll(t, c, other, otherOperator))
			var allow [][]byte
			if tc.allow {
				allow = [][]byte{[]byte("another card of the operator"), stored.CredentialID}
			}
			var uh []byte
			if tc.userHandle {
				uh = card.UserHandle()
			}
			for i, wantCount := range []uint32{2, 3} { // enrollment reported 1
				opts, state, _, err := c.BeginLogin(allow)
				if err != nil {
					t.Fatal(err)
				}
				got, err := c.FinishLogin(state, card.Get(opts, testOrigin, uh), store.lookup)
				if err != nil {
					t.Fatalf("login %d: %v", i+1, err)
				}
				want := Assertion{OperatorID: testOperator, CredentialID: stored.CredentialID, SignCount: wantCount, UserVerified: true}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("login %d (-want +got):\n%s", i+1, diff)
				}
				store.setCount(got.CredentialID, got.SignCount)
			}
		})
	}
}

func TestLoginCounter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored uint32
		card   func(*authntest.Card)
		want   string
	}{
		{"increased", 5, func(k *authntest.Card) { k.SetCounter(6) }, ""},
		{"jumped ahead", 5, func(k *authntest.Card) { k.SetCounter(1 << 30) }, ""},
		{"replayed", 5, func(k *authntest.Card) { k.SetCounter(5) }, CeremonySignCountRegressed},
		{"went back", 5, func(k *authntest.Card) { k.SetCounter(4) }, CeremonySignCountRegressed},
		{"fell to zero", 5, func(k *authntest.Card) { k.SetCounter(0) }, CeremonySignCountRegressed},
		{"card without a counter", 0, func(k *authntest.Card) { k.SetCounter(0); k.FreezeCounter(true) }, ""},
		{"counter starts late", 0, func(k *authntest.Card) { k.SetCounter(1) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCeremonies(t)
			card := authntest.NewCard(t)
			stored := enroll(t, c, card, testOperator)
			stored.SignCount = tc.stored
			tc.card(card)
			opts, state, _, err := c.BeginLogin([][]byte{stored.CredentialID})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.FinishLogin(state, card.Get(opts, testOrigin, nil), newCardStore(stored).lookup)
			if got := ceremonyReason(err); got != tc.want {
				t.Fatalf("reason = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLoginReplayedAssertion presents the very same assertion twice, to two
// ceremonies: the second fails on its challenge, and an assertion made
// afresh with the old counter fails on the counter.
func TestLoginReplayedAssertion(t *testing.T) {
	c, _ := newTestCeremonies(t)
	card := authntest.NewCard(t)
	store := newCardStore(enroll(t, c, card, testOperator))
	opts, state, _, err := c.BeginLogin(nil)
	if err != nil {
		t.Fatal(err)
	}
	answer := card.Get(opts, testOrigin, card.UserHandle())
	got, err := c.FinishLogin(state, answer, store.lookup)
	if err != nil {
		t.Fatal(err)
	}
	store.setCount(got.CredentialID, got.SignCount)

	opts2, state2, _, err := c.BeginLogin(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.FinishLogin(state2, answer, store.lookup)
	if r := ceremonyReason(err); r != CeremonyChallengeMismatch {
		t.Errorf("old assertion on a new challenge: reason = %q, want %q", r, CeremonyChallengeMismatch)
	}
	card.SetCounter(got.SignCount) // a clone that signed from the same counter
	_, err = c.FinishLogin(state2, card.Get(opts2, testOrigin, card.UserHandle()), store.lookup)
	if r := ceremonyReason(err); r != CeremonySignCountRegressed {
		t.Errorf("same counter again: reason = %q, want %q", r, CeremonySignCountRegressed)
	}
}

func TestLoginRefusals(t *testing.T) {
	type env struct {
		c      *Ceremonies
		clk    *clocktest.Clock
		card   *authntest.Card
		stored StoredCredential
		store  *cardStore
	}
	for _, tc := range []struct {
		name       string
		allow      bool // begin with the card's ID in the allow list
		card       func(*authntest.Card)
		answer     func(t *testing.T, e *env, opts []byte) []byte // default: the card with its user handle
		state      func(t *testing.T, e *env, state []byte) []byte
		want       string
		lookupNone bool // the store must not have been asked
	}{
		{name: "no user verification", card: func(k *authntest.Card) { k.SetUserVerified(false) }, want: CeremonyUserNotVerified, lookupNone: true},
		{name: "bad signature", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultSignature) }, want: CeremonyBadSignature},
		{name: "signed by another key", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultOtherKey) }, want: CeremonyBadSignature},
		{name: "wrong RP ID hash", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultRPIDHash) }, want: CeremonyRPIDMismatch, lookupNone: true},
		{name: "wrong challenge", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultChallenge) }, want: CeremonyChallengeMismatch, lookupNone: true},
		{name: "creation type at login", card: func(k *authntest.Card) { k.SetFaults(authntest.FaultCeremonyType) }, want: CeremonyMalformed, lookupNone: true},
		{name: "wrong origin", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return e.card.Get(opts, "https://opgate.test.evil.example", e.card.UserHandle())
		}, want: CeremonyOriginMismatch, lookupNone: true},
		{name: "http instead of https", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return e.card.Get(opts, "http://opgate.test", e.card.UserHandle())
		}, want: CeremonyOriginMismatch, lookupNone: true},
		{name: "cross-origin frame", answer: func(t *testing.T, e *env, opts []byte) []byte {
			return rewriteClientData(t, e.card.Get(opts, testOrigin, e.card.UserHandle()), `"crossOrigin":false`, `"crossOrigin":true`)
		}, want: CeremonyOriginMismatch, lookupNone: true},
		{name: "unknown card", answer: func(t *testing.T, _ *env, opts []byte) []byte {
			return authntest.NewCard(t).Get(opts, testOrigin, []byte(testOperator))
		}, want: CeremonyUnknownCredential},
		{name: "card not asked for", allow: true, answer: func(t *testing.T, e *env, opts []byte) []byte {
			other := authntest.NewCard(t)
			e.store.cards[string(other.CredentialID())] = StoredCredential{OperatorID: testOperator, CredentialID: other.CredentialID()}
			return other.Get(opts, testOrigin, nil)
		}, want: CeremonyUnknownCredential, lookupNone: true},
		{name: "user handle of another operator", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return e.card.Get(opts, testOrigin, []byte(otherOperator))
		}, want: CeremonyUserMismatch},
		{name: "user handle of another operator with an allow list", allow: true, answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return e.card.Get(opts, testOrigin, []byte(otherOperator))
		}, want: CeremonyUserMismatch},
		{name: "discoverable without user handle", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return e.card.Get(opts, testOrigin, nil)
		}, want: CeremonyMalformed, lookupNone: true},
		{name: "card now backup eligible", card: func(k *authntest.Card) { k.SetBackup(true, false) }, want: CeremonyBackupEligibleRefused},
		{name: "backup state without eligibility", card: func(k *authntest.Card) { k.SetBackup(false, true) }, want: CeremonyMalformed, lookupNone: true},
		{name: "replayed counter", card: func(k *authntest.Card) { k.SetCounter(1) }, want: CeremonySignCountRegressed},
		{name: "expired", state: func(_ *testing.T, e *env, s []byte) []byte {
			e.clk.Advance(120 * time.Second)
			return s
		}, want: CeremonyExpired, lookupNone: true},
		{name: "expired, with garbage that the library never sees", state: func(_ *testing.T, e *env, s []byte) []byte {
			e.clk.Advance(time.Hour)
			return s
		}, answer: func(*testing.T, *env, []byte) []byte { return []byte("garbage") }, want: CeremonyExpired, lookupNone: true},
		{name: "enrollment state", state: func(t *testing.T, e *env, _ []byte) []byte {
			_, s, _, err := e.c.BeginEnrollment(EnrollUser{OperatorID: testOperator})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, want: CeremonyMalformed, lookupNone: true},
		{name: "state of another ceremony", state: func(t *testing.T, e *env, _ []byte) []byte {
			_, s, _, err := e.c.BeginLogin(nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, want: CeremonyChallengeMismatch, lookupNone: true},
		{name: "no state", state: func(*testing.T, *env, []byte) []byte { return nil }, want: CeremonyMalformed, lookupNone: true},
		{name: "not JSON", answer: func(*testing.T, *env, []byte) []byte { return []byte("\x00\x01") }, want: CeremonyMalformed, lookupNone: true},
		{name: "rawId and id disagree", answer: func(t *testing.T, e *env, opts []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(e.card.Get(opts, testOrigin, e.card.UserHandle()), &m); err != nil {
				t.Fatal(err)
			}
			m["id"] = b64url([]byte("someone else's card"))
			b, _ := json.Marshal(m)
			return b
		}, want: CeremonyMalformed, lookupNone: true},
		{name: "a key in another case", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			return bytes.Replace(e.card.Get(opts, testOrigin, e.card.UserHandle()), []byte(`"rawId"`), []byte(`"RAWID"`), 1)
		}, want: CeremonyMalformed, lookupNone: true},
		{name: "a key given twice", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			a := e.card.Get(opts, testOrigin, e.card.UserHandle())
			return append([]byte(`{"type":"public-key",`), a[1:]...)
		}, want: CeremonyMalformed, lookupNone: true},
		{name: "over 64 KiB", answer: func(_ *testing.T, e *env, opts []byte) []byte {
			a := e.card.Get(opts, testOrigin, e.card.UserHandle())
			return append(a[:len(a)-1], []byte(`,"pad":"`+strings.Repeat("A", 64<<10)+`"}`)...)
		}, want: CeremonyMalformed, lookupNone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTestCeremonies(t)
			card := authntest.NewCard(t)
			stored := enroll(t, c, card, testOperator)
			e := &env{c: c, clk: clk, card: card, stored: stored, store: newCardStore(stored)}
			if tc.card != nil {
				tc.card(card)
			}
			var allow [][]byte
			if tc.allow {
				allow = [][]byte{stored.CredentialID}
			}
			opts, state, _, err := c.BeginLogin(allow)
			if err != nil {
				t.Fatal(err)
			}
			if tc.state != nil {
				state = tc.state(t, e, state)
			}
			var answer []byte
			if tc.answer != nil {
				answer = tc.answer(t, e, opts)
			} else {
				answer = card.Get(opts, testOrigin, card.UserHandle())
			}
			got, err := c.FinishLogin(state, answer, e.store.lookup)
			if r := ceremonyReason(err); r != tc.want {
				t.Fatalf("reason = %q, want %q (assertion %+v)", r, tc.want, got)
			}
			if !errors.Is(err, ErrCeremonyFailed) {
				t.Errorf("%v does not match ErrCeremonyFailed", err)
			}
			if diff := cmp.Diff(Assertion{}, got); diff != "" {
				t.Errorf("a refusal returned an assertion (-want +got):\n%s", diff)
			}
			if tc.lookupNone && e.store.calls != 0 {
				t.Errorf("the store was asked %d times", e.store.calls)
			}
		})
	}
}

// rewriteClientData replaces old by new in an assertion's clientDataJSON.
func rewriteClientData(t *testing.T, assertion []byte, old, new string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(assertion, &m); err != nil {
		t.Fatal(err)
	}
	resp := m["response"].(map[string]any)
	cd, err := base64.RawURLEncoding.DecodeString(resp["clientDataJSON"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cd, []byte(old)) {
		t.Fatalf("client data %s lacks %s", cd, old)
	}
	resp["clientDataJSON"] = b64url(bytes.Replace(cd, []byte(old), []byte(new), 1))
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoginLookupFailure(t *testing.T) {
	c, _ := newTestCeremonies(t)
	card := authntest.NewCard(t)
	stored := enroll(t, c, card, testOperator)
	down := errors.New("store unreachable")
	for _, tc := range []struct {
		name   string
		lookup func(id, uh []byte) (StoredCredential, error)
		is     error
		reason string
	}{
		{"store down is not a ceremony failure", func([]byte, []byte) (StoredCredential, error) { return StoredCredential{}, down }, down, ""},
		{"wrapped unknown credential", func([]byte, []byte) (StoredCredential, error) {
			return StoredCredential{}, fmt.Errorf("sqlite: %w", ErrUnknownCredential)
		}, ErrCeremonyFailed, CeremonyUnknownCredential},
		{"store answers with another credential", func([]byte, []byte) (StoredCredential, error) {
			s := stored
			s.CredentialID = []byte("another")
			return s, nil
		}, ErrCeremonyFailed, CeremonyUnknownCredential},
		{"store answers without an owner", func([]byte, []byte) (StoredCredential, error) {
			s := stored
			s.OperatorID = ""
			return s, nil
		}, ErrCeremonyFailed, CeremonyUnknownCredential},
		{"user handle reaches the lookup", func(id, uh []byte) (StoredCredential, error) {
			if !bytes.Equal(uh, []byte(testOperator)) || !bytes.Equal(id, stored.CredentialID) {
				return StoredCredential{}, fmt.Errorf("lookup got id %x, user handle %q", id, uh)
			}
			return stored, nil
		}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, state, _, err := c.BeginLogin(nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.FinishLogin(state, card.Get(opts, testOrigin, card.UserHandle()), tc.lookup)
			if tc.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if _, isCeremony := errors.AsType[*CeremonyError](err); isCeremony != (tc.reason != "") {
				t.Errorf("error %v: CeremonyError = %v, want %v", err, isCeremony, tc.reason != "")
			}
			if tc.reason != "" {
				if r := ceremonyReason(err); r != tc.reason {
					t.Errorf("reason = %q, want %q", r, tc.reason)
				}
			}
		})
	}
}

// TestCeremonyErrorsLeakNoInput feeds responses full of a marker and checks
// that no error text repeats it.
func TestCeremonyErrorsLeakNoInput(t *testing.T) {
	const marker = "SECRET-MARKER-7731"
	c, _ := newTestCeremonies(t)
	card := authntest.NewCard(t)
	store := newCardStore(enroll(t, c, card, testOperator))
	opts, state, _, err := c.BeginLogin(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := card.Get(opts, testOrigin, card.UserHandle())
	eopts, estate, _, err := c.BeginEnrollment(EnrollUser{OperatorID: testOperator})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"login: origin", func() error {
			_, err := c.FinishLogin(state, rewriteClientData(t, good, `"origin":"`+testOrigin+`"`, `"origin":"https://`+marker+`"`), store.lookup)
			return err
		}},
		{"login: challenge", func() error {
			var m map[string]any
			_ = json.Unmarshal(good, &m)
			resp := m["response"].(map[string]any)
			cd, _ := base64.RawURLEncoding.DecodeString(resp["clientDataJSON"].(string))
			var cdm map[string]any
			_ = json.Unmarshal(cd, &cdm)
			cdm["challenge"] = marker
			cd, _ = json.Marshal(cdm)
			resp["clientDataJSON"] = b64url(cd)
			b, _ := json.Marshal(m)
			_, err := c.FinishLogin(state, b, store.lookup)
			return err
		}},
		{"login: JSON", func() error {
			_, err := c.FinishLogin(state, []byte(`{"id":"`+marker+`","type":"`+marker+`"}`), store.lookup)
			return err
		}},
		{"enrollment: JSON", func() error {
			_, err := c.FinishEnrollment(estate, []byte(`{"id":"`+marker+`"`), EnrollUser{OperatorID: testOperator}, CardPolicy{})
			return err
		}},
		{"enrollment: origin", func() error {
			_, err := c.FinishEnrollment(estate, authntest.NewCard(t).Create(eopts, "https://"+strings.ToLower(marker)+".example"), EnrollUser{OperatorID: testOperator}, CardPolicy{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(marker)) {
				t.Errorf("error %q repeats the input", err)
			}
		})
	}
}

// TestCeremoniesConcurrent runs logins of several operators on one
// Ceremonies at once, for -race.
func TestCeremoniesConcurrent(t *testing.T) {
	c, _ := newTestCeremonies(t)
	const n = 8
	cards := make([]*authntest.Card, n)
	store := newCardStore()
	for i := range cards {
		cards[i] = authntest.NewCard(t)
		s := enroll(t, c, cards[i], opgate.OperatorID(fmt.Sprintf("OP-%08d", i)))
		store.cards[string(s.CredentialID)] = s
	}
	var wg sync.WaitGroup
	errs := make(chan error, n*5)
	for i := range cards {
		wg.Go(func() {
			for range 5 {
				opts, state, _, err := c.BeginLogin(nil)
				if err != nil {
					errs <- err
					return
				}
				a, err := c.FinishLogin(state, cards[i].Get(opts, testOrigin, cards[i].UserHandle()), store.lookup)
				if err != nil {
					errs <- err
					return
				}
				store.setCount(a.CredentialID, a.SignCount)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func bigOne() *big.Int { return big.NewInt(1) }

// TestMetadataSignatureChain: a blob signed by a certificate chained to
// the root, with x5c, loads; without a root of its own a blob is checked
// against the FIDO Alliance's, which the tests' root is not. (That its
// CRL is never fetched is the server wiring's, tested there.)
func TestMetadataSignatureChain(t *testing.T) {
	rootCert, err := x509.ParseCertificate(mustB64(t, testMDS.root))
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test MDS3 signer"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, rootCert, &leafKey.PublicKey, testMDS.key)
	if err != nil {
		t.Fatal(err)
	}
	header, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT", "x5c": []string{base64.StdEncoding.EncodeToString(leafDER), testMDS.root}})
	input := b64url(header) + "." + b64url([]byte(`{"nextUpdate":"2027-01-01","entries":[]}`))
	sig, err := jwt.SigningMethodES256.Sign(input, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "chained.jwt")
	if err := os.WriteFile(path, []byte(input+"."+b64url(sig)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCeremonies(CeremonyConfig{RPID: testRPID, RPName: "opgate", Origins: []string{testOrigin}, MetadataFile: path, MetadataRoot: testMDS.root}); err != nil {
		t.Fatalf("a chained blob: %v", err)
	}
	if _, err := NewCeremonies(CeremonyConfig{RPID: testRPID, RPName: "opgate", Origins: []string{testOrigin}, MetadataFile: path}); err == nil ||
		!strings.Contains(err.Error(), "signature") {
		t.Errorf("a blob of the tests' root against the production root: %v", err)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
