package authn

// Passwords (R2.3): hashing, verification, the policy check, and the
// one-time secrets people type at a terminal (temporary passwords and card
// enrollment codes).
//
// golang.org/x/crypto/argon2 enters the package here and only here, with its
// parameters pinned below (house rule 14).
//
// Randomness comes from crypto/rand rather than an injected reader: since
// Go 1.24 crypto/rand.Read cannot fail, and tests that need a repeatable
// stream use testing/cryptotest.SetGlobalRandom, which crypto/rand honours.

import (
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"

	"github.com/opgate/opgate/policy"
)

// PasswordParams are argon2id's cost parameters.
type PasswordParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over the memory
	Threads uint8  // lanes
}

// DefaultPasswordParams are OWASP's first argon2id configuration (Password
// Storage Cheat Sheet: m=19 MiB, t=2, p=1). Treat it as read-only; pass a
// copy to change the cost.
var DefaultPasswordParams = PasswordParams{Memory: 19 * 1024, Time: 2, Threads: 1}

// Limits on argon2id parameters, for what HashPassword accepts and for
// what VerifyPassword will run: a stored hash asking for more than this is
// refused rather than allowed to exhaust the host.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 100
	maxThreads   = 64
	minBytes     = 8 // salt and key lengths, in bytes
	maxBytes     = 64
	saltLen      = 16
	keyLen       = 32
	maxPHCLen    = 256 // the longest well-formed string is about 200 bytes
)

// Password length limits. MaxPasswordRunes is counted after normalisation
// (see normalizePassword); MaxPasswordBytes bounds the raw input, so that
// normalising and checking never work on more than this.
const (
	MaxPasswordRunes = 256
	MaxPasswordBytes = 1024
)

// Errors of the password functions.
var (
	// ErrPasswordHash is wrapped when a stored hash is not an argon2id PHC
	// string this package wrote, or asks for absurd parameters.
	ErrPasswordHash = errors.New("authn: malformed or unsupported password hash")
	// ErrPasswordParams is wrapped when HashPassword is given parameters
	// outside the limits VerifyPassword accepts.
	ErrPasswordParams = errors.New("authn: invalid password hash parameters")
)

// normalizePassword is applied to every password before it is hashed,
// verified or judged. NFKC folds compatibility forms into one spelling: a
// Japanese IME in full-width mode types "ｐａｓｓ１２３" where a terminal in
// direct input types "pass123", and half-width katakana "ｶﾅ" differs from
// "カナ" only in the bytes. Without folding, the same keys pressed on
// another terminal or in another IME mode would be a wrong password.
// NIST SP 800-63B §5.1.1.2 recommends NFKC or NFKD for this reason.
//
// The normalisation is part of the stored hash's meaning: changing it
// would make every stored hash unverifiable, so it must not change without
// a migration. Unicode's normalisation stability policy keeps NFKC fixed
// for assigned characters across Unicode versions.
func normalizePassword(pw string) string { return norm.NFKC.String(pw) }

func (p PasswordParams) validate() error {
	switch {
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("%w: time %d not in 1..%d", ErrPasswordParams, p.Time, maxTime)
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("%w: threads %d not in 1..%d", ErrPasswordParams, p.Threads, maxThreads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemoryKiB:
		// RFC 9106 §3.1: memory is at least 8*threads KiB. Below that
		// x/crypto silently raises it, and the string would not say what
		// was computed.
		return fmt.Errorf("%w: memory %d KiB not in %d..%d", ErrPasswordParams, p.Memory, 8*uint32(p.Threads), maxMemoryKiB)
	}
	return nil
}

// phc is a parsed "$argon2id$v=19$m=…,t=…,p=…$salt$key" string.
type phc struct {
	params    PasswordParams
	salt, key []byte
}

func (h phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.Memory, h.params.Time, h.params.Threads,
		base64.RawStdEncoding.EncodeToString(h.salt), base64.RawStdEncoding.EncodeToString(h.key))
}

