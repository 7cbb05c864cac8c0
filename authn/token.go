package authn

// This file is the only door of github.com/golang-jwt/jwt/v5 into opgate
// (DESIGN.md rule 14): the parser options that make a token safe to accept
// are pinned here and nowhere else.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/internal/clock"
)

// ErrInvalidToken is the only error Verify returns. Whatever was wrong with
// the token — its shape, its signature, its key, its claims or its age — the
// caller learns nothing more (API.md: 401 unauthenticated).
var ErrInvalidToken = errors.New("authn: invalid token")

const (
	// tokenMaxLen bounds what Verify reads. Our tokens are about 500 bytes;
	// anything this long was not made by us, and refusing it before parsing
	// keeps hostile input from costing more than a length check.
	tokenMaxLen = 4096

	// tokenAlg is the one algorithm we sign and accept (API.md: ES256).
	tokenAlg = "ES256"

	// tokenType is the typ header of every token we sign.
	tokenType = "JWT"

	// keyIDMaxLen bounds a key id; ids are used as map keys and in the
	// JWKS, never as paths.
	keyIDMaxLen = 64

	// tokenCacheDefault is the verified-token cache size when
	// TokenConfig.CacheSize is zero.
	tokenCacheDefault = 65536

	// p256Size is the length of one P-256 scalar, and half of an ES256
	// signature (RFC 7518 §3.4).
	p256Size = 32
)

// SigningKey is one ES256 key pair. A key whose NotAfter is zero is current
// and may sign; a key with NotAfter set is retired: it signs nothing, keeps
// verifying the tokens it signed before, and stays in the JWKS until
// NotAfter, after which it is dropped from both.
type SigningKey struct {
	// ID is the JWS kid. GenerateSigningKey derives it from the public
	// key; it must match [A-Za-z0-9_-]{1,64}.
	ID        string
	Private   *ecdsa.PrivateKey
	CreatedAt time.Time
	NotAfter  time.Time
}

// current reports whether k may sign.
func (k SigningKey) current() bool { return k.NotAfter.IsZero() }

// liveAt reports whether k still verifies and is published at now.
func (k SigningKey) liveAt(now time.Time) bool {
	return k.NotAfter.IsZero() || now.Before(k.NotAfter)
}

// GenerateSigningKey makes a new P-256 key created at now. Its ID is the
// base64url encoding of the first 12 bytes of the SHA-256 of the public
// key's PKIX DER, a thumbprint that names the key and nothing else.
func GenerateSigningKey(now time.Time) (SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("authn: generate signing key: %w", err)
	}
	id, err := keyThumbprint(&priv.PublicKey)
	if err != nil {
		return SigningKey{}, err
	}
	return SigningKey{ID: id, Private: priv, CreatedAt: now}, nil
}

