package authn

// This file is the only door of github.com/go-webauthn/webauthn into opgate
// (DESIGN.md rule 14). The ceremony options that make a card acceptable are
// pinned here and nowhere else: user verification required (the card's PIN
// or fingerprint is what makes it the operator's), direct attestation,
// resident key preferred, a roaming authenticator asked for (the
// "security-key" hint, which also sets authenticatorAttachment
// "cross-platform": an IC card, not the terminal's own platform
// authenticator), ES256/EdDSA/RS256 only, no cross-origin use, the
// challenge's expiry checked with the injected clock (go-webauthn would use
// time.Now), and a counter that did not increase refused (go-webauthn only
// raises CloneWarning).
//
// The checks of WebAuthn Level 3 §7.1 and §7.2 that have their own refusal
// reason — ceremony type, challenge, origin, RP ID hash, user presence and
// verification, backup eligibility — are made here before the library makes
// them again, so that each failure is named for the audit log from our own
// code and not from the library's error wording, which is not a stable API.
// The library stays the authority: nothing the pre-checks pass is accepted
// unless the library accepts it too.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/metadata"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/internal/jsonstrict"
)

// ErrCeremonyFailed is what every *CeremonyError unwraps to: the card, or
// whatever answered in its place, did not complete the ceremony. The login
// service reports it as ErrInvalidCredentials and writes the Reason to the
// audit event only (DESIGN.md rule 9).
var ErrCeremonyFailed = errors.New("authn: card ceremony failed")

// ErrUnknownCredential is what a FinishLogin lookup returns when no stored
// card has the credential ID. Any other lookup error is passed through
// unchanged and is not a ceremony failure: an unreachable store never
// counts against the operator.
var ErrUnknownCredential = errors.New("authn: unknown card credential")

// Reasons a ceremony fails, as CeremonyError.Reason. They are stable: the
// audit log stores them.
const (
	CeremonyExpired               = "expired"                 // the challenge outlived CeremonyConfig.Timeout
	CeremonyMalformed             = "malformed"               // the response (or the state) does not parse or is inconsistent
	CeremonyUnknownCredential     = "unknown_credential"      // no stored card has the credential, or it was not asked for
	CeremonyUserNotVerified       = "user_not_verified"       // the UV (or UP) flag is not set
	CeremonyBadSignature          = "bad_signature"           // the assertion signature does not verify with the stored key
	CeremonyOriginMismatch        = "origin_mismatch"         // client data names another origin, or a cross-origin frame
	CeremonyRPIDMismatch          = "rp_id_mismatch"          // authenticator data is scoped to another RP ID
	CeremonyChallengeMismatch     = "challenge_mismatch"      // client data carries another challenge
	CeremonySignCountRegressed    = "sign_count_regressed"    // a non-zero counter that did not increase: a cloned card
	CeremonyBackupEligibleRefused = "backup_eligible_refused" // a syncable credential, or one whose BE flag changed
	CeremonyAAGUIDNotAllowed      = "aaguid_not_allowed"      // the card model is not on the policy's list
	CeremonyAuthenticatorRevoked  = "authenticator_revoked"   // FIDO metadata says REVOKED, *_COMPROMISE or USER_VERIFICATION_BYPASS
	CeremonyAttestationInvalid    = "attestation_invalid"     // the attestation statement does not verify
	CeremonyUserMismatch          = "user_mismatch"           // the card names another operator than the credential's
)

// CeremonyError is a failed card ceremony. Reason is one of the Ceremony*
// constants; the error never carries any of the input.
type CeremonyError struct {
	Reason string
}

func (e *CeremonyError) Error() string { return "authn: card ceremony failed: " + e.Reason }

// Unwrap makes every CeremonyError match ErrCeremonyFailed.
func (e *CeremonyError) Unwrap() error { return ErrCeremonyFailed }

func refuse(reason string) error { return &CeremonyError{Reason: reason} }

// Authenticator data flag bits kept in NewCredential.Flags and
// StoredCredential.Flags (WebAuthn §6.1).
const (
	FlagUserVerified   uint8 = 0x04 // UV
	FlagBackupEligible uint8 = 0x08 // BE: the credential may be synced off the card
	FlagBackupState    uint8 = 0x10 // BS: it has been
)