// HashPassword returns pw's argon2id hash as a PHC string,
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>, with a 16-byte random salt
// and a 32-byte key, both in unpadded standard base64. The password is
// NFKC-normalised first. Passwords over MaxPasswordBytes are refused, as
// VerifyPassword would never match them; CheckPassword reports them first.
func HashPassword(pw string, p PasswordParams) (string, error) {
	if err := p.validate(); err != nil {
		return "", err
	}
	if len(pw) > MaxPasswordBytes {
		return "", fmt.Errorf("authn: password over %d bytes", MaxPasswordBytes)
	}
	h := phc{params: p, salt: make([]byte, saltLen), key: make([]byte, keyLen)}
	_, _ = rand.Read(h.salt) // never fails (crypto/rand)
	h.key = h.derive(pw)
	return h.String(), nil
}

// derive is argon2id of the normalised pw with h's parameters and salt,
// as long as h's key.
func (h phc) derive(pw string) []byte {
	return argon2.IDKey([]byte(normalizePassword(pw)), h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
}

// VerifyPassword reports whether pw matches the PHC string phc. An error
// means the stored string is unusable (ErrPasswordHash), never that the
// password is wrong. The comparison takes constant time.
//
// A pw over MaxPasswordBytes never matches, since no such password can be
// set, but it is still hashed (its first MaxPasswordBytes bytes): returning
// early would answer a known operator sooner than DummyVerify answers for
// an unknown one, and hashing all of it would answer later.
func VerifyPassword(phcString, pw string) (ok bool, err error) {
	h, err := parsePHC(phcString)
	if err != nil {
		return false, err
	}
	tooLong := len(pw) > MaxPasswordBytes
	if tooLong {
		pw = pw[:MaxPasswordBytes]
	}
	match := subtle.ConstantTimeCompare(h.derive(pw), h.key) == 1
	return match && !tooLong, nil
}

// dummySalt is DummyVerify's salt, saltLen bytes. It is public: the
// result is thrown away.
const dummySalt = "opgate dummy slt"

// DummyVerify costs what VerifyPassword costs for a hash made with p, and
// decides nothing. Call it where an operator has no hash (unknown,
// card-only) so that the answer comes no sooner than for a known operator
// with a wrong password (house rule 9). Pass the parameters current hashes
// are made with; invalid ones are replaced by DefaultPasswordParams.
func DummyVerify(p PasswordParams) {
	if p.validate() != nil {
		p = DefaultPasswordParams
	}
	h := phc{params: p, salt: []byte(dummySalt), key: make([]byte, keyLen)}
	_, _ = VerifyPassword(h.String(), "opgate dummy password")
}

// NeedsRehash reports whether a stored hash should be replaced, after a
// successful login, by one made with p: it is unusable, its cost
// parameters differ from p, or its salt or key are shorter than
// HashPassword makes them.
func NeedsRehash(phcString string, p PasswordParams) bool {
	h, err := parsePHC(phcString)
	if err != nil {
		return true
	}
	return h.params != p || len(h.salt) < saltLen || len(h.key) != keyLen
}

// parsePHC accepts exactly the strings HashPassword writes, with any
// parameters and lengths inside the limits. Anything else, including a
// missing version (which PHC reads as argon2 v1.0), is refused.
func parsePHC(s string) (phc, error) {
	bad := func(why string) (phc, error) { return phc{}, fmt.Errorf("%w: %s", ErrPasswordHash, why) }
	if len(s) > maxPHCLen {
		return bad("too long")
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return bad("want $argon2id$v=19$m=,t=,p=$salt$key")
	}
	if f[1] != "argon2id" {
		return bad("not argon2id")
	}
	if f[2] != "v=19" {
		return bad("not version 19")
	}
	kv := strings.Split(f[3], ",")
	if len(kv) != 3 {
		return bad("want m=,t=,p=")
	}
	m, okM := phcUint(kv[0], "m=")
	t, okT := phcUint(kv[1], "t=")
	p, okP := phcUint(kv[2], "p=")
	if !okM || !okT || !okP || p > maxThreads {
		return bad("bad parameters")
	}
	h := phc{params: PasswordParams{Memory: m, Time: t, Threads: uint8(p)}}
	if err := h.params.validate(); err != nil {
		return bad(err.Error())
	}
	var ok bool
	if h.salt, ok = phcBase64(f[4]); !ok {
		return bad("bad salt")
	}
	if h.key, ok = phcBase64(f[5]); !ok {
		return bad("bad key")
	}
	return h, nil
}

// phcUint reads "name=decimal": digits only, no sign and no leading zero
// (PHC string format), at most 32 bits.
func phcUint(s, name string) (uint32, bool) {
	d, ok := strings.CutPrefix(s, name)
	if !ok || d == "" || len(d) > 10 || (d[0] == '0' && len(d) > 1) {
		return 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(d, 10, 32)
	return uint32(n), err == nil
}

// phcBase64 decodes unpadded standard base64 strictly. The alphabet is
// checked first because encoding/base64 skips CR and LF even in strict
// mode, and one hash must have one spelling.
func phcBase64(s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return nil, false
		}
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < minBytes || len(b) > maxBytes {
		return nil, false
	}
	return b, true
}

// Violation is one way a new password breaks the policy; the values are
// the API's password_policy violations.
type Violation string

// Violations, in the order CheckPassword reports them. ViolationTooLong is
// an addition to the API's list: it bounds the work a password costs.
const (
	ViolationTooShort         Violation = "too_short"
	ViolationTooLong          Violation = "too_long"
	ViolationNeedsDigit       Violation = "needs_digit"
	ViolationNeedsLetter      Violation = "needs_letter"
	ViolationDenylisted       Violation = "denylisted"
	ViolationReused           Violation = "reused"
	ViolationSameAsOperatorID Violation = "same_as_operator_id"
)

func (v Violation) String() string { return string(v) }

// PasswordContext is what a new password is checked against besides the
// policy.
type PasswordContext struct {
	OperatorID string
	Name       string
	// History holds the PHC hashes of the current password and of as many
	// earlier ones as the policy's History keeps; the caller picks them.
	History []string
}

// minContextRunes is the shortest name part or bare operator ID that a
// password may not contain: shorter ones would refuse half the alphabet.
const minContextRunes = 3

// CheckPassword returns the ways pw breaks pol, in the order of the
// Violation constants, or nil. pw is judged after NFKC normalisation, as it
// will be hashed:
//   - too_short: fewer than pol.MinLength characters (runes);
//   - too_long: more than MaxPasswordRunes runes, or more than
//     MaxPasswordBytes bytes as given, in which case nothing else is checked;
//   - needs_letter, needs_digit: when pol requires them (any script's
//     letters and digits count);
//   - denylisted: with pol.Denylist, the lower-cased password, or the same
//     with trailing digits and symbols removed, is a common password; and,
//     whatever pol.Denylist says, it contains a part of at least three
//     characters of the operator's name, case-insensitively (NIST SP
//     800-63B §5.1.1.2, context-specific words);
//   - reused: it matches one of c.History;
//   - same_as_operator_id: it contains the operator ID, with or without its
//     "OP-" prefix, case-insensitively.
func CheckPassword(pol policy.Password, pw string, c PasswordContext) []Violation {
	if len(pw) > MaxPasswordBytes {
		return []Violation{ViolationTooLong}
	}
	n := normalizePassword(pw)
	var out []Violation
	add := func(v Violation) { out = append(out, v) }

	runes := utf8.RuneCountInString(n)
	if runes < pol.MinLength {
		add(ViolationTooShort)
	}
	if runes > MaxPasswordRunes {
		add(ViolationTooLong)
	}
	var letter, digit bool
	for _, r := range n {
		letter = letter || unicode.IsLetter(r)
		digit = digit || unicode.IsDigit(r)
	}
	if pol.RequireDigit && !digit {
		add(ViolationNeedsDigit)
	}
	if pol.RequireLetter && !letter {
		add(ViolationNeedsLetter)
	}
	lower := strings.ToLower(n)
	if (pol.Denylist && denylisted(lower)) || containsName(lower, c.Name) {
		add(ViolationDenylisted)
	}
	for _, h := range c.History {
		// A malformed stored hash cannot be matched and must not block
		// the change, so its error is not a reuse.
		if ok, err := VerifyPassword(h, pw); err == nil && ok {
			add(ViolationReused)
			break
		}
	}
	if containsOperatorID(lower, c.OperatorID) {
		add(ViolationSameAsOperatorID)
	}
	return out
}

//go:embed denylist.txt
var denylistText string

// denylist is the embedded list as a set, built on first use.
var denylist = sync.OnceValue(func() map[string]struct{} {
	set := make(map[string]struct{}, 4096)
	for line := range strings.Lines(denylistText) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[strings.ToLower(line)] = struct{}{}
	}
	return set
})

