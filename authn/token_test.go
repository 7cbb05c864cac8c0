package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/internal/clock/clocktest"
)

const testIssuer = "https://opgate.test"

// tokenLife is the access-token lifetime the tests use.
const tokenLife = 5 * time.Minute

func newTestKey(t testing.TB, now time.Time) SigningKey {
	t.Helper()
	k, err := GenerateSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestTokens returns a token service with one key, its fake clock and
// its key.
func newTestTokens(t testing.TB, cacheSize int) (*Tokens, *clocktest.Clock, SigningKey) {
	t.Helper()
	clk := clocktest.New()
	key := newTestKey(t, clk.Now())
	tk, err := NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}, Clock: clk, CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	return tk, clk, key
}

func testClaims(now time.Time) TokenClaims {
	return TokenClaims{
		Issuer:     testIssuer,
		OperatorID: "OP-7Q2K9X4M",
		SessionID:  "S-1",
		SiteID:     "shibuya",
		TerminalID: "counter-3",
		AMR:        []string{"hwk", "user"},
		IssuedAt:   now,
		ExpiresAt:  now.Add(tokenLife),
		ID:         "jti-1",
	}
}

func mustSign(t testing.TB, tk *Tokens, c TokenClaims) string {
	t.Helper()
	raw, err := tk.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// The helpers below build compact JWS by hand, independently of the JWT
// library, so that hostile tokens can say anything.

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64JSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

// payload is the JSON a token of ours carries for c.
func payload(c TokenClaims) map[string]any {
	return map[string]any{
		"iss":         c.Issuer,
		"sub":         string(c.OperatorID),
		"sid":         string(c.SessionID),
		"site_id":     string(c.SiteID),
		"terminal_id": string(c.TerminalID),
		"amr":         c.AMR,
		"iat":         c.IssuedAt.Unix(),
		"exp":         c.ExpiresAt.Unix(),
		"jti":         c.ID,
	}
}

func ourHeader(kid string) map[string]any {
	return map[string]any{"alg": "ES256", "typ": "JWT", "kid": kid}
}

type signFunc func(signingInput string) []byte

// forge joins header and claims and signs them with sign.
func forge(t testing.TB, header, claims map[string]any, sign signFunc) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64JSON(t, claims)
	return input + "." + b64(sign(input))
}

// es256 signs as RFC 7518 §3.4 says, r||s, with s in low form for P-256
// so that only what the test means to break is broken.
func es256(t testing.TB, k *ecdsa.PrivateKey) signFunc {
	return func(input string) []byte {
		var h []byte
		switch k.Curve {
		case elliptic.P384():
			s := sha512.Sum384([]byte(input))
			h = s[:]
		default:
			s := sha256.Sum256([]byte(input))
			h = s[:]
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, h)
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		if k.Curve == elliptic.P256() {
			lowS(sig)
		}
		return sig
	}
}

func hs256(secret []byte) signFunc {
	return func(input string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return m.Sum(nil)
	}
}

func garbage(string) []byte { return make([]byte, 64) }

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// without deletes names from a copy of m.
func without(m map[string]any, names ...string) map[string]any {
	out := with(m)
	for _, n := range names {
		delete(out, n)
	}
	return out
}