const (
	// ceremonyMaxInput bounds the credential JSON and the state read. A
	// card's answer is about 1 KiB with "none" attestation and a few KiB
	// with a certificate chain; anything this long was not made by a card.
	ceremonyMaxInput = 64 << 10

	// ceremonyTimeoutDefault is CeremonyConfig.Timeout when zero (API.md:
	// the challenge expires, default 120 s).
	ceremonyTimeoutDefault = 120 * time.Second

	// ceremonyTimeoutMax is the longest ceremony accepted: WebAuthn §5.4
	// and §5.5 recommend at most 10 minutes when user verification is
	// required.
	ceremonyTimeoutMax = 10 * time.Minute

	// credentialIDMax is the longest credential ID WebAuthn allows (§4,
	// "Credential ID": at most 1023 bytes).
	credentialIDMax = 1023

	// metadataMaxSize bounds the MDS3 blob read from disk. The production
	// blob is a few MiB.
	metadataMaxSize = 64 << 20

	ceremonyEnroll = "enroll"
	ceremonyLogin  = "login"
)

// revokedStatuses are the FIDO metadata statuses that refuse a card model
// at enrollment (FIDO MDS3 §3.1.4 AuthenticatorStatus): REVOKED, every
// *_COMPROMISE, and USER_VERIFICATION_BYPASS: the card's PIN or
// fingerprint is the second factor of every login here, and a model whose
// check can be bypassed gives a stolen card alone.
var revokedStatuses = []metadata.AuthenticatorStatus{
	metadata.Revoked,
	metadata.AttestationKeyCompromise,
	metadata.UserKeyRemoteCompromise,
	metadata.UserKeyPhysicalCompromise,
	metadata.UserVerificationBypass,
}

// credentialParameters are the credential algorithms offered at enrollment,
// in order of preference: what FIDO2 cards implement (ES256), and the two
// others WebAuthn §5.4 names for broad support.
var credentialParameters = []protocol.CredentialParameter{
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgES256},
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgEdDSA},
	{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgRS256},
}

// CardPolicy is the policy's cards section as the ceremony needs it.
type CardPolicy struct {
	// AllowedAAGUIDs lists the card models that may be enrolled, in
	// canonical 8-4-4-4-12 form (case does not matter). Empty allows any.
	// With "none" or self attestation the AAGUID is the card's own claim;
	// only attestation verified against a trust anchor proves it.
	AllowedAAGUIDs []string
	// AllowBackupEligible admits credentials that may be synced off the
	// card (BE flag). Off by default: an IC card's key must stay on it.
	AllowBackupEligible bool
}

// CeremonyConfig configures Ceremonies.
type CeremonyConfig struct {
	// RPID is the WebAuthn relying party ID, a domain (e.g. "localhost",
	// "opgate.city.example.jp"). Required.
	RPID string
	// RPName is shown by the browser while the card is enrolled. Required.
	RPName string
	// Origins are the origins the browser may report, e.g.
	// "https://opgate.city.example.jp"; each host must be RPID or under it.
	// Required.
	Origins []string
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
	// Timeout is how long a begun ceremony may be finished, for login and
	// enrollment alike. If zero, 120 s; at most 10 minutes.
	Timeout time.Duration
	// MetadataFile is an optional FIDO Metadata Service (MDS3) blob on
	// disk, the JWT served at https://mds3.fidoalliance.org/. When set,
	// card models whose status reports in effect say REVOKED, any
	// *_COMPROMISE or USER_VERIFICATION_BYPASS are refused at enrollment.
	// It is read once, by NewCeremonies, and never fetched.
	//
	// Its signature is verified, by go-webauthn's decoder, up to
	// MetadataRoot: a blob whose revocations were stripped does not load.
	// The decoder also asks for the chain's CRL and OCSP answers over the
	// network; the server's wiring (internal/server) gives that client no
	// network, so those checks answer "cannot tell", which the decoder
	// takes as not revoked.
	MetadataFile string
	// MetadataRoot is the trust anchor of MetadataFile, a base64 DER
	// certificate; empty: the FIDO Alliance's production root
	// (metadata.ProductionMDSRoot).
	MetadataRoot string
}