// denylisted reports whether lower, or lower without its trailing digits
// and symbols ("sakura2024!" → "sakura"), is on the list.
func denylisted(lower string) bool {
	set := denylist()
	if _, ok := set[lower]; ok {
		return true
	}
	base := strings.TrimRightFunc(lower, func(r rune) bool { return !unicode.IsLetter(r) })
	if base == "" || base == lower {
		return false
	}
	_, ok := set[base]
	return ok
}

// containsName reports whether lower contains a whitespace-separated part
// of name of at least minContextRunes runes, case-insensitively.
func containsName(lower, name string) bool {
	for _, part := range strings.Fields(strings.ToLower(normalizePassword(name))) {
		if utf8.RuneCountInString(part) >= minContextRunes && strings.Contains(lower, part) {
			return true
		}
	}
	return false
}

// containsOperatorID reports whether lower contains id, or id without its
// "OP-" prefix, case-insensitively.
func containsOperatorID(lower, id string) bool {
	id = strings.ToLower(normalizePassword(strings.TrimSpace(id)))
	if utf8.RuneCountInString(id) < minContextRunes {
		return false
	}
	if strings.Contains(lower, id) {
		return true
	}
	bare, ok := strings.CutPrefix(id, "op-")
	return ok && utf8.RuneCountInString(bare) >= minContextRunes && strings.Contains(lower, bare)
}

