package authn

import (
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"testing/cryptotest"
	"unicode"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate/policy"
)

// testParams keep argon2id cheap; the defaults are exercised once, in
// TestHashPasswordDefaults.
var testParams = PasswordParams{Memory: 64, Time: 1, Threads: 1}

func mustHash(t testing.TB, pw string, p PasswordParams) string {
	t.Helper()
	h, err := HashPassword(pw, p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashVerifyPassword(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set, try string
		want     bool
	}{
		{name: "same", set: "correct horse 42", try: "correct horse 42", want: true},
		{name: "wrong", set: "correct horse 42", try: "correct horse 43", want: false},
		{name: "case matters", set: "Correct Horse 42", try: "correct horse 42", want: false},
		{name: "trailing space matters", set: "correct horse 42", try: "correct horse 42 ", want: false},
		{name: "empty matches empty", set: "", try: "", want: true},
		{name: "empty is not a password", set: "correct horse 42", try: "", want: false},
		{name: "full-width equals half-width", set: "password1234", try: "ｐａｓｓｗｏｒｄ１２３４", want: true},
		{name: "half-width equals full-width", set: "ｐａｓｓｗｏｒｄ１２３４", try: "password1234", want: true},
		{name: "half-width katakana equals katakana", set: "ﾊﾟｽﾜｰﾄﾞ2024", try: "パスワード2024", want: true},
		{name: "ideographic space equals space", set: "すずき　たろう 7", try: "すずき たろう 7", want: true},
		{name: "kanji", set: "住民記録端末の合言葉9", try: "住民記録端末の合言葉9", want: true},
		{name: "hiragana is not katakana", set: "ぱすわーど2024", try: "パスワード2024", want: false},
		{name: "longest allowed", set: strings.Repeat("x", MaxPasswordBytes), try: strings.Repeat("x", MaxPasswordBytes), want: true},
		{name: "longer never matches", set: strings.Repeat("x", MaxPasswordBytes), try: strings.Repeat("x", MaxPasswordBytes+1), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHash(t, tc.set, testParams)
			got, err := VerifyPassword(h, tc.try)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("VerifyPassword(hash of %q, %q) = %v, want %v", tc.set, tc.try, got, tc.want)
			}
		})
	}
}

func TestHashPasswordDefaults(t *testing.T) {
	const pw = "correct horse 42"
	h := mustHash(t, pw, DefaultPasswordParams)
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(h, want) {
		t.Errorf("HashPassword = %q, want prefix %q", h, want)
	}
	got := map[string]bool{}
	for _, try := range []string{pw, "correct horse 43"} {
		ok, err := VerifyPassword(h, try)
		if err != nil {
			t.Fatal(err)
		}
		got[try] = ok
	}
	want := map[string]bool{pw: true, "correct horse 43": false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("VerifyPassword (-want +got):\n%s", diff)
	}
	if NeedsRehash(h, DefaultPasswordParams) {
		t.Error("NeedsRehash(default hash, defaults) = true")
	}
}