func TestTokenRoundTrip(t *testing.T) {
	tk, clk, _ := newTestTokens(t, 0)
	now := clk.Now()
	for _, tc := range []struct {
		name string
		in   TokenClaims
		want TokenClaims
	}{
		{name: "card login", in: testClaims(now), want: testClaims(now)},
		{
			name: "password added",
			in:   with2(testClaims(now), func(c *TokenClaims) { c.AMR = []string{"hwk", "user", "pwd"} }),
			want: with2(testClaims(now), func(c *TokenClaims) { c.AMR = []string{"hwk", "user", "pwd"} }),
		},
		{
			name: "no amr comes back nil",
			in:   with2(testClaims(now), func(c *TokenClaims) { c.AMR = []string{} }),
			want: with2(testClaims(now), func(c *TokenClaims) { c.AMR = nil }),
		},
		{
			name: "sub-second times travel as whole seconds",
			in: with2(testClaims(now), func(c *TokenClaims) {
				c.IssuedAt = now.Add(300 * time.Millisecond)
				c.ExpiresAt = now.Add(tokenLife + 700*time.Millisecond)
			}),
			want: testClaims(now),
		},
		{
			name: "non-UTC times come back in UTC",
			in: with2(testClaims(now), func(c *TokenClaims) {
				jst := time.FixedZone("JST", 9*3600)
				c.IssuedAt = now.In(jst)
				c.ExpiresAt = now.Add(tokenLife).In(jst)
			}),
			want: testClaims(now),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := mustSign(t, tk, tc.in)
			for _, pass := range []string{"first", "cached", "cached again"} {
				got, err := tk.Verify(raw)
				if err != nil {
					t.Fatalf("%s Verify: %v", pass, err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("%s Verify mismatch (-want +got):\n%s", pass, diff)
				}
				if got.IssuedAt.Location() != time.UTC || got.ExpiresAt.Location() != time.UTC {
					t.Errorf("%s Verify: times not in UTC: %v, %v", pass, got.IssuedAt, got.ExpiresAt)
				}
				if len(got.AMR) > 0 {
					got.AMR[0] = "tampered" // must not reach the cache
				}
			}
		})
	}
}

func with2(c TokenClaims, f func(*TokenClaims)) TokenClaims {
	c.AMR = append([]string(nil), c.AMR...)
	f(&c)
	return c
}