func keyThumbprint(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("authn: signing key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:12]), nil
}

// MarshalSigningKey encodes the private key as a PKCS#8 "PRIVATE KEY" PEM
// block, for keeping it in the store or in a file. The ID, CreatedAt and
// NotAfter are not part of it; whoever keeps the PEM keeps them beside it.
func MarshalSigningKey(k SigningKey) ([]byte, error) {
	if err := k.validate(); err != nil {
		return nil, fmt.Errorf("authn: marshal signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("authn: marshal signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseSigningKey reads a PKCS#8 PEM P-256 private key written by
// MarshalSigningKey (or by openssl). An empty id is replaced by the key's
// thumbprint, the ID GenerateSigningKey would have given it, so that a key
// file needs no id of its own. CreatedAt and NotAfter are left zero for the
// caller to fill in.
func ParseSigningKey(id string, pemBytes []byte) (SigningKey, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return SigningKey{}, errors.New("authn: parse signing key: want exactly one PKCS#8 PRIVATE KEY PEM block")
	}
	if len(block.Headers) != 0 {
		return SigningKey{}, errors.New("authn: parse signing key: encrypted or annotated PEM is not supported")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return SigningKey{}, fmt.Errorf("authn: parse signing key: %w", err)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return SigningKey{}, fmt.Errorf("authn: parse signing key: want an ECDSA P-256 key, got %T", parsed)
	}
	if id == "" {
		if id, err = keyThumbprint(&priv.PublicKey); err != nil {
			return SigningKey{}, err
		}
	}
	k := SigningKey{ID: id, Private: priv}
	if err := k.validate(); err != nil {
		return SigningKey{}, fmt.Errorf("authn: parse signing key: %w", err)
	}
	return k, nil
}

// validate checks what every use of a key relies on.
func (k SigningKey) validate() error {
	var errs []error
	if !validKeyID(k.ID) {
		errs = append(errs, fmt.Errorf("key id %q must match [A-Za-z0-9_-]{1,%d}", k.ID, keyIDMaxLen))
	}
	switch {
	case k.Private == nil:
		errs = append(errs, fmt.Errorf("key %q has no private key", k.ID))
	case k.Private.Curve != elliptic.P256():
		errs = append(errs, fmt.Errorf("key %q is not a P-256 key", k.ID))
	}
	return errors.Join(errs...)
}

// validKeyID accepts the base64url alphabet only, so that a kid can never be
// a path, a URL or anything but a name in our own key set.
func validKeyID(id string) bool {
	if id == "" || len(id) > keyIDMaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isBase64URL(id[i]) {
			return false
		}
	}
	return true
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// TokenClaims is what an access token says (API.md, Login, sessions,
// tokens). Times travel as whole seconds (RFC 7519 NumericDate); Verify
// returns them in UTC.
type TokenClaims struct {
	Issuer     string            // iss; if empty, Sign uses TokenConfig.Issuer
	OperatorID opgate.OperatorID // sub
	SessionID  opgate.SessionID  // sid
	SiteID     opgate.SiteID     // site_id
	TerminalID opgate.TerminalID // terminal_id
	AMR        []string          // amr (RFC 8176), e.g. ["hwk","user"]; empty comes back nil
	IssuedAt   time.Time         // iat; if zero, Sign uses the clock
	ExpiresAt  time.Time         // exp; required
	ID         string            // jti; if empty, Sign makes a random one
}

// wireClaims is the JSON payload of a token, converted explicitly from and
// to TokenClaims at this seam (DESIGN.md rule 4).
type wireClaims struct {
	jwt.RegisteredClaims
	SessionID  string   `json:"sid"`
	SiteID     string   `json:"site_id"`
	TerminalID string   `json:"terminal_id"`
	AMR        []string `json:"amr,omitempty"`
}

// Validate is called by the parser after the signature and the registered
// claims checked out: a token of ours always names its operator, session
// and itself, and says when it was issued.
func (w *wireClaims) Validate() error {
	if w.Subject == "" || w.SessionID == "" || w.ID == "" || w.IssuedAt == nil {
		return errors.New("missing claim")
	}
	return nil
}

func (w *wireClaims) claims() TokenClaims {
	c := TokenClaims{
		Issuer:     w.Issuer,
		OperatorID: opgate.OperatorID(w.Subject),
		SessionID:  opgate.SessionID(w.SessionID),
		SiteID:     opgate.SiteID(w.SiteID),
		TerminalID: opgate.TerminalID(w.TerminalID),
		ID:         w.ID,
	}
	if len(w.AMR) > 0 {
		c.AMR = w.AMR
	}
	if w.IssuedAt != nil {
		c.IssuedAt = w.IssuedAt.UTC()
	}
	if w.ExpiresAt != nil {
		c.ExpiresAt = w.ExpiresAt.UTC()
	}
	return c
}

// TokenConfig configures Tokens. It is read once by NewTokens.
type TokenConfig struct {
	// Issuer is the iss of every token signed and the only iss accepted.
	// Required.
	Issuer string
	// Keys is the key set. At least one key must be current (NotAfter
	// zero); of the current keys, the one created last signs. Keys already
	// past NotAfter are ignored.
	Keys []SigningKey
	// Clock is the time source for iat defaults, expiry and key
	// retirement. If nil, clock.Real{} is used.
	Clock clock.Clock
	// CacheSize bounds the cache of verified tokens, in entries. Zero means
	// 65536; a negative value disables the cache.
	CacheSize int
}

// Tokens signs and verifies access tokens and publishes its keys. It is
// safe for concurrent use, including key changes during Sign and Verify.
type Tokens struct {
	issuer string
	clock  clock.Clock
	parser *jwt.Parser
	cache  *tokenCache // nil when disabled

	mu   sync.Mutex // serialises key changes; readers only Load
	keys atomic.Pointer[keySet]
}

// NewTokens checks cfg, reporting every problem at once, and returns the
// token service.
func NewTokens(cfg TokenConfig) (*Tokens, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if len(cfg.Keys) == 0 {
		errs = append(errs, errors.New("at least one signing key is required"))
	}
	seen := make(map[string]bool, len(cfg.Keys))
	hasCurrent := false
	for i, k := range cfg.Keys {
		if err := k.validate(); err != nil {
			errs = append(errs, fmt.Errorf("keys[%d]: %w", i, err))
		}
		if seen[k.ID] {
			errs = append(errs, fmt.Errorf("keys[%d]: duplicate key id %q", i, k.ID))
		}
		seen[k.ID] = true
		hasCurrent = hasCurrent || k.current()
	}
	if len(cfg.Keys) > 0 && !hasCurrent {
		errs = append(errs, errors.New("no current key (every key has NotAfter set)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authn: token config: %w", err)
	}

	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	t := &Tokens{
		issuer: cfg.Issuer,
		clock:  clk,
		// The pinned security options (DESIGN.md rule 14):
		parser: jwt.NewParser(
			// Only ES256: no "none", no HS256 keyed with our public key.
			jwt.WithValidMethods([]string{tokenAlg}),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithExpirationRequired(),
			// iat in the future is refused.
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(clk.Now),
			// The token is dead at exp exactly; no grace.
			jwt.WithLeeway(0),
			// Refuse non-zero trailing bits, so one signature has one
			// spelling and a verified token one cache key.
			jwt.WithStrictDecoding(),
		),
	}
	switch {
	case cfg.CacheSize == 0:
		t.cache = newTokenCache(tokenCacheDefault)
	case cfg.CacheSize > 0:
		t.cache = newTokenCache(cfg.CacheSize)
	}
	t.keys.Store(newKeySet(cfg.Keys, clk.Now()))
	return t, nil
}

// keySet is an immutable snapshot of the keys; changes swap in a new one.
type keySet struct {
	signer SigningKey
	byID   map[string]SigningKey
	sorted []SigningKey // newest first, for the JWKS
}

// newKeySet builds a snapshot of keys, dropping those already past
// NotAfter. The caller has checked that one key is current.
func newKeySet(keys []SigningKey, now time.Time) *keySet {
	ks := &keySet{byID: make(map[string]SigningKey, len(keys))}
	for _, k := range keys {
		if !k.liveAt(now) {
			continue
		}
		ks.byID[k.ID] = k
		ks.sorted = append(ks.sorted, k)
	}
	slices.SortFunc(ks.sorted, func(a, b SigningKey) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, k := range ks.sorted {
		if k.current() {
			ks.signer = k
			break
		}
	}
	return ks
}

// AddKey adds k to the key set, e.g. a key another instance generated. A
// current k created after the present signer becomes the signer. An ID
// already in the set is refused.
func (t *Tokens) AddKey(k SigningKey) error {
	if err := k.validate(); err != nil {
		return fmt.Errorf("authn: add key: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.keys.Load()
	if _, dup := old.byID[k.ID]; dup {
		return fmt.Errorf("authn: add key: duplicate key id %q", k.ID)
	}
	keys := append(slices.Clone(old.sorted), k)
	t.keys.Store(newKeySet(keys, t.clock.Now()))
	return nil
}

// SetKeys replaces the whole key set with keys as the store now holds them,
// so that a rotation made on another instance (or by `opgate keys rotate`)
// reaches every running replica. At least one key must be current.
func (t *Tokens) SetKeys(keys []SigningKey) error {
	current := false
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return fmt.Errorf("authn: set keys: %w", err)
		}
		current = current || k.current()
	}
	if !current {
		return errors.New("authn: set keys: no current key")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys.Store(newKeySet(slices.Clone(keys), t.clock.Now()))
	return nil
}

// Rotate makes newKey the signer from now on. Every key that was current
// is retired with NotAfter = oldNotAfter: pass the expiry of the last token
// they may have signed (now plus the access-token lifetime), and they keep
// verifying exactly as long as needed. An oldNotAfter at or before now drops
// the old keys at once, which is what a compromised key calls for.
func (t *Tokens) Rotate(newKey SigningKey, oldNotAfter time.Time) error {
	var errs []error
	if err := newKey.validate(); err != nil {
		errs = append(errs, err)
	}
	if !newKey.current() {
		errs = append(errs, errors.New("the new key must not have NotAfter set"))
	}
	if oldNotAfter.IsZero() {
		errs = append(errs, errors.New("oldNotAfter is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("authn: rotate key: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.keys.Load()
	if _, dup := old.byID[newKey.ID]; dup {
		return fmt.Errorf("authn: rotate key: duplicate key id %q", newKey.ID)
	}
	keys := make([]SigningKey, 0, len(old.sorted)+1)
	for _, k := range old.sorted {
		if k.current() {
			k.NotAfter = oldNotAfter
		}
		keys = append(keys, k)
	}
	keys = append(keys, newKey)
	t.keys.Store(newKeySet(keys, t.clock.Now()))
	return nil
}

// Sign returns the ES256 JWT of c, signed by the current signer and naming
// it in the kid header. Issuer defaults to the configured issuer (and may
// not differ from it), IssuedAt to the clock, ID to 128 random bits.
// ExpiresAt is required and must come after IssuedAt; it is not checked
// against the clock, so that tests can make tokens that are already dead.
func (t *Tokens) Sign(c TokenClaims) (string, error) {
	if c.Issuer == "" {
		c.Issuer = t.issuer
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = t.clock.Now()
	}
	if c.ID == "" {
		var b [16]byte
		// crypto/rand never fails; tests that need it fixed use
		// testing/cryptotest.SetGlobalRandom.
		_, _ = rand.Read(b[:])
		c.ID = base64.RawURLEncoding.EncodeToString(b[:])
	}
	var errs []error
	if c.Issuer != t.issuer {
		errs = append(errs, fmt.Errorf("issuer %q is not ours", c.Issuer))
	}
	if c.OperatorID == "" {
		errs = append(errs, errors.New("operator id is required"))
	}
	if c.SessionID == "" {
		errs = append(errs, errors.New("session id is required"))
	}
	if c.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("expiry is required"))
	} else if !c.ExpiresAt.After(c.IssuedAt) {
		errs = append(errs, errors.New("expiry must come after issued-at"))
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("authn: sign token: %w", err)
	}

	key := t.keys.Load().signer
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, &wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    c.Issuer,
			Subject:   string(c.OperatorID),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			ID:        c.ID,
		},
		SessionID:  string(c.SessionID),
		SiteID:     string(c.SiteID),
		TerminalID: string(c.TerminalID),
		AMR:        c.AMR,
	})
	tok.Header["kid"] = key.ID // NewWithClaims has set alg and typ
	signingInput, err := tok.SigningString()
	if err != nil {
		return "", fmt.Errorf("authn: sign token: %w", err)
	}
	sig, err := jwt.SigningMethodES256.Sign(signingInput, key.Private)
	if err != nil {
		return "", fmt.Errorf("authn: sign token: %w", err)
	}
	lowS(sig)
	raw := signingInput + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(raw) > tokenMaxLen {
		return "", fmt.Errorf("authn: sign token: token is %d bytes, more than the %d Verify accepts", len(raw), tokenMaxLen)
	}
	return raw, nil
}

// ECDSA signatures are malleable: if (r, s) verifies, so does (r, n-s).
// We sign only with s <= n/2 and Verify refuses the other half, so that a
// token has exactly one valid spelling and no one can mint a second string
// for a token of ours.
var (
	p256N     = elliptic.P256().Params().N
	p256HalfN = func() []byte {
		var b [p256Size]byte
		return new(big.Int).Rsh(p256N, 1).FillBytes(b[:])
	}()
)

// lowS rewrites sig = r||s in place so that s <= n/2.
func lowS(sig []byte) {
	if bytes.Compare(sig[p256Size:], p256HalfN) <= 0 {
		return
	}
	s := new(big.Int).SetBytes(sig[p256Size:])
	s.Sub(p256N, s).FillBytes(sig[p256Size:])
}

// Verify checks raw and returns its claims. Every failure is
// ErrInvalidToken. The checks, cheapest first:
//   - at most 4096 bytes, exactly two dots, only base64url characters
//     between them: a megabyte of dots costs one length comparison;
//   - a cache hit (the same string verified before) still needs its exp
//     and its key to be alive by the clock;
//   - the signature is 64 bytes in low-S form;
//   - the parser pinned in NewTokens: alg ES256 only, iss ours, exp
//     required and in the future, iat not in the future;
//   - the header carries only alg, typ ("JWT") and kid; jku, jwk, x5u,
//     x5c, crit and the rest are refused rather than followed, and kid
//     must name a key of our own set that is not past NotAfter;
//   - sub, sid, jti and iat are present.
func (t *Tokens) Verify(raw string) (TokenClaims, error) {
	if len(raw) > tokenMaxLen || len(raw) == 0 {
		return TokenClaims{}, ErrInvalidToken
	}
	var digest [sha256.Size]byte
	if t.cache != nil {
		digest = sha256.Sum256([]byte(raw))
		if e, ok := t.cache.get(digest); ok {
			return t.checkCached(e)
		}
	}

	sigSeg, ok := tokenShape(raw)
	if !ok {
		return TokenClaims{}, ErrInvalidToken
	}
	// Decode writes past a short destination instead of failing, so the
	// length is checked first.
	var sig [2 * p256Size]byte
	if len(sigSeg) != base64.RawURLEncoding.EncodedLen(len(sig)) {
		return TokenClaims{}, ErrInvalidToken
	}
	if n, err := base64.RawURLEncoding.Strict().Decode(sig[:], []byte(sigSeg)); err != nil || n != len(sig) {
		return TokenClaims{}, ErrInvalidToken
	}
	if bytes.Compare(sig[p256Size:], p256HalfN) > 0 {
		return TokenClaims{}, ErrInvalidToken
	}

	ks := t.keys.Load()
	var kid string
	var wc wireClaims
	tok, err := t.parser.ParseWithClaims(raw, &wc, func(tok *jwt.Token) (any, error) {
		k, err := ks.lookup(tok, t.clock.Now())
		if err != nil {
			return nil, err
		}
		kid = k.ID
		return &k.Private.PublicKey, nil
	})
	if err != nil || !tok.Valid {
		return TokenClaims{}, ErrInvalidToken
	}
	c := wc.claims()
	if t.cache != nil {
		t.cache.put(digest, cacheEntry{claims: c, kid: kid})
	}
	c.AMR = slices.Clone(c.AMR)
	return c, nil
}

// tokenShape checks the form of a compact JWS before anything decodes it:
// three base64url segments joined by exactly two dots. It returns the
// signature segment. The caller has bounded len(raw).
func tokenShape(raw string) (sig string, ok bool) {
	dots := 0
	last := 0
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '.':
			dots++
			last = i
			if dots > 2 {
				return "", false
			}
		case !isBase64URL(c):
			return "", false
		}
	}
	if dots != 2 {
		return "", false
	}
	return raw[last+1:], true
}

// allowedHeaders are the only JOSE header parameters a token of ours
// carries. Anything else — jku, jwk, x5u, x5c, x5t, crit, cty, b64, … —
// would ask us to fetch, trust or interpret something we never agreed to,
// so its presence alone refuses the token (RFC 8725 §3.10, §2.4).
var allowedHeaders = map[string]bool{"alg": true, "typ": true, "kid": true}

var errTokenKey = errors.New("no usable key")

// lookup is the key function: the key comes from our own set by kid and
// from nowhere else.
func (ks *keySet) lookup(tok *jwt.Token, now time.Time) (SigningKey, error) {
	for name := range tok.Header {
		if !allowedHeaders[name] {
			return SigningKey{}, errTokenKey
		}
	}
	if typ, ok := tok.Header["typ"].(string); !ok || typ != tokenType {
		return SigningKey{}, errTokenKey
	}
	if _, ok := tok.Method.(*jwt.SigningMethodECDSA); !ok || tok.Method.Alg() != tokenAlg {
		return SigningKey{}, errTokenKey
	}
	kid, ok := tok.Header["kid"].(string)
	if !ok || !validKeyID(kid) {
		return SigningKey{}, errTokenKey
	}
	k, ok := ks.byID[kid]
	if !ok || !k.liveAt(now) {
		return SigningKey{}, errTokenKey
	}
	return k, nil
}

// checkCached re-checks, by the clock, what may have changed since the
// token was first verified: its expiry, its issue time if the clock was set
// back, and whether its key has since been retired past NotAfter.
func (t *Tokens) checkCached(e cacheEntry) (TokenClaims, error) {
	now := t.clock.Now()
	if !now.Before(e.claims.ExpiresAt) || now.Before(e.claims.IssuedAt) {
		return TokenClaims{}, ErrInvalidToken
	}
	k, ok := t.keys.Load().byID[e.kid]
	if !ok || !k.liveAt(now) {
		return TokenClaims{}, ErrInvalidToken
	}
	c := e.claims
	c.AMR = slices.Clone(c.AMR) // the cached slice is never handed out
	return c, nil
}

// JWKS returns the RFC 7517 JWK Set of every key not past NotAfter, newest
// first, for GET /.well-known/jwks.json.
func (t *Tokens) JWKS() ([]byte, error) {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	ks := t.keys.Load()
	now := t.clock.Now()
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range ks.sorted {
		if !k.liveAt(now) {
			continue
		}
		// Uncompressed SEC 1 point: 0x04 || X || Y, each coordinate the
		// full 32 bytes as RFC 7518 §6.2.1.2 requires.
		pt, err := k.Private.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("authn: jwks: key %q: %w", k.ID, err)
		}
		set.Keys = append(set.Keys, jwk{
			Kty: "EC",
			Crv: "P-256",
			X:   base64.RawURLEncoding.EncodeToString(pt[1 : 1+p256Size]),
			Y:   base64.RawURLEncoding.EncodeToString(pt[1+p256Size:]),
			Kid: k.ID,
			Alg: tokenAlg,
			Use: "sig",
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("authn: jwks: %w", err)
	}
	return b, nil
}

// tokenCache remembers tokens that passed full verification, keyed by the
// SHA-256 of the raw string, so that a token presented on every request is
// parsed and its signature checked once. It is split into shards, each with
// its own lock, and each shard evicts first-in first-out once full, so the
// whole never holds more than the size it was made with.
type tokenCache struct {
	shards []cacheShard
	mask   uint32
}

type cacheEntry struct {
	claims TokenClaims
	kid    string
}

type cacheShard struct {
	mu   sync.Mutex
	cap  int
	m    map[[sha256.Size]byte]cacheEntry
	ring [][sha256.Size]byte // insertion order; len(ring) == len(m)
	hand int                 // next slot of ring to reuse once full
	_    [64]byte            // keep neighbouring locks off one cache line
}

const tokenCacheShards = 16

func newTokenCache(size int) *tokenCache {
	n := tokenCacheShards
	for n > size {
		n /= 2
	}
	c := &tokenCache{shards: make([]cacheShard, n), mask: uint32(n - 1)}
	for i := range c.shards {
		c.shards[i].cap = size / n
		c.shards[i].m = make(map[[sha256.Size]byte]cacheEntry)
	}
	return c
}

func (c *tokenCache) shard(k [sha256.Size]byte) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint32(k[:4])&c.mask]
}

func (c *tokenCache) get(k [sha256.Size]byte) (cacheEntry, bool) {
	s := c.shard(k)
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	return e, ok
}

func (c *tokenCache) put(k [sha256.Size]byte, e cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; ok {
		s.m[k] = e
		return
	}
	if len(s.ring) < s.cap {
		s.ring = append(s.ring, k)
	} else {
		delete(s.m, s.ring[s.hand])
		s.ring[s.hand] = k
		s.hand = (s.hand + 1) % s.cap
	}
	s.m[k] = e
}

// len is the number of entries, for tests.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