func TestHashPasswordParams(t *testing.T) {
	type parsed struct {
		Params          PasswordParams
		SaltLen, KeyLen int
		Prefix          string
		Reencodes       bool
	}
	for _, tc := range []struct {
		name string
		p    PasswordParams
	}{
		{name: "small", p: testParams},
		{name: "threads 4", p: PasswordParams{Memory: 256, Time: 3, Threads: 4}},
		{name: "minimum memory for threads", p: PasswordParams{Memory: 16, Time: 1, Threads: 2}},
		{name: "owasp second", p: PasswordParams{Memory: 12 * 1024, Time: 3, Threads: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustHash(t, "pw", tc.p)
			h, err := parsePHC(s)
			if err != nil {
				t.Fatal(err)
			}
			got := parsed{h.params, len(h.salt), len(h.key), strings.Join(strings.Split(s, "$")[:4], "$"), h.String() == s}
			want := parsed{tc.p, 16, 32, fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d", tc.p.Memory, tc.p.Time, tc.p.Threads), true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("parsed hash (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHashPasswordInvalidParams(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    PasswordParams
	}{
		{name: "zero", p: PasswordParams{}},
		{name: "no time", p: PasswordParams{Memory: 64, Time: 0, Threads: 1}},
		{name: "no threads", p: PasswordParams{Memory: 64, Time: 1, Threads: 0}},
		{name: "memory below 8 per thread", p: PasswordParams{Memory: 31, Time: 1, Threads: 4}},
		{name: "memory over 1 GiB", p: PasswordParams{Memory: 1<<20 + 1, Time: 1, Threads: 1}},
		{name: "time over 100", p: PasswordParams{Memory: 64, Time: 101, Threads: 1}},
		{name: "threads over 64", p: PasswordParams{Memory: 1024, Time: 1, Threads: 65}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := HashPassword("pw", tc.p)
			if !errors.Is(err, ErrPasswordParams) || h != "" {
				t.Errorf("HashPassword(%+v) = %q, %v; want \"\", ErrPasswordParams", tc.p, h, err)
			}
		})
	}
}

func TestHashPasswordTooLong(t *testing.T) {
	if h, err := HashPassword(strings.Repeat("x", MaxPasswordBytes+1), testParams); err == nil {
		t.Errorf("HashPassword(%d bytes) = %q, nil; want an error", MaxPasswordBytes+1, h)
	}
}

func TestHashPasswordSalted(t *testing.T) {
	a, b := mustHash(t, "same", testParams), mustHash(t, "same", testParams)
	if a == b {
		t.Errorf("two hashes of one password are equal: %q", a)
	}
}

// TestHashPasswordRandomSource shows where the randomness comes from:
// crypto/rand, which testing/cryptotest can make repeatable.
func TestHashPasswordRandomSource(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1)
	a := mustHash(t, "same", testParams)
	cryptotest.SetGlobalRandom(t, 1)
	b := mustHash(t, "same", testParams)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different hashes (-want +got):\n%s", diff)
	}
}

func TestVerifyPasswordMalformed(t *testing.T) {
	good := mustHash(t, "pw", testParams)
	f := strings.Split(good, "$")
	salt, key := f[4], f[5]
	with := func(params, salt, key string) string { return "$argon2id$v=19$" + params + "$" + salt + "$" + key }
	b64 := func(n int) string { return strings.Repeat("A", n) } // n base64 characters
	for _, tc := range []struct{ name, phc string }{
		{name: "empty", phc: ""},
		{name: "plain text", phc: "pw"},
		{name: "dollar only", phc: "$"},
		{name: "bcrypt", phc: "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{name: "argon2i", phc: strings.Replace(good, "argon2id", "argon2i", 1)},
		{name: "argon2d", phc: strings.Replace(good, "argon2id", "argon2d", 1)},
		{name: "upper-case algorithm", phc: strings.Replace(good, "argon2id", "ARGON2ID", 1)},
		{name: "no leading dollar", phc: good[1:]},
		{name: "version missing", phc: "$argon2id$m=64,t=1,p=1$" + salt + "$" + key},
		{name: "version 16", phc: strings.Replace(good, "v=19", "v=16", 1)},
		{name: "version with leading zero", phc: strings.Replace(good, "v=19", "v=019", 1)},
		{name: "parameters reordered", phc: with("t=1,m=64,p=1", salt, key)},
		{name: "parameter missing", phc: with("m=64,t=1", salt, key)},
		{name: "extra parameter", phc: with("m=64,t=1,p=1,keyid=1", salt, key)},
		{name: "parameter empty", phc: with("m=,t=1,p=1", salt, key)},
		{name: "parameter with space", phc: with("m= 64,t=1,p=1", salt, key)},
		{name: "parameter with plus", phc: with("m=+64,t=1,p=1", salt, key)},
		{name: "parameter negative", phc: with("m=64,t=-1,p=1", salt, key)},
		{name: "parameter leading zero", phc: with("m=064,t=1,p=1", salt, key)},
		{name: "parameter hex", phc: with("m=0x40,t=1,p=1", salt, key)},
		{name: "parameter full-width digits", phc: with("m=６４,t=1,p=1", salt, key)},
		{name: "parameter overflows 32 bits", phc: with("m=4294967296,t=1,p=1", salt, key)},
		{name: "parameter of 11 digits", phc: with("m=99999999999,t=1,p=1", salt, key)},
		{name: "memory zero", phc: with("m=0,t=1,p=1", salt, key)},
		{name: "memory below 8 per lane", phc: with("m=15,t=1,p=2", salt, key)},
		{name: "memory over 1 GiB", phc: with("m=1048577,t=1,p=1", salt, key)},
		{name: "time zero", phc: with("m=64,t=0,p=1", salt, key)},
		{name: "time over 100", phc: with("m=64,t=101,p=1", salt, key)},
		{name: "threads zero", phc: with("m=64,t=1,p=0", salt, key)},
		{name: "threads over 64", phc: with("m=1024,t=1,p=65", salt, key)},
		{name: "threads over 255", phc: with("m=4096,t=1,p=257", salt, key)},
		{name: "salt missing", phc: with("m=64,t=1,p=1", "", key)},
		{name: "salt of 7 bytes", phc: with("m=64,t=1,p=1", "AAAAAAAAAA", key)},
		{name: "salt of 65 bytes", phc: with("m=64,t=1,p=1", b64(87), key)},
		{name: "key missing", phc: with("m=64,t=1,p=1", salt, "")},
		{name: "key of 7 bytes", phc: with("m=64,t=1,p=1", salt, "AAAAAAAAAA")},
		{name: "key of 65 bytes", phc: with("m=64,t=1,p=1", salt, b64(87))},
		{name: "padded base64", phc: good + "=="},
		{name: "url-safe base64", phc: with("m=64,t=1,p=1", "-_"+salt[2:], key)},
		{name: "newline in base64", phc: with("m=64,t=1,p=1", salt[:4]+"\n"+salt[4:], key)},
		{name: "carriage return in base64", phc: with("m=64,t=1,p=1", salt, key[:4]+"\r"+key[4:])},
		{name: "non-canonical final bits", phc: with("m=64,t=1,p=1", salt[:len(salt)-1]+"B", key)},
		{name: "impossible base64 length", phc: with("m=64,t=1,p=1", salt+"AAA", key)},
		{name: "trailing dollar", phc: good + "$"},
		{name: "extra field", phc: good + "$AAAAAAAAAAA"},
		{name: "trailing space", phc: good + " "},
		{name: "NUL inside", phc: good[:10] + "\x00" + good[10:]},
		{name: "too long", phc: with("m=64,t=1,p=1", salt, key) + strings.Repeat("A", maxPHCLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := VerifyPassword(tc.phc, "pw")
			if ok || !errors.Is(err, ErrPasswordHash) {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false, ErrPasswordHash", tc.phc, ok, err)
			}
			if !NeedsRehash(tc.phc, testParams) {
				t.Errorf("NeedsRehash(%q) = false for an unusable hash", tc.phc)
			}
		})
	}
	// The pieces the table was built from do make a valid hash.
	if ok, err := VerifyPassword(with("m=64,t=1,p=1", salt, key), "pw"); !ok || err != nil {
		t.Errorf("reassembled hash: VerifyPassword = %v, %v; want true, nil", ok, err)
	}
}

func TestVerifyPasswordForeignLengths(t *testing.T) {
	// Salt and key lengths other than ours but inside 8..64 are accepted:
	// such hashes verify, and NeedsRehash replaces them.
	for _, tc := range []struct {
		name            string
		saltLen, keyLen int
		wantNeedsRehash bool
	}{
		{name: "ours", saltLen: 16, keyLen: 32, wantNeedsRehash: false},
		{name: "8-byte salt and key", saltLen: 8, keyLen: 8, wantNeedsRehash: true},
		{name: "64-byte salt and key", saltLen: 64, keyLen: 64, wantNeedsRehash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			salt := []byte(strings.Repeat("s", tc.saltLen))
			h := phc{params: testParams, salt: salt, key: make([]byte, tc.keyLen)}
			ok, err := VerifyPassword(h.String(), "pw")
			if err != nil || ok {
				t.Fatalf("VerifyPassword(zero key) = %v, %v; want false, nil", ok, err)
			}
			if got := NeedsRehash(h.String(), testParams); got != tc.wantNeedsRehash {
				t.Errorf("NeedsRehash = %v, want %v", got, tc.wantNeedsRehash)
			}
		})
	}
}

func TestPasswordNeedsRehash(t *testing.T) {
	h := mustHash(t, "pw", testParams)
	for _, tc := range []struct {
		name string
		phc  string
		p    PasswordParams
		want bool
	}{
		{name: "same parameters", phc: h, p: testParams, want: false},
		{name: "more memory", phc: h, p: PasswordParams{Memory: 128, Time: 1, Threads: 1}, want: true},
		{name: "more time", phc: h, p: PasswordParams{Memory: 64, Time: 2, Threads: 1}, want: true},
		{name: "more threads", phc: h, p: PasswordParams{Memory: 64, Time: 1, Threads: 2}, want: true},
		{name: "weaker target still differs", phc: mustHash(t, "pw", PasswordParams{Memory: 128, Time: 2, Threads: 1}), p: testParams, want: true},
		{name: "malformed", phc: "$argon2id$", p: testParams, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NeedsRehash(tc.phc, tc.p); got != tc.want {
				t.Errorf("NeedsRehash(%q, %+v) = %v, want %v", tc.phc, tc.p, got, tc.want)
			}
		})
	}
}

// allocated is how many bytes f allocates. argon2id allocates its memory
// parameter in full, so this shows which parameters ran, without the
// noise of timing.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestPasswordDummyVerify(t *testing.T) {
	// An unknown operator costs what a wrong password costs: DummyVerify
	// runs argon2id with the parameters given (invalid ones fall back to
	// the defaults instead of panicking inside argon2 or returning at
	// once). BenchmarkPassword/dummy-default compares the times.
	for _, tc := range []struct {
		name    string
		p       PasswordParams
		wantKiB uint32
	}{
		{name: "given", p: PasswordParams{Memory: 4096, Time: 1, Threads: 1}, wantKiB: 4096},
		{name: "given, more memory and lanes", p: PasswordParams{Memory: 8192, Time: 1, Threads: 2}, wantKiB: 8192},
		{name: "zero falls back to defaults", p: PasswordParams{}, wantKiB: DefaultPasswordParams.Memory},
		{name: "too little memory falls back", p: PasswordParams{Memory: 1, Time: 1, Threads: 1}, wantKiB: DefaultPasswordParams.Memory},
		{name: "absurd falls back", p: PasswordParams{Memory: 1 << 30, Time: 1000, Threads: 255}, wantKiB: DefaultPasswordParams.Memory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dummy := allocated(func() { DummyVerify(tc.p) })
			if want := uint64(tc.wantKiB) * 1024; dummy < want || dummy > want+want/4 {
				t.Errorf("DummyVerify(%+v) allocated %d bytes, want %d..%d", tc.p, dummy, want, want+want/4)
			}
			if tc.p.validate() != nil {
				return
			}
			h := mustHash(t, "pw", tc.p)
			verify := allocated(func() { _, _ = VerifyPassword(h, "wrong") })
			if lo, hi := verify-verify/20, verify+verify/20; dummy < lo || dummy > hi {
				t.Errorf("DummyVerify allocated %d bytes, VerifyPassword %d; want within 5%%", dummy, verify)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	def := policy.Default().Password
	lax := policy.Password{MinLength: 8}
	const opID = "OP-7Q2K9X4M"
	name := "Yamada Taro"
	history := []string{
		"$argon2id$v=19$m=64,t=1,p=1$bm90IGEgaGFzaA$", // malformed: ignored
		mustHash(t, "Kiraboshi-47", testParams),
		mustHash(t, "Hoshizora-58", testParams),
	}
	ctx := PasswordContext{OperatorID: opID, Name: name, History: history}
	for _, tc := range []struct {
		name string
		pol  policy.Password
		pw   string
		ctx  PasswordContext
		want []Violation
	}{
		{name: "good", pol: def, pw: "Hsk7-vwq2-Rtn", ctx: ctx, want: nil},
		{name: "good without context", pol: def, pw: "Hsk7-vwq2-Rtn", want: nil},
		{name: "good in kana", pol: def, pw: "きらきら星が47こ見える", ctx: ctx, want: nil},
		{name: "exactly min length", pol: def, pw: "vwq2Rtn8zk", ctx: ctx, want: nil},
		{name: "too short", pol: def, pw: "vwq2Rtn8z", ctx: ctx, want: []Violation{ViolationTooShort}},
		{name: "too short counted after NFKC", pol: def, pw: "ﾊﾟﾊﾟﾊﾟﾊﾟ73941", ctx: ctx, want: []Violation{ViolationTooShort}},
		{name: "long enough after NFKC", pol: def, pw: "ﾊﾟﾊﾟﾊﾟﾊﾟﾊﾟ73941", ctx: ctx, want: nil},
		{name: "multi-byte runes count once", pol: def, pw: "住民記録端末合言9", ctx: ctx, want: []Violation{ViolationTooShort}},
		{name: "max runes", pol: def, pw: strings.Repeat("vwq2Rtn8", MaxPasswordRunes/8), ctx: ctx, want: nil},
		{name: "too long in runes", pol: def, pw: strings.Repeat("vwq2Rtn8", MaxPasswordRunes/8) + "z", ctx: ctx, want: []Violation{ViolationTooLong}},
		{name: "too long in bytes stops there", pol: def, pw: strings.Repeat("a", MaxPasswordBytes+1), ctx: ctx, want: []Violation{ViolationTooLong}},
		{name: "needs digit", pol: def, pw: "Vwqtrnhkzp", ctx: ctx, want: []Violation{ViolationNeedsDigit}},
		{name: "full-width digit is a digit", pol: def, pw: "Vwqtrnhkz７", ctx: ctx, want: nil},
		{name: "needs letter", pol: def, pw: "4729301856", ctx: ctx, want: []Violation{ViolationNeedsLetter}},
		{name: "needs letter, symbols are not letters", pol: def, pw: "4729-3018-56!", ctx: ctx, want: []Violation{ViolationNeedsLetter}},
		{name: "letter and digit not required", pol: lax, pw: "4729301856", ctx: ctx, want: nil},
		{name: "denylisted", pol: def, pw: "password1234", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "denylisted full-width", pol: def, pw: "ｐａｓｓｗｏｒｄ１２３４", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "denylisted any case", pol: def, pw: "PassWord2024", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "denylisted after stripping digits and symbols", pol: def, pw: "Sakura2024!!", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "denylisted keyboard walk", pol: def, pw: "1qaz2wsx3edc", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "denylisted leetspeak", pol: def, pw: "p@ssw0rd12", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "list word with a letter after is fine", pol: def, pw: "sakura2024x", ctx: ctx, want: nil},
		{name: "list word with a leading digit is fine", pol: def, pw: "1sakura2024", ctx: ctx, want: nil},
		{name: "denylist off", pol: lax, pw: "password1234", ctx: ctx, want: nil},
		{name: "contains name", pol: def, pw: "xTARO-99817z", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "contains name even with denylist off", pol: lax, pw: "yamada77881", ctx: ctx, want: []Violation{ViolationDenylisted}},
		{name: "contains full-width name", pol: def, pw: "zz-77881-yamada", ctx: PasswordContext{Name: "ＹＡＭＡＤＡ　Ｔａｒｏ"}, want: []Violation{ViolationDenylisted}},
		{name: "contains kanji name", pol: def, pw: "鈴木一郎太は9時に来る", ctx: PasswordContext{Name: "鈴木 一郎太"}, want: []Violation{ViolationDenylisted}},
		{name: "name parts under 3 runes ignored", pol: def, pw: "li-wu-77881q", ctx: PasswordContext{Name: "Li Wu"}, want: nil},
		{name: "same as operator id", pol: def, pw: "op-7q2k9x4m!", ctx: ctx, want: []Violation{ViolationSameAsOperatorID}},
		{name: "contains operator id without prefix", pol: def, pw: "Zz7Q2K9X4Mzz", ctx: ctx, want: []Violation{ViolationSameAsOperatorID}},
		{name: "operator id in full-width", pol: def, pw: "ＯＰ－７Ｑ２Ｋ９Ｘ４Ｍ", ctx: ctx, want: []Violation{ViolationSameAsOperatorID}},
		{name: "reused current", pol: def, pw: "Hoshizora-58", ctx: ctx, want: []Violation{ViolationReused}},
		{name: "reused older", pol: def, pw: "Kiraboshi-47", ctx: ctx, want: []Violation{ViolationReused}},
		{name: "reused in full-width", pol: def, pw: "Ｋｉｒａｂｏｓｈｉ－４７", ctx: ctx, want: []Violation{ViolationReused}},
		{name: "not reused with empty history", pol: def, pw: "Kiraboshi-47", ctx: PasswordContext{OperatorID: opID, Name: name}, want: nil},
		{name: "several, in order", pol: def, pw: "ab", ctx: ctx, want: []Violation{ViolationTooShort, ViolationNeedsDigit}},
		{name: "all but length limits, in order",
			pol: policy.Password{MinLength: 10, RequireDigit: true, RequireLetter: true, Denylist: true},
			pw:  "Taro", ctx: PasswordContext{OperatorID: "OP-TARO", Name: "Yamada Taro", History: []string{mustHash(t, "taro", testParams), mustHash(t, "Taro", testParams)}},
			want: []Violation{ViolationTooShort, ViolationNeedsDigit, ViolationDenylisted, ViolationReused, ViolationSameAsOperatorID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckPassword(tc.pol, tc.pw, tc.ctx)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("CheckPassword(%q) (-want +got):\n%s", tc.pw, diff)
			}
		})
	}
}

func TestPasswordDenylist(t *testing.T) {
	set := denylist()
	if n := len(set); n < 1000 || n > 10000 {
		t.Errorf("denylist has %d entries, want 1,000..10,000", n)
	}
	seen := map[string]int{}
	for i, line := range strings.Split(strings.TrimSuffix(denylistText, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" || line != strings.ToLower(line) || strings.TrimSpace(line) != line || strings.IndexFunc(line, func(r rune) bool { return r > unicode.MaxASCII }) >= 0 {
			t.Errorf("line %d %q: want non-empty lower-case ASCII without spaces", i+1, line)
		}
		if prev, ok := seen[line]; ok {
			t.Errorf("line %d %q repeats line %d", i+1, line, prev)
		}
		seen[line] = i + 1
	}
	var missing []string
	for _, w := range []string{"password", "123456", "qwerty", "password1", "1qaz2wsx", "iloveyou", "sakura", "tokyo2020", "juminhyo"} {
		if _, ok := set[w]; !ok {
			missing = append(missing, w)
		}
	}
	if diff := cmp.Diff([]string(nil), missing); diff != "" {
		t.Errorf("missing from the denylist (-want +got):\n%s", diff)
	}
}

func TestTemporaryPassword(t *testing.T) {
	// The name's parts contain i and o, which the alphabet leaves out, so
	// no random draw can contain them and the test cannot flake.
	ctx := PasswordContext{OperatorID: "OP-7Q2K9X4M", Name: "Ichiro Oishi"}
	pol := policy.Default().Password
	valid := regexp.MustCompile(`^[2-9A-HJ-NP-Za-hj-km-np-z]{16}$`)
	seen := map[string]bool{}
	for i := range 200 {
		pw := NewTemporaryPassword()
		if !valid.MatchString(pw) {
			t.Fatalf("NewTemporaryPassword() = %q, want 16 characters of %q", pw, temporaryAlphabet)
		}
		if diff := cmp.Diff([]Violation(nil), CheckPassword(pol, pw, ctx)); diff != "" {
			t.Fatalf("draw %d: CheckPassword(%q) (-want +got):\n%s", i, pw, diff)
		}
		if seen[pw] {
			t.Fatalf("draw %d: %q repeated", i, pw)
		}
		seen[pw] = true
	}
}

func TestTemporaryAlphabet(t *testing.T) {
	var lookAlikes []rune
	for _, r := range "0Oo1Iil" {
		if strings.ContainsRune(temporaryAlphabet, r) {
			lookAlikes = append(lookAlikes, r)
		}
	}
	if diff := cmp.Diff([]rune(nil), lookAlikes); diff != "" {
		t.Errorf("look-alikes in the alphabet (-want +got):\n%s", diff)
	}
}

func TestEnrollmentCode(t *testing.T) {
	format := regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$`)
	seen := map[string]bool{}
	for i := range 200 {
		c := NewEnrollmentCode()
		if !format.MatchString(c) {
			t.Fatalf("NewEnrollmentCode() = %q, want XXXX-XXXX-XXXX in Crockford base32", c)
		}
		if got, want := NormalizeEnrollmentCode(c), strings.ReplaceAll(c, "-", ""); got != want {
			t.Fatalf("NormalizeEnrollmentCode(%q) = %q, want %q", c, got, want)
		}
		if seen[c] {
			t.Fatalf("draw %d: %q repeated", i, c)
		}
		seen[c] = true
	}
}

func TestNormalizeEnrollmentCode(t *testing.T) {
	const want = "7Q2K9X4M0ABZ"
	for _, tc := range []struct{ name, in, want string }{
		{name: "as issued", in: "7Q2K-9X4M-0ABZ", want: want},
		{name: "without hyphens", in: "7Q2K9X4M0ABZ", want: want},
		{name: "lower case", in: "7q2k-9x4m-0abz", want: want},
		{name: "spaces", in: " 7Q2K 9X4M 0ABZ ", want: want},
		{name: "tabs and newline", in: "7Q2K\t9X4M\n0ABZ", want: want},
		{name: "O for zero", in: "7Q2K-9X4M-OABZ", want: want},
		{name: "lower o for zero", in: "7q2k-9x4m-oabz", want: want},
		{name: "I and L for one", in: "I2L1-i1l1", want: "12111111"},
		{name: "full-width", in: "７Ｑ２Ｋ－９Ｘ４Ｍ－０ＡＢＺ", want: want},
		{name: "ideographic space", in: "７Ｑ２Ｋ　９Ｘ４Ｍ　０ＡＢＺ", want: want},
		{name: "katakana prolonged sound mark", in: "7Q2Kー9X4Mｰ0ABZ", want: want},
		{name: "en dash and minus sign", in: "7Q2K–9X4M−0ABZ", want: want},
		{name: "U is left alone", in: "UUUU", want: "UUUU"},
		{name: "empty", in: "", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalizeEnrollmentCode(tc.in); got != tc.want {
				t.Errorf("NormalizeEnrollmentCode(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