func TestTokenSignDefaultsAndRefusals(t *testing.T) {
	tk, clk, key := newTestTokens(t, 0)
	now := clk.Now()
	t.Run("defaults", func(t *testing.T) {
		c := testClaims(now)
		c.Issuer, c.IssuedAt, c.ID = "", time.Time{}, ""
		raw := mustSign(t, tk, c)
		got, err := tk.Verify(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.ID) != 22 {
			t.Errorf("jti = %q, want 128 random bits in base64url", got.ID)
		}
		want := testClaims(now)
		want.ID = got.ID
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("claims mismatch (-want +got):\n%s", diff)
		}
		if raw2 := mustSign(t, tk, c); strings.Contains(raw2, got.ID) {
			t.Errorf("second token reuses jti %q", got.ID)
		}
	})
	t.Run("header", func(t *testing.T) {
		raw := mustSign(t, tk, testClaims(now))
		hb, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(hb, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ourHeader(key.ID), got); diff != "" {
			t.Errorf("header mismatch (-want +got):\n%s", diff)
		}
	})
	for _, tc := range []struct {
		name string
		edit func(*TokenClaims)
		want string
	}{
		{name: "foreign issuer", edit: func(c *TokenClaims) { c.Issuer = "https://elsewhere" }, want: "issuer"},
		{name: "no operator", edit: func(c *TokenClaims) { c.OperatorID = "" }, want: "operator id is required"},
		{name: "no session", edit: func(c *TokenClaims) { c.SessionID = "" }, want: "session id is required"},
		{name: "no expiry", edit: func(c *TokenClaims) { c.ExpiresAt = time.Time{} }, want: "expiry is required"},
		{name: "expiry at issue", edit: func(c *TokenClaims) { c.ExpiresAt = c.IssuedAt }, want: "after issued-at"},
		{name: "too long", edit: func(c *TokenClaims) { c.AMR = []string{strings.Repeat("x", tokenMaxLen)} }, want: "more than the 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testClaims(now)
			tc.edit(&c)
			_, err := tk.Sign(c)
			if err == nil || !strings.HasPrefix(err.Error(), "authn: sign token: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Sign error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestTokenForgeControl shows that the hand-made tokens of the hostile
// cases are refused for what they break and not for how they are made:
// the same helpers with our key, our header and our claims are accepted.
func TestTokenForgeControl(t *testing.T) {
	tk, clk, key := newTestTokens(t, -1)
	c := testClaims(clk.Now())
	raw := forge(t, ourHeader(key.ID), payload(c), es256(t, key.Private))
	got, err := tk.Verify(raw)
	if err != nil {
		t.Fatalf("Verify(hand-made token of ours) = %v", err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("claims mismatch (-want +got):\n%s", diff)
	}
}

func TestTokenVerifyRefuses(t *testing.T) {
	clk := clocktest.New()
	now := clk.Now()
	key := newTestKey(t, now)
	other := newTestKey(t, now)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	otherPt, err := other.Private.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	otherJWK := map[string]any{"kty": "EC", "crv": "P-256", "x": b64(otherPt[1:33]), "y": b64(otherPt[33:]), "kid": key.ID}

	good := payload(testClaims(now))
	hdr := ourHeader(key.ID)
	ours := es256(t, key.Private)
	valid := forge(t, hdr, good, ours)
	parts := strings.Split(valid, ".")

	for _, tc := range []struct {
		name string
		raw  func(t *testing.T) string
	}{
		{name: "empty string", raw: func(*testing.T) string { return "" }},
		{name: "megabyte of dots", raw: func(*testing.T) string { return strings.Repeat(".", 1<<20) }},
		{name: "over 4096 bytes, signed by us", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "pad", strings.Repeat("a", tokenMaxLen)), ours)
		}},
		{name: "three dots", raw: func(*testing.T) string { return valid + "." }},
		{name: "one dot", raw: func(*testing.T) string { return parts[0] + "." + parts[1] }},
		{name: "alg none", raw: func(t *testing.T) string {
			return b64JSON(t, with(hdr, "alg", "none")) + "." + b64JSON(t, good) + "."
		}},
		{name: "alg none with a signature", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "alg", "none"), good, garbage)
		}},
		{name: "HS256 keyed with our public key PEM", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "alg", "HS256"), good, hs256(pubPEM))
		}},
		{name: "HS256 keyed with our public key DER", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "alg", "HS256"), good, hs256(pubDER))
		}},
		{name: "ES384 with a P-384 key", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "alg", "ES384"), good, es256(t, p384))
		}},
		{name: "kid not ours", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "kid", "AAAAAAAAAAAAAAAAAAAAAA"), good, ours)
		}},
		{name: "kid is a path", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "kid", "../../etc/passwd"), good, ours)
		}},
		{name: "kid is a URL", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "kid", "https://evil.example/key.pem"), good, ours)
		}},
		{name: "kid is a number", raw: func(t *testing.T) string { return forge(t, with(hdr, "kid", 1), good, ours) }},
		{name: "no kid", raw: func(t *testing.T) string { return forge(t, without(hdr, "kid"), good, ours) }},
		{name: "jku header", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "jku", "https://evil.example/jwks.json"), good, ours)
		}},
		{name: "jwk header signed by the embedded key", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "jwk", otherJWK), good, es256(t, other.Private))
		}},
		{name: "jwk header signed by our key", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "jwk", otherJWK), good, ours)
		}},
		{name: "x5u header", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "x5u", "https://evil.example/cert.pem"), good, ours)
		}},
		{name: "x5c header", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "x5c", []string{b64(pubDER)}), good, ours)
		}},
		{name: "crit header", raw: func(t *testing.T) string {
			return forge(t, with(hdr, "crit", []string{"exp"}), good, ours)
		}},
		{name: "typ other than JWT", raw: func(t *testing.T) string { return forge(t, with(hdr, "typ", "at+jwt"), good, ours) }},
		{name: "no typ", raw: func(t *testing.T) string { return forge(t, without(hdr, "typ"), good, ours) }},
		{name: "changed payload, signature kept", raw: func(t *testing.T) string {
			return b64JSON(t, with(good, "sub", "OP-ADMIN0001")) + "." + parts[1] + "." + parts[2]
		}},
		{name: "changed payload in place, signature kept", raw: func(t *testing.T) string {
			return parts[0] + "." + b64JSON(t, with(good, "site_id", "*")) + "." + parts[2]
		}},
		{name: "same header spelled differently, signature kept", raw: func(t *testing.T) string {
			h := `{"kid":"` + key.ID + `","typ":"JWT","alg":"ES256"}`
			return b64([]byte(h)) + "." + parts[1] + "." + parts[2]
		}},
		{name: "no exp", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "exp"), ours) }},
		{name: "exp not a number", raw: func(t *testing.T) string { return forge(t, hdr, with(good, "exp", "tomorrow"), ours) }},
		{name: "expired", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "exp", now.Add(-time.Second).Unix()), ours)
		}},
		{name: "expired and badly signed", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "iat", now.Add(-time.Hour).Unix(), "exp", now.Add(-time.Minute).Unix()), garbage)
		}},
		{name: "badly signed", raw: func(t *testing.T) string { return forge(t, hdr, good, garbage) }},
		{name: "no signature", raw: func(t *testing.T) string { return parts[0] + "." + parts[1] + "." }},
		{name: "other P-256 key with our kid", raw: func(t *testing.T) string { return forge(t, hdr, good, es256(t, other.Private)) }},
		{name: "high-S twin of a valid signature", raw: func(t *testing.T) string {
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil {
				t.Fatal(err)
			}
			s := new(big.Int).SetBytes(sig[32:])
			s.Sub(elliptic.P256().Params().N, s).FillBytes(sig[32:])
			return parts[0] + "." + parts[1] + "." + b64(sig)
		}},
		{name: "signature with non-zero trailing bits", raw: func(*testing.T) string {
			// 64 bytes take 86 characters; the last carries 4 spare bits.
			sig := []byte(parts[2])
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			i := strings.IndexByte(alphabet, sig[len(sig)-1])
			sig[len(sig)-1] = alphabet[i|1]
			if i|1 == i {
				sig[len(sig)-1] = alphabet[i&^1]
			}
			return parts[0] + "." + parts[1] + "." + string(sig)
		}},
		{name: "newline inside the signature", raw: func(*testing.T) string {
			return parts[0] + "." + parts[1] + "." + parts[2][:40] + "\n" + parts[2][40:]
		}},
		{name: "padded signature", raw: func(*testing.T) string { return valid + "==" }},
		{name: "standard base64 character", raw: func(t *testing.T) string {
			return parts[0] + "." + parts[1] + ".+" + parts[2][1:]
		}},
		{name: "wrong issuer", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "iss", "https://evil.example"), ours)
		}},
		{name: "no issuer", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "iss"), ours) }},
		{name: "issued in the future", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "iat", now.Add(time.Second).Unix()), ours)
		}},
		{name: "not yet valid", raw: func(t *testing.T) string {
			return forge(t, hdr, with(good, "nbf", now.Add(time.Minute).Unix()), ours)
		}},
		{name: "no iat", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "iat"), ours) }},
		{name: "no sub", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "sub"), ours) }},
		{name: "no sid", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "sid"), ours) }},
		{name: "no jti", raw: func(t *testing.T) string { return forge(t, hdr, without(good, "jti"), ours) }},
		{name: "payload not JSON", raw: func(t *testing.T) string {
			input := parts[0] + "." + b64([]byte("not json"))
			return input + "." + b64(ours(input))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cache := range []int{0, -1} {
				tk, err := NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}, Clock: clk, CacheSize: cache})
				if err != nil {
					t.Fatal(err)
				}
				raw := tc.raw(t)
				for range 2 { // a refusal is never cached as a success
					got, err := tk.Verify(raw)
					if err != ErrInvalidToken {
						t.Fatalf("CacheSize %d: Verify = %+v, %v; want %v", cache, got, err, ErrInvalidToken)
					}
					if diff := cmp.Diff(TokenClaims{}, got); diff != "" {
						t.Errorf("CacheSize %d: claims of a refused token (-want +got):\n%s", cache, diff)
					}
				}
				if tk.cache != nil && tk.cache.len() != 0 {
					t.Errorf("CacheSize %d: a refused token entered the cache", cache)
				}
			}
		})
	}
}

