package authn

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"

	"github.com/opgate/opgate/policy"
)

// fuzzPHC is a hash of "pw" with testParams and a fixed salt, so that
// every fuzz worker starts from the same string that verifies (HashPassword
// would draw a new salt in each worker process).
func fuzzPHC() string {
	h := phc{params: testParams, salt: []byte("opgate fuzz salt"), key: make([]byte, keyLen)}
	h.key = h.derive("pw")
	return h.String()
}

// fuzzMaxCost bounds the argon2id work one fuzz input may ask for, in KiB
// times passes: the parser rightly accepts up to 1 GiB and 100 passes,
// which would stall the fuzzer without finding anything.
const fuzzMaxCost = 4096

func FuzzVerifyPassword(f *testing.F) {
	good := fuzzPHC()
	for _, s := range []struct{ phc, pw string }{
		{good, "pw"},
		{good, "ｐｗ"},
		{good, ""},
		{strings.Replace(good, "m=64", "m=1048577", 1), "pw"},
		{strings.Replace(good, "p=1", "p=0", 1), "pw"},
		{strings.Replace(good, "v=19", "v=16", 1), "pw"},
		{good + "==", "pw"},
		{"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5", "pw"},
		{"$argon2id$v=19$m=16,t=1,p=2$AAAAAAAAAAA$AAAAAAAAAAA", "\xff\xfe"},
		{"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", "pw"},
		{"", ""},
	} {
		f.Add(s.phc, s.pw)
	}
	f.Fuzz(func(t *testing.T, s, pw string) {
		h, err := parsePHC(s)
		if err == nil {
			// One hash, one spelling: whatever parses is written back
			// byte for byte.
			if got := h.String(); got != s {
				t.Fatalf("parsePHC(%q) re-encodes as %q", s, got)
			}
			if h.params.Memory*h.params.Time > fuzzMaxCost {
				return
			}
		}
		ok, err := VerifyPassword(s, pw)
		if err != nil && ok {
			t.Fatalf("VerifyPassword(%q, %q) = true with error %v", s, pw, err)
		}
		if err != nil && !NeedsRehash(s, testParams) {
			t.Fatalf("NeedsRehash(%q) = false for a hash VerifyPassword refuses", s)
		}
	})
}

func FuzzCheckPassword(f *testing.F) {
	for _, s := range []struct{ pw, opID, name string }{
		{"Hsk7-vwq2-Rtn", "OP-7Q2K9X4M", "Yamada Taro"},
		{"pw", "OP-7Q2K9X4M", "Yamada Taro"},
		{"password1234", "", ""},
		{"ｐａｓｓｗｏｒｄ１２３４", "OP-7Q2K9X4M", "ＹＡＭＡＤＡ　Ｔａｒｏ"},
		{"op-7q2k9x4m!", "OP-7Q2K9X4M", ""},
		{"xTARO-99817z", "OP-", "Taro"},
		{"ﾊﾟﾊﾟﾊﾟﾊﾟ73941", "OP-\xff", "\u3000\u3000"},
		{strings.Repeat("vwq2Rtn8", 33), "OP-7Q2K9X4M", "a b c"},
		{"\xff\xfe\xfd", "\x00", "\x00"},
	} {
		f.Add(s.pw, s.opID, s.name)
	}
	rank := map[Violation]int{}
	for i, v := range []Violation{ViolationTooShort, ViolationTooLong, ViolationNeedsDigit, ViolationNeedsLetter,
		ViolationDenylisted, ViolationReused, ViolationSameAsOperatorID} {
		rank[v] = i
	}
	history := []string{fuzzPHC()}
	pol := policy.Default().Password
	f.Fuzz(func(t *testing.T, pw, opID, name string) {
		got := CheckPassword(pol, pw, PasswordContext{OperatorID: opID, Name: name, History: history})
		if got != nil && len(got) == 0 {
			t.Fatalf("CheckPassword(%q) = empty non-nil slice", pw)
		}
		for i, v := range got {
			r, ok := rank[v]
			if !ok {
				t.Fatalf("CheckPassword(%q) = %q: unknown violation %q", pw, got, v)
			}
			if i > 0 && rank[got[i-1]] >= r {
				t.Fatalf("CheckPassword(%q) = %q: out of order or repeated", pw, got)
			}
		}
		if len(pw) > MaxPasswordBytes && !slices.Equal(got, []Violation{ViolationTooLong}) {
			t.Fatalf("CheckPassword(%d bytes) = %q, want [too_long]", len(pw), got)
		}
		// Spellings NFKC folds together are one password.
		if n := norm.NFKC.String(pw); len(n) <= MaxPasswordBytes && len(pw) <= MaxPasswordBytes {
			if again := CheckPassword(pol, n, PasswordContext{OperatorID: opID, Name: name, History: history}); !slices.Equal(got, again) {
				t.Fatalf("CheckPassword(%q) = %q but CheckPassword(NFKC %q) = %q", pw, got, n, again)
			}
		}
	})
}

func FuzzNormalizeEnrollmentCode(f *testing.F) {
	for _, s := range []string{"7Q2K-9X4M-0ABZ", "7q2k 9x4m oabz", "７Ｑ２Ｋ－９Ｘ４Ｍ－０ＡＢＺ", "7Q2Kー9X4Mｰ0ABZ", "ı", "\xff", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := NormalizeEnrollmentCode(s)
		if i := strings.IndexFunc(got, func(r rune) bool {
			return r == 'I' || r == 'L' || r == 'O' || r == '-' || r == ' ' || ('a' <= r && r <= 'z')
		}); i >= 0 {
			t.Fatalf("NormalizeEnrollmentCode(%q) = %q: left %q in", s, got, got[i:])
		}
		if isASCII(got) {
			if again := NormalizeEnrollmentCode(got); again != got {
				t.Fatalf("NormalizeEnrollmentCode not idempotent: %q -> %q -> %q", s, got, again)
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestPasswordFuzzSeedVerifies(t *testing.T) {
	for _, pw := range []string{"pw", "ｐｗ"} {
		if ok, err := VerifyPassword(fuzzPHC(), pw); !ok || err != nil {
			t.Errorf("VerifyPassword(fuzzPHC, %q) = %v, %v; want true, nil", pw, ok, err)
		}
	}
}