// Ceremonies runs WebAuthn enrollment (registration) and login (assertion)
// ceremonies for IC cards. It holds no per-ceremony state: Begin* returns an
// opaque state that the caller keeps in ephemeral storage and consumes
// atomically (a challenge is single-use), and Finish* gets it back. It is
// safe for concurrent use and immutable after NewCeremonies.
type Ceremonies struct {
	wa       *webauthn.WebAuthn
	rpID     string
	rpIDHash [32]byte
	origins  []string
	clk      clock.Clock
	timeout  time.Duration
	revoked  map[[16]byte][]metadata.StatusReport // nil without MetadataFile

	// rand is the source of challenges, crypto/rand.Reader unless a test in
	// this package needs the same challenges in every process.
	rand io.Reader

	// decoy is verified against when a login names an unknown card, so
	// that an unknown card costs the same work as a known one (DESIGN.md
	// rule 9).
	decoy *ecdsa.PublicKey
}

// NewCeremonies validates cfg once, joining every problem, and reads the
// metadata file if one is set.
func NewCeremonies(cfg CeremonyConfig) (*Ceremonies, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if cfg.RPID == "" {
		bad("RPID is required")
	} else if err := protocol.ValidateRPID(cfg.RPID); err != nil {
		bad("RPID %q is not a domain", cfg.RPID)
	}
	if cfg.RPName == "" {
		bad("RPName is required")
	}
	if len(cfg.Origins) == 0 {
		bad("Origins: at least one origin is required")
	}
	for _, o := range cfg.Origins {
		if err := checkOrigin(o, cfg.RPID); err != nil {
			bad("Origins: %q: %v", o, err)
		}
	}
	timeout := cfg.Timeout
	switch {
	case timeout == 0:
		timeout = ceremonyTimeoutDefault
	case timeout < time.Millisecond || timeout > ceremonyTimeoutMax:
		bad("Timeout %v is not between 1ms and %v", timeout, ceremonyTimeoutMax)
	}
	var revoked map[[16]byte][]metadata.StatusReport
	if cfg.MetadataFile != "" {
		var err error
		if revoked, err = loadMetadata(cfg.MetadataFile, cfg.MetadataRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authn: ceremony config: %w", err)
	}

	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: cfg.RPName,
		RPOrigins:     slices.Clone(cfg.Origins),
		// Cross-origin frames are refused (the zero value; stated for
		// the reader). There are no top origins and no opaque origins.
		RPAllowCrossOrigin:    false,
		AttestationPreference: protocol.PreferDirectAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementPreferred,
			RequireResidentKey: protocol.ResidentKeyNotRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		// Enforce stays false: the library would stamp and check expiry
		// with time.Now. The state carries our own expiry instead, checked
		// with the injected clock before the library is called.
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: timeout, TimeoutUVD: timeout},
			Registration: webauthn.TimeoutConfig{Timeout: timeout, TimeoutUVD: timeout},
		},
		// Extension outputs nobody asked for fail the ceremony (the zero
		// value, stated for the reader).
		ExtensionsUnsolicitedOutputPolicy: protocol.UnsolicitedOutputPolicyReject,
	})
	if err != nil {
		return nil, fmt.Errorf("authn: ceremony config: %w", err)
	}
	decoy, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("authn: ceremony config: %w", err)
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	return &Ceremonies{
		wa:       wa,
		rpID:     cfg.RPID,
		rpIDHash: sha256.Sum256([]byte(cfg.RPID)),
		origins:  slices.Clone(cfg.Origins),
		clk:      clk,
		timeout:  timeout,
		revoked:  revoked,
		rand:     rand.Reader,
		decoy:    &decoy.PublicKey,
	}, nil
}

// checkOrigin accepts an http(s) origin — scheme, host and port, nothing
// else — whose host is rpID or a subdomain of it, as browsers require
// (WebAuthn §5.1.3 step 8). A mismatch would make every ceremony fail.
func checkOrigin(origin, rpID string) error {
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return errors.New("scheme must be https (or http for localhost)")
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return errors.New("must be scheme://host[:port] only")
	}
	host := strings.ToLower(u.Hostname())
	// Browsers offer WebAuthn only in a secure context: https, or http on
	// localhost (W3C Secure Contexts §3.1).
	if u.Scheme == "http" && host != "localhost" && !strings.HasSuffix(host, ".localhost") {
		return errors.New("http is for localhost only; browsers refuse WebAuthn elsewhere without TLS")
	}
	rp := strings.ToLower(rpID)
	if rpID != "" && host != rp && !strings.HasSuffix(host, "."+rp) {
		return fmt.Errorf("host is not %q or a subdomain of it", rpID)
	}
	return nil
}