// TestTokenDotsAreCheap: a megabyte of dots is refused by the length check
// alone, without hashing, copying or parsing it.
func TestTokenDotsAreCheap(t *testing.T) {
	tk, _, _ := newTestTokens(t, 0)
	dots := strings.Repeat(".", 1<<20)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := tk.Verify(dots); err != ErrInvalidToken {
			t.Fatalf("Verify = %v", err)
		}
	})
	if allocs != 0 {
		t.Errorf("Verify(megabyte of dots) allocated %v times per run, want 0", allocs)
	}
}

func TestTokenExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		at    time.Duration // after iat
		valid bool
	}{
		{name: "at issue", at: 0, valid: true},
		{name: "one second before exp", at: tokenLife - time.Second, valid: true},
		{name: "one microsecond before exp", at: tokenLife - time.Microsecond, valid: true},
		{name: "exactly at exp", at: tokenLife, valid: false},
		{name: "one second after exp", at: tokenLife + time.Second, valid: false},
		{name: "clock set back before iat", at: -time.Second, valid: false},
	} {
		for _, mode := range []struct {
			name      string
			cacheSize int
			warm      bool // verify once at issue, so the later check is a cache hit
		}{
			{name: "uncached", cacheSize: -1},
			{name: "cold cache", cacheSize: 0},
			{name: "cache hit", cacheSize: 0, warm: true},
		} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				tk, clk, _ := newTestTokens(t, mode.cacheSize)
				issued := clk.Now()
				raw := mustSign(t, tk, testClaims(issued))
				if mode.warm {
					if _, err := tk.Verify(raw); err != nil {
						t.Fatal(err)
					}
					if tk.cache.len() != 1 {
						t.Fatalf("cache holds %d entries, want 1", tk.cache.len())
					}
				}
				clk.Set(issued.Add(tc.at))
				_, err := tk.Verify(raw)
				if got := err == nil; got != tc.valid {
					t.Errorf("Verify at iat%+v: err = %v, want valid=%v", tc.at, err, tc.valid)
				}
				if err != nil && err != ErrInvalidToken {
					t.Errorf("Verify error = %v, want ErrInvalidToken", err)
				}
			})
		}
	}
}