// temporaryAlphabet has no look-alikes: no 0/O/o, 1/I/l/i.
const temporaryAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz"

// NewTemporaryPassword returns a password for a reset or the bootstrap: 16
// characters from an alphabet of 55 without look-alikes (about 92 bits),
// with at least one letter and one digit. Strings without both are drawn
// again rather than patched, so every acceptable string is equally likely.
func NewTemporaryPassword() string {
	for {
		s := randomString(temporaryAlphabet, 16)
		if strings.ContainsAny(s, "23456789") && strings.IndexFunc(s, unicode.IsLetter) >= 0 {
			return s
		}
	}
}

// crockford is Crockford's base32 alphabet: digits and letters without
// I, L, O and U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewEnrollmentCode returns a card enrollment code, XXXX-XXXX-XXXX in
// Crockford base32: 60 bits, enough for a code that is single-use and
// lives 15 minutes. It is kept and looked up as EnrollmentCodeHash, which
// normalises it first.
func NewEnrollmentCode() string {
	s := randomString(crockford, 12)
	return s[:4] + "-" + s[4:8] + "-" + s[8:]
}

// NormalizeEnrollmentCode turns a code as typed into its canonical form,
// the 12 characters without separators: NFKC (a Japanese IME types
// full-width characters), upper case, whitespace and dashes removed
// (including U+30FC, the katakana prolonged sound mark "ー" that an IME
// in kana mode types for "-"), and I and L read as 1, O as 0, as Crockford's base32
// decodes them. It does not check the result; an unknown code is simply
// not found.
func NormalizeEnrollmentCode(s string) string {
	s = strings.ToUpper(norm.NFKC.String(s))
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || unicode.Is(unicode.Dash, r) || r == '\u30fc': // ー
		case r == 'I' || r == 'L':
			b.WriteByte('1')
		case r == 'O':
			b.WriteByte('0')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// randomString returns n characters drawn uniformly from alphabet (at most
// 256 characters), rejecting bytes that would bias the draw.
func randomString(alphabet string, n int) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	var buf [32]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:]) // never fails (crypto/rand)
		for _, c := range buf {
			if int(c) < limit && len(out) < n {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}