// loadMetadata reads an MDS3 blob (a compact JWS) and returns the status
// reports of each card model by AAGUID. It verifies the signature up to
// root (see CeremonyConfig.MetadataFile), then reads only what it needs — AAGUIDs and status reports, parsed by go-webauthn's
// metadata types — so that a metadata statement this library version
// cannot parse does not hide a revocation. Any status report that does not
// parse fails the whole file: a revocation must not be skipped quietly.
func loadMetadata(path, root string) (map[[16]byte][]metadata.StatusReport, error) {
	wrap := func(err error) error { return fmt.Errorf("MetadataFile: %w", err) }
	f, err := os.Open(path)
	if err != nil {
		return nil, wrap(err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, metadataMaxSize+1))
	if err != nil {
		return nil, wrap(err)
	}
	if len(raw) > metadataMaxSize {
		return nil, wrap(fmt.Errorf("larger than %d bytes", metadataMaxSize))
	}
	parts := strings.Split(strings.TrimSpace(string(raw)), ".")
	if len(parts) != 3 {
		return nil, wrap(errors.New("not an MDS3 blob (a JWS with three parts)"))
	}
	if root == "" {
		root = metadata.ProductionMDSRoot
	}
	dec, err := metadata.NewDecoder(metadata.WithRootCertificate(root))
	if err != nil {
		return nil, wrap(err)
	}
	if p, err := dec.DecodeBytes([]byte(strings.TrimSpace(string(raw)))); err != nil && p == nil {
		return nil, wrap(fmt.Errorf("signature: %w", err))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, wrap(errors.New("payload is not base64url"))
	}
	var blob struct {
		NextUpdate string `json:"nextUpdate"`
		Entries    []struct {
			AAGUID        string                      `json:"aaguid"`
			StatusReports []metadata.StatusReportJSON `json:"statusReports"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(payload, &blob); err != nil {
		return nil, wrap(fmt.Errorf("payload: %w", err))
	}
	if blob.NextUpdate == "" {
		return nil, wrap(errors.New("payload has no nextUpdate: not an MDS3 blob"))
	}
	out := map[[16]byte][]metadata.StatusReport{}
	for i, e := range blob.Entries {
		if e.AAGUID == "" {
			continue // a U2F or UAF model, named by key identifiers; not a FIDO2 card
		}
		id, ok := parseAAGUID(e.AAGUID)
		if !ok {
			return nil, wrap(fmt.Errorf("entry %d: aaguid is not a UUID", i))
		}
		for j, sr := range e.StatusReports {
			r, err := sr.Parse()
			if err != nil {
				return nil, wrap(fmt.Errorf("entry %d (%s): status report %d: %w", i, formatAAGUID(id[:]), j, err))
			}
			out[id] = append(out[id], r)
		}
	}
	return out, nil
}

// EnrollUser is the operator a card is being enrolled for.
type EnrollUser struct {
	OperatorID opgate.OperatorID // becomes the credential's user handle
	Name       string            // shown by the browser; OperatorID if empty
	Exclude    [][]byte          // credential IDs of the operator's existing cards
}

// webauthnUser adapts an operator to webauthn.User.
type webauthnUser struct {
	id    []byte
	name  string
	creds []webauthn.Credential
}

func (u webauthnUser) WebAuthnID() []byte                         { return u.id }
func (u webauthnUser) WebAuthnName() string                       { return u.name }
func (u webauthnUser) WebAuthnDisplayName() string                { return u.name }
func (u webauthnUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func (u EnrollUser) webauthn() (webauthnUser, error) {
	id := []byte(u.OperatorID)
	if len(id) < protocol.MinimumUserHandleLength || len(id) > protocol.MaximumUserHandleLength {
		return webauthnUser{}, fmt.Errorf("authn: enrollment: operator ID must be 1 to %d bytes", protocol.MaximumUserHandleLength)
	}
	if err := checkCredentialIDs(u.Exclude); err != nil {
		return webauthnUser{}, fmt.Errorf("authn: enrollment: exclude: %w", err)
	}
	name := u.Name
	if name == "" {
		name = string(u.OperatorID)
	}
	return webauthnUser{id: id, name: name}, nil
}

func checkCredentialIDs(ids [][]byte) error {
	for _, id := range ids {
		if len(id) == 0 || len(id) > credentialIDMax {
			return fmt.Errorf("a credential ID must be 1 to %d bytes", credentialIDMax)
		}
	}
	return nil
}

func descriptors(ids [][]byte) []protocol.CredentialDescriptor {
	out := make([]protocol.CredentialDescriptor, len(ids))
	for i, id := range ids {
		out[i] = protocol.CredentialDescriptor{Type: protocol.PublicKeyCredentialType, CredentialID: bytes.Clone(id)}
	}
	return out
}

// ceremonyState is what a Begin hands the caller to keep: go-webauthn's
// session data, which ceremony it belongs to, and when it expires by our
// clock.
type ceremonyState struct {
	Ceremony  string               `json:"ceremony"`
	ExpiresAt time.Time            `json:"expires_at"`
	Session   webauthn.SessionData `json:"session"`
}

func (c *Ceremonies) challenge() ([]byte, error) {
	b := make([]byte, protocol.ChallengeLength)
	if _, err := io.ReadFull(c.rand, b); err != nil {
		return nil, fmt.Errorf("authn: challenge: %w", err)
	}
	return b, nil
}

func (c *Ceremonies) begin(kind string, options any, session *webauthn.SessionData) ([]byte, []byte, time.Time, error) {
	expires := c.clk.Now().Add(c.timeout)
	opts, err := json.Marshal(options)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("authn: %s options: %w", kind, err)
	}
	state, err := json.Marshal(ceremonyState{Ceremony: kind, ExpiresAt: expires, Session: *session})
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("authn: %s state: %w", kind, err)
	}
	return opts, state, expires, nil
}

// openState decodes a state from Begin and refuses it once expired by the
// injected clock: go-webauthn is not called with an expired challenge.
func (c *Ceremonies) openState(state []byte, kind string) (webauthn.SessionData, error) {
	var st ceremonyState
	if len(state) > ceremonyMaxInput || json.Unmarshal(state, &st) != nil ||
		st.Ceremony != kind || st.ExpiresAt.IsZero() || st.Session.Challenge == "" {
		return webauthn.SessionData{}, refuse(CeremonyMalformed)
	}
	if !c.clk.Now().Before(st.ExpiresAt) {
		return webauthn.SessionData{}, refuse(CeremonyExpired)
	}
	return st.Session, nil
}

// BeginEnrollment starts enrolling a card for u: creation options (the JSON
// of {"publicKey":{...}} that navigator.credentials.create expects) with
// user verification required, resident key preferred, direct attestation
// and u.Exclude excluded; the state to keep until FinishEnrollment; and
// when it expires.
func (c *Ceremonies) BeginEnrollment(u EnrollUser) (options, state []byte, expiresAt time.Time, err error) {
	user, err := u.webauthn()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	challenge, err := c.challenge()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	creation, session, err := c.wa.BeginRegistration(user,
		webauthn.WithCredentialParameters(credentialParameters),
		webauthn.WithExclusions(descriptors(u.Exclude)),
		webauthn.WithPublicKeyCredentialHints([]protocol.PublicKeyCredentialHints{protocol.PublicKeyCredentialHintSecurityKey}),
		func(o *protocol.PublicKeyCredentialCreationOptions) error { o.Challenge = challenge; return nil },
	)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("authn: begin enrollment: %w", err)
	}
	return c.begin(ceremonyEnroll, creation, session)
}

// NewCredential is a card that completed enrollment, for the caller to
// store. PublicKey is the COSE_Key; Flags holds the UV, BE and BS bits of
// the authenticator data; Attestation is the statement format ("none",
// "packed", ...).
type NewCredential struct {
	CredentialID []byte
	PublicKey    []byte
	AAGUID       []byte
	SignCount    uint32
	Flags        uint8
	Attestation  string
}

// FinishEnrollment checks the card's answer to BeginEnrollment's options
// for u (the same operator) under pol, and returns the credential to store.
// Every refusal of the card is a *CeremonyError; a u that BeginEnrollment
// would not take is the caller's mistake and gets a plain error.
func (c *Ceremonies) FinishEnrollment(state, credentialJSON []byte, u EnrollUser, pol CardPolicy) (NewCredential, error) {
	session, err := c.openState(state, ceremonyEnroll)
	if err != nil {
		return NewCredential{}, err
	}
	user, err := u.webauthn()
	if err != nil {
		return NewCredential{}, err
	}
	if !bytes.Equal(user.id, session.UserID) {
		return NewCredential{}, refuse(CeremonyUserMismatch)
	}
	if len(credentialJSON) > ceremonyMaxInput {
		return NewCredential{}, refuse(CeremonyMalformed)
	}
	// One reading of the answer: encoding/json, which the library parses
	// with, takes the last of a key given twice and a key in another case.
	if jsonstrict.Check(credentialJSON, &protocol.CredentialCreationResponse{}) != nil {
		return NewCredential{}, refuse(CeremonyMalformed)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(credentialJSON)
	if err != nil {
		return NewCredential{}, refuse(CeremonyMalformed)
	}
	if reason := c.checkClientData(parsed.Response.CollectedClientData, protocol.CreateCeremony, session); reason != "" {
		return NewCredential{}, refuse(reason)
	}
	ad := parsed.Response.AttestationObject.AuthData
	if reason := c.checkAuthData(ad, session); reason != "" {
		return NewCredential{}, refuse(reason)
	}

	cred, err := c.wa.CreateCredential(user, session, parsed)
	if err != nil {
		return NewCredential{}, refuse(enrollReason(err))
	}

	// Policy, on a credential the library has verified.
	if c.revoked != nil {
		var id [16]byte
		copy(id[:], cred.Authenticator.AAGUID)
		if metadata.ValidateStatusReportsAt(c.revoked[id], nil, revokedStatuses, c.clk.Now()) != nil {
			return NewCredential{}, refuse(CeremonyAuthenticatorRevoked)
		}
	}
	if len(pol.AllowedAAGUIDs) > 0 {
		got := formatAAGUID(cred.Authenticator.AAGUID)
		if !slices.ContainsFunc(pol.AllowedAAGUIDs, func(a string) bool { return strings.EqualFold(a, got) }) {
			return NewCredential{}, refuse(CeremonyAAGUIDNotAllowed)
		}
	}
	if cred.Flags.BackupEligible && !pol.AllowBackupEligible {
		return NewCredential{}, refuse(CeremonyBackupEligibleRefused)
	}

	return NewCredential{
		CredentialID: bytes.Clone(cred.ID),
		PublicKey:    bytes.Clone(cred.PublicKey),
		AAGUID:       bytes.Clone(cred.Authenticator.AAGUID),
		SignCount:    cred.Authenticator.SignCount,
		Flags:        uint8(ad.Flags) & (FlagUserVerified | FlagBackupEligible | FlagBackupState),
		Attestation:  cred.AttestationFormat,
	}, nil
}

// BeginLogin starts a card login: request options (the JSON of
// {"publicKey":{...}} that navigator.credentials.get expects) with user
// verification required, the state to keep until FinishLogin, and when it
// expires. allow lists the credential IDs that may answer (an operator's
// active cards); empty asks for a discoverable credential, whose user
// handle names the operator.
func (c *Ceremonies) BeginLogin(allow [][]byte) (options, state []byte, expiresAt time.Time, err error) {
	if err := checkCredentialIDs(allow); err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("authn: begin login: allow: %w", err)
	}
	challenge, err := c.challenge()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	opts := []webauthn.LoginOption{
		webauthn.WithChallenge(challenge),
		webauthn.WithUserVerification(protocol.VerificationRequired),
		webauthn.WithAssertionPublicKeyCredentialHints([]protocol.PublicKeyCredentialHints{protocol.PublicKeyCredentialHintSecurityKey}),
	}
	if len(allow) > 0 {
		opts = append(opts, webauthn.WithAllowedCredentials(descriptors(allow)))
	}
	assertion, session, err := c.wa.BeginDiscoverableLogin(opts...)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("authn: begin login: %w", err)
	}
	return c.begin(ceremonyLogin, assertion, session)
}

// StoredCredential is a stored card as FinishLogin needs it.
type StoredCredential struct {
	OperatorID   opgate.OperatorID
	CredentialID []byte
	PublicKey    []byte // COSE_Key
	AAGUID       []byte
	SignCount    uint32
	Flags        uint8 // as enrolled: FlagUserVerified, FlagBackupEligible, FlagBackupState
}

// Assertion is a verified card login. SignCount is the card's new counter,
// for the caller to store.
type Assertion struct {
	OperatorID   opgate.OperatorID
	CredentialID []byte
	SignCount    uint32
	UserVerified bool
}

// FinishLogin checks the card's answer to BeginLogin's options. lookup
// finds the stored card by credential ID (and by the user handle the card
// returned, nil when it returned none) and returns ErrUnknownCredential if
// there is none. Every refusal is a *CeremonyError; an error of lookup's
// other than ErrUnknownCredential is returned wrapped and is not one.
//
// The operator is the stored credential's owner. A user handle, when the
// card sends one, must name that owner; in a discoverable login (BeginLogin
// with no allow list) it must be sent. A caller that began with one
// operator's allow list gets that operator back, since every listed ID is
// theirs.
func (c *Ceremonies) FinishLogin(state, credentialJSON []byte, lookup func(credentialID, userHandle []byte) (StoredCredential, error)) (Assertion, error) {
	session, err := c.openState(state, ceremonyLogin)
	if err != nil {
		return Assertion{}, err
	}
	if len(credentialJSON) > ceremonyMaxInput {
		return Assertion{}, refuse(CeremonyMalformed)
	}
	if jsonstrict.Check(credentialJSON, &protocol.CredentialAssertionResponse{}) != nil {
		return Assertion{}, refuse(CeremonyMalformed)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(credentialJSON)
	if err != nil {
		return Assertion{}, refuse(CeremonyMalformed)
	}
	resp := parsed.Response
	if reason := c.checkClientData(resp.CollectedClientData, protocol.AssertCeremony, session); reason != "" {
		return Assertion{}, refuse(reason)
	}
	if reason := c.checkAuthData(resp.AuthenticatorData, session); reason != "" {
		return Assertion{}, refuse(reason)
	}
	// §7.2 step 5: a credential that was not asked for.
	if len(session.AllowedCredentialIDs) > 0 && !slices.ContainsFunc(session.AllowedCredentialIDs, func(id []byte) bool { return bytes.Equal(id, parsed.RawID) }) {
		c.decoyVerify(parsed)
		return Assertion{}, refuse(CeremonyUnknownCredential)
	}
	// §7.2 step 6: without an allow list, only the user handle can name
	// the operator.
	if len(session.AllowedCredentialIDs) == 0 && len(resp.UserHandle) == 0 {
		return Assertion{}, refuse(CeremonyMalformed)
	}

	stored, err := lookup(bytes.Clone(parsed.RawID), bytes.Clone(resp.UserHandle))
	switch {
	case errors.Is(err, ErrUnknownCredential):
		c.decoyVerify(parsed)
		return Assertion{}, refuse(CeremonyUnknownCredential)
	case err != nil:
		return Assertion{}, fmt.Errorf("authn: card lookup: %w", err)
	case stored.OperatorID == "" || !bytes.Equal(stored.CredentialID, parsed.RawID):
		c.decoyVerify(parsed)
		return Assertion{}, refuse(CeremonyUnknownCredential)
	}
	owner := []byte(stored.OperatorID)
	if len(resp.UserHandle) > 0 && !bytes.Equal(resp.UserHandle, owner) {
		return Assertion{}, refuse(CeremonyUserMismatch)
	}
	// A card's backup eligibility never changes (§6.1.3); one that now
	// says otherwise is not the card that was enrolled under the policy.
	if resp.AuthenticatorData.Flags.HasBackupEligible() != (stored.Flags&FlagBackupEligible != 0) {
		return Assertion{}, refuse(CeremonyBackupEligibleRefused)
	}

	// The library is given a user who owns exactly the stored credential,
	// and a session bound to that user with the allow list already checked
	// above: it then verifies the user handle again, the client data, the
	// authenticator data and the signature, and counts the counter.
	session.UserID = owner
	session.AllowedCredentialIDs = nil
	user := webauthnUser{id: owner, name: string(stored.OperatorID), creds: []webauthn.Credential{{
		ID:        bytes.Clone(stored.CredentialID),
		PublicKey: bytes.Clone(stored.PublicKey),
		Flags:     webauthn.NewCredentialFlags(protocol.AuthenticatorFlags(stored.Flags)),
		Authenticator: webauthn.Authenticator{
			AAGUID:    bytes.Clone(stored.AAGUID),
			SignCount: stored.SignCount,
		},
	}}}
	cred, err := c.wa.ValidateLogin(user, session, parsed)
	if err != nil {
		return Assertion{}, refuse(loginReason(err))
	}
	// go-webauthn only flags a counter that did not increase; refusing the
	// card is ours to do (API.md: a non-zero counter that did not increase
	// fails). A counter that stays 0 on both sides is a card without one.
	if cred.Authenticator.CloneWarning {
		return Assertion{}, refuse(CeremonySignCountRegressed)
	}
	return Assertion{
		OperatorID:   stored.OperatorID,
		CredentialID: bytes.Clone(stored.CredentialID),
		SignCount:    resp.AuthenticatorData.Counter,
		// This ceremony's own UV flag; cred.Flags.UserVerified is the
		// credential record's latched value (go-webauthn CredentialFlags).
		UserVerified: resp.AuthenticatorData.Flags.HasUserVerified(),
	}, nil
}

// checkClientData makes §7.1 steps 7–9 and §7.2 steps 10–12 ahead of the
// library, to name the failure.
func (c *Ceremonies) checkClientData(cd protocol.CollectedClientData, want protocol.CeremonyType, session webauthn.SessionData) string {
	switch {
	case cd.Type != want:
		return CeremonyMalformed
	case subtle.ConstantTimeCompare([]byte(cd.Challenge), []byte(session.Challenge)) != 1:
		return CeremonyChallengeMismatch
	case cd.CrossOrigin || cd.TopOrigin != "" || !protocol.IsOriginInHaystack(cd.Origin, session.GetOrigins(c.origins)):
		return CeremonyOriginMismatch
	}
	return ""
}

// checkAuthData makes §7.1 steps 13–15 and §7.2 steps 15–17 ahead of the
// library, to name the failure.
func (c *Ceremonies) checkAuthData(ad protocol.AuthenticatorData, session webauthn.SessionData) string {
	want := c.rpIDHash
	if rp := session.GetRelyingPartyID(c.rpID); rp != c.rpID {
		want = sha256.Sum256([]byte(rp))
	}
	switch {
	case subtle.ConstantTimeCompare(ad.RPIDHash, want[:]) != 1:
		return CeremonyRPIDMismatch
	case !ad.Flags.HasUserPresent() || !ad.Flags.HasUserVerified():
		return CeremonyUserNotVerified
	case ad.Flags.HasBackupState() && !ad.Flags.HasBackupEligible():
		return CeremonyMalformed // §6.1: BS without BE is invalid
	}
	return ""
}

// enrollReason and loginReason name a go-webauthn failure that the
// pre-checks let through. Only the error's Type is read, never its text.
// At enrollment what is left is the attestation statement, or a response
// inconsistent in itself (the attested credential ID is not the rawId, BS
// without BE, unsolicited extension outputs); at login it is the signature,
// or such an inconsistency.
func enrollReason(err error) string {
	switch libraryErrorType(err) {
	case protocol.ErrBadRequest.Type, protocol.ErrParsingData.Type, protocol.ErrVerification.Type:
		return CeremonyMalformed
	}
	return CeremonyAttestationInvalid
}

func loginReason(err error) string {
	if libraryErrorType(err) == protocol.ErrAssertionSignature.Type {
		return CeremonyBadSignature
	}
	return CeremonyMalformed
}

func libraryErrorType(err error) string {
	if pe, ok := errors.AsType[*protocol.Error](err); ok {
		return pe.Type
	}
	return ""
}

// decoyVerify spends on an unknown card the signature check a known one
// would cost, against a key nobody holds.
func (c *Ceremonies) decoyVerify(parsed *protocol.ParsedCredentialAssertionData) {
	cdh := sha256.Sum256(parsed.Raw.AssertionResponse.ClientDataJSON)
	h := sha256.New()
	h.Write(parsed.Raw.AssertionResponse.AuthenticatorData)
	h.Write(cdh[:])
	_ = ecdsa.VerifyASN1(c.decoy, h.Sum(nil), parsed.Response.Signature)
}

// formatAAGUID renders a 16-byte AAGUID in canonical lower-case 8-4-4-4-12
// form. Other lengths render as bare hex, which no policy entry matches.
func formatAAGUID(b []byte) string {
	if len(b) != 16 {
		return hex.EncodeToString(b)
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func parseAAGUID(s string) ([16]byte, bool) {
	var id [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return id, false
	}
	copy(id[:], raw)
	return id, true
}