func TestTokenCacheBound(t *testing.T) {
	t.Run("100k distinct entries", func(t *testing.T) {
		for _, size := range []int{1, 7, 16, 1000, 65536} {
			c := newTokenCache(size)
			for i := range 100_000 {
				k := sha256.Sum256(fmt.Appendf(nil, "token-%d", i))
				c.put(k, cacheEntry{kid: "k"})
				if i%997 == 0 {
					if n := c.len(); n > size {
						t.Fatalf("size %d: after %d inserts the cache holds %d", size, i+1, n)
					}
				}
			}
			if n := c.len(); n > size || n < size/2 {
				t.Errorf("size %d: the full cache holds %d, want at most %d and not far below", size, n, size)
			}
			// The newest entry survives; eviction is first in, first out.
			last := sha256.Sum256(fmt.Appendf(nil, "token-%d", 100_000-1))
			if _, ok := c.get(last); !ok {
				t.Errorf("size %d: the last entry put is missing", size)
			}
		}
	})
	t.Run("through Verify", func(t *testing.T) {
		const size = 50
		tk, clk, _ := newTestTokens(t, size)
		n := 2000
		if testing.Short() {
			n = 200
		}
		c := testClaims(clk.Now())
		for i := range n {
			c.ID = fmt.Sprintf("jti-%d", i)
			raw := mustSign(t, tk, c)
			if _, err := tk.Verify(raw); err != nil {
				t.Fatal(err)
			}
			if got := tk.cache.len(); got > size {
				t.Fatalf("after %d tokens the cache holds %d, want at most %d", i+1, got, size)
			}
		}
		// An evicted token is simply verified again.
		c.ID = "jti-0"
		if _, err := tk.Verify(mustSign(t, tk, c)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTokenConfig(t *testing.T) {
	now := clocktest.New().Now()
	key := newTestKey(t, now)
	retired := newTestKey(t, now)
	retired.NotAfter = now.Add(time.Hour)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  TokenConfig
		want []string // each must appear in the error; none means success
	}{
		{name: "minimal", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}}},
		{name: "current and retired", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{retired, key}}},
		{name: "empty", cfg: TokenConfig{}, want: []string{"issuer is required", "at least one signing key"}},
		{name: "only retired keys", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{retired}}, want: []string{"no current key"}},
		{name: "duplicate id", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key, key}}, want: []string{"duplicate key id"}},
		{name: "path id", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{{ID: "../k", Private: key.Private}}}, want: []string{"must match"}},
		{name: "empty id", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{{Private: key.Private}}}, want: []string{"must match"}},
		{name: "no private key", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{{ID: "k"}}}, want: []string{"has no private key"}},
		{name: "P-384", cfg: TokenConfig{Issuer: testIssuer, Keys: []SigningKey{{ID: "k", Private: p384}}}, want: []string{"not a P-256 key"}},
		{
			name: "everything at once",
			cfg:  TokenConfig{Keys: []SigningKey{{ID: "a/b", NotAfter: retired.NotAfter}, retired, retired}},
			want: []string{"issuer is required", "must match", "has no private key", "duplicate key id", "no current key"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := NewTokens(tc.cfg)
			if len(tc.want) == 0 {
				if err != nil || tk == nil {
					t.Fatalf("NewTokens = %v, %v", tk, err)
				}
				return
			}
			if err == nil {
				t.Fatal("NewTokens succeeded")
			}
			if !strings.HasPrefix(err.Error(), "authn: token config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		tk, err := NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}})
		if err != nil {
			t.Fatal(err)
		}
		if tk.clock == nil || tk.cache == nil || len(tk.cache.shards)*tk.cache.shards[0].cap != tokenCacheDefault {
			t.Errorf("defaults not applied: clock %v, cache %v", tk.clock, tk.cache)
		}
		tk, err = NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		if tk.cache != nil {
			t.Error("CacheSize -1 left a cache")
		}
	})
}

func TestSigningKeyGenerateMarshalParse(t *testing.T) {
	now := clocktest.New().Now()
	key := newTestKey(t, now)
	der, err := x509.MarshalPKIXPublicKey(&key.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if want := b64(sum[:12]); key.ID != want || len(key.ID) != 16 {
		t.Errorf("ID = %q, want %q (16 chars)", key.ID, want)
	}
	if !key.CreatedAt.Equal(now) || !key.NotAfter.IsZero() {
		t.Errorf("CreatedAt %v NotAfter %v, want %v and zero", key.CreatedAt, key.NotAfter, now)
	}

	pemBytes, err := MarshalSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pemBytes), "-----BEGIN PRIVATE KEY-----\n") {
		t.Errorf("not a PKCS#8 PEM:\n%s", pemBytes)
	}
	for _, tc := range []struct {
		name, id, wantID string
	}{
		{name: "id kept beside the PEM", id: "stored-id_1", wantID: "stored-id_1"},
		{name: "key file without id", id: "", wantID: key.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSigningKey(tc.id, pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.wantID || !got.Private.Equal(key.Private) {
				t.Errorf("ParseSigningKey = %q %v, want %q and the same key", got.ID, got.Private.Public(), tc.wantID)
			}
		})
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, err := x509.MarshalECPrivateKey(key.Private)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		pem  []byte
	}{
		{name: "not PEM", pem: []byte("hello")},
		{name: "empty", pem: nil},
		{name: "SEC 1 EC PRIVATE KEY", pem: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{name: "RSA", pem: pkcs8(rsaKey)},
		{name: "P-384", pem: pkcs8(p384)},
		{name: "path as id", id: "../../etc/passwd", pem: pemBytes},
		{name: "two blocks", pem: append(append([]byte{}, pemBytes...), pemBytes...)},
		{name: "garbage DER", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := ParseSigningKey(tc.id, tc.pem); err == nil || !strings.HasPrefix(err.Error(), "authn: parse signing key: ") {
				t.Errorf("ParseSigningKey = %+v, %v; want an authn error", got, err)
			}
		})
	}
	if _, err := MarshalSigningKey(SigningKey{ID: "k"}); err == nil {
		t.Error("MarshalSigningKey of an empty key succeeded")
	}
}

// jwksDoc decodes a JWK Set into plain maps, to check its exact shape.
func jwksDoc(t *testing.T, tk *Tokens) []map[string]string {
	t.Helper()
	b, err := tk.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string][]map[string]string
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JWKS is not a JWK Set: %v\n%s", err, b)
	}
	if len(doc) != 1 || doc["keys"] == nil {
		t.Fatalf("JWKS = %s, want exactly {\"keys\":[...]}", b)
	}
	return doc["keys"]
}

func jwkOf(t *testing.T, k SigningKey) map[string]string {
	t.Helper()
	pt, err := k.Private.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": k.ID,
		"x": b64(pt[1:33]), "y": b64(pt[33:]),
	}
}

func TestTokenJWKS(t *testing.T) {
	tk, _, key := newTestTokens(t, 0)
	got := jwksDoc(t, tk)
	if diff := cmp.Diff([]map[string]string{jwkOf(t, key)}, got); diff != "" {
		t.Errorf("JWKS mismatch (-want +got):\n%s", diff)
	}
	// The published point is our public key, and only the public key.
	x, _ := base64.RawURLEncoding.DecodeString(got[0]["x"])
	y, _ := base64.RawURLEncoding.DecodeString(got[0]["y"])
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&key.Private.PublicKey) {
		t.Error("JWKS x/y is not our public key")
	}
	if _, ok := got[0]["d"]; ok {
		t.Error("JWKS publishes the private scalar")
	}
}

func TestTokenRotate(t *testing.T) {
	tk, clk, k1 := newTestTokens(t, 0)
	start := clk.Now()
	old := mustSign(t, tk, testClaims(start))
	// A token of k1 that claims to outlive the key: refused once k1 is
	// dropped, even though it was verified (and cached) before.
	long := forge(t, ourHeader(k1.ID), payload(with2(testClaims(start), func(c *TokenClaims) {
		c.ExpiresAt = start.Add(time.Hour)
	})), es256(t, k1.Private))
	for _, raw := range []string{old, long} {
		if _, err := tk.Verify(raw); err != nil {
			t.Fatal(err)
		}
	}

	clk.Advance(time.Minute)
	k2 := newTestKey(t, clk.Now())
	notAfter := start.Add(tokenLife)
	if err := tk.Rotate(k2, notAfter); err != nil {
		t.Fatal(err)
	}
	fresh := mustSign(t, tk, testClaims(clk.Now()))
	if kid := headerKid(t, fresh); kid != k2.ID {
		t.Errorf("after Rotate the signer is %q, want %q", kid, k2.ID)
	}
	retiredJWK := jwkOf(t, k1)

	for _, step := range []struct {
		name     string
		at       time.Time
		wantJWKS []map[string]string
		valid    map[string]bool
	}{
		{
			name:     "just after rotation",
			at:       clk.Now(),
			wantJWKS: []map[string]string{jwkOf(t, k2), retiredJWK},
			valid:    map[string]bool{"old": true, "long": true, "unseen": true, "fresh": true},
		},
		{
			name:     "one second before NotAfter",
			at:       notAfter.Add(-time.Second),
			wantJWKS: []map[string]string{jwkOf(t, k2), retiredJWK},
			valid:    map[string]bool{"old": true, "long": true, "unseen": true, "fresh": true},
		},
		{
			name:     "at NotAfter",
			at:       notAfter,
			wantJWKS: []map[string]string{jwkOf(t, k2)},
			valid:    map[string]bool{"old": false, "long": false, "unseen": false, "fresh": true},
		},
	} {
		t.Run(step.name, func(t *testing.T) {
			clk.Set(step.at)
			if diff := cmp.Diff(step.wantJWKS, jwksDoc(t, tk)); diff != "" {
				t.Errorf("JWKS mismatch (-want +got):\n%s", diff)
			}
			// Never seen before, so the key lookup decides, not the cache.
			unseen := forge(t, ourHeader(k1.ID), payload(with2(testClaims(start), func(c *TokenClaims) {
				c.ExpiresAt = start.Add(time.Hour)
				c.ID = "unseen-" + step.name
			})), es256(t, k1.Private))
			got := map[string]bool{}
			for name, raw := range map[string]string{"old": old, "long": long, "unseen": unseen, "fresh": fresh} {
				_, err := tk.Verify(raw)
				got[name] = err == nil
			}
			if diff := cmp.Diff(step.valid, got); diff != "" {
				t.Errorf("valid tokens mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		k3 := newTestKey(t, clk.Now())
		retired := k3
		retired.NotAfter = clk.Now().Add(time.Hour)
		for _, tc := range []struct {
			name     string
			key      SigningKey
			notAfter time.Time
			want     string
		}{
			{name: "same key again", key: k2, notAfter: clk.Now(), want: "duplicate key id"},
			{name: "retired new key", key: retired, notAfter: clk.Now(), want: "must not have NotAfter"},
			{name: "no NotAfter for the old", key: k3, want: "oldNotAfter is required"},
			{name: "no private key", key: SigningKey{ID: "x"}, notAfter: clk.Now(), want: "no private key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tk.Rotate(tc.key, tc.notAfter)
				if err == nil || !strings.HasPrefix(err.Error(), "authn: rotate key: ") || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Rotate error = %v, want one mentioning %q", err, tc.want)
				}
			})
		}
		if kid := headerKid(t, mustSign(t, tk, testClaims(clk.Now()))); kid != k2.ID {
			t.Errorf("a refused rotation changed the signer to %q", kid)
		}
	})
}

func TestTokenAddKey(t *testing.T) {
	tk, clk, k1 := newTestTokens(t, 0)
	older := newTestKey(t, clk.Now().Add(-time.Hour))
	if err := tk.AddKey(older); err != nil {
		t.Fatal(err)
	}
	if kid := headerKid(t, mustSign(t, tk, testClaims(clk.Now()))); kid != k1.ID {
		t.Errorf("an older key took over signing: %q", kid)
	}
	newer := newTestKey(t, clk.Now().Add(time.Second))
	if err := tk.AddKey(newer); err != nil {
		t.Fatal(err)
	}
	if kid := headerKid(t, mustSign(t, tk, testClaims(clk.Now()))); kid != newer.ID {
		t.Errorf("signer = %q, want the newest key %q", kid, newer.ID)
	}
	if diff := cmp.Diff([]map[string]string{jwkOf(t, newer), jwkOf(t, k1), jwkOf(t, older)}, jwksDoc(t, tk)); diff != "" {
		t.Errorf("JWKS mismatch (-want +got):\n%s", diff)
	}
	if err := tk.AddKey(k1); err == nil || !strings.Contains(err.Error(), "duplicate key id") {
		t.Errorf("AddKey(duplicate) = %v", err)
	}
	if err := tk.AddKey(SigningKey{ID: "../x", Private: k1.Private}); err == nil {
		t.Error("AddKey accepted a path as key id")
	}
}

func headerKid(t *testing.T, raw string) string {
	t.Helper()
	hb, err := base64.RawURLEncoding.DecodeString(strings.SplitN(raw, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// TestTokenConcurrent runs Sign, Verify, JWKS, AddKey and Rotate at once;
// run it with -race. Old keys retire an hour ahead, so every token signed
// during the test must keep verifying.
func TestTokenConcurrent(t *testing.T) {
	tk, clk, _ := newTestTokens(t, 64) // small, so eviction runs too
	const workers, rounds, rotations = 8, 200, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		wg.Go(func() {
			var mine []string
			for i := range rounds {
				c := testClaims(clk.Now())
				c.SessionID = opgate.SessionID(fmt.Sprintf("S-%d-%d", w, i))
				raw, err := tk.Sign(c)
				if err != nil {
					errs <- err
					return
				}
				mine = append(mine, raw)
				for _, r := range []string{raw, mine[i/2]} {
					got, err := tk.Verify(r)
					if err != nil {
						errs <- fmt.Errorf("worker %d round %d: %w", w, i, err)
						return
					}
					if r == raw && got.SessionID != c.SessionID {
						errs <- fmt.Errorf("worker %d: got session %q, want %q", w, got.SessionID, c.SessionID)
						return
					}
				}
				if i%50 == 0 {
					if _, err := tk.JWKS(); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := range rotations {
			k := newTestKey(t, clk.Now().Add(time.Duration(i+1)*time.Second))
			var err error
			if i%2 == 0 {
				err = tk.Rotate(k, clk.Now().Add(time.Hour))
			} else {
				err = tk.AddKey(k)
			}
			if err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := tk.cache.len(); n > 64 {
		t.Errorf("cache holds %d entries, bound 64", n)
	}
	if keys := jwksDoc(t, tk); len(keys) != rotations+1 {
		t.Errorf("JWKS has %d keys, want %d", len(keys), rotations+1)
	}
}

func TestTokenVerifyErrorLeaksNothing(t *testing.T) {
	tk, clk, _ := newTestTokens(t, 0)
	raw := mustSign(t, tk, testClaims(clk.Now()))
	clk.Advance(time.Hour)
	_, err := tk.Verify(raw)
	if !errors.Is(err, ErrInvalidToken) || errors.Unwrap(err) != nil || err.Error() != "authn: invalid token" {
		t.Errorf("Verify(expired) = %#v, want the bare sentinel", err)
	}
}
