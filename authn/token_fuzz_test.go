package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/internal/clock/clocktest"
)

// fuzzKey is a P-256 key derived from a public string. Every fuzz worker
// is its own process and runs FuzzVerify's setup again, so the key and the
// accepted seed tokens must be the same in all of them: a fresh random key
// per process would make every seed token a forgery in the workers, and the
// fuzzer would never mutate a token that verifies.
func fuzzKey(t testing.TB) SigningKey {
	d := sha256.Sum256([]byte("opgate FuzzVerify key; public, not a secret"))
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	id, err := keyThumbprint(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{ID: id, Private: priv, CreatedAt: clocktest.New().Now()}
}

// fuzzSigned are tokens Sign made with fuzzKey for testClaims at
// clocktest.New() (ECDSA signatures are randomised, so they are kept, not
// remade): the default claims, with "pwd" in amr and jti-2, and without
// amr, site and terminal and with jti-3. They are the only strings
// FuzzVerify may see accepted.
var fuzzSigned = []string{
	"eyJhbGciOiJFUzI1NiIsImtpZCI6IkphbU9ya3UzT2tMZHN5TkMiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL29wZ2F0ZS50ZXN0Iiwic3ViIjoiT1AtN1EySzlYNE0iLCJleHAiOjE4MDU5MzMxMDAsImlhdCI6MTgwNTkzMjgwMCwianRpIjoianRpLTEiLCJzaWQiOiJTLTEiLCJzaXRlX2lkIjoic2hpYnV5YSIsInRlcm1pbmFsX2lkIjoiY291bnRlci0zIiwiYW1yIjpbImh3ayIsInVzZXIiXX0.xrOfH_7yX7gx5yky2q2yGqAKCIKLmCzlJVs01fWBT2kvLmWGvgkKjNl2NUbibUfhCDtKC_Mb0M8hsq6qeKlAZA",
	"eyJhbGciOiJFUzI1NiIsImtpZCI6IkphbU9ya3UzT2tMZHN5TkMiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL29wZ2F0ZS50ZXN0Iiwic3ViIjoiT1AtN1EySzlYNE0iLCJleHAiOjE4MDU5MzMxMDAsImlhdCI6MTgwNTkzMjgwMCwianRpIjoianRpLTIiLCJzaWQiOiJTLTEiLCJzaXRlX2lkIjoic2hpYnV5YSIsInRlcm1pbmFsX2lkIjoiY291bnRlci0zIiwiYW1yIjpbImh3ayIsInVzZXIiLCJwd2QiXX0.s5o6ix3Fb8fC77HB7aLs83d20Scq7CmwSMCLB4d_LEghh8a0PCioHhL9Km1yg4nXCq6s-R_QmUZGW34yi0KFQQ",
	"eyJhbGciOiJFUzI1NiIsImtpZCI6IkphbU9ya3UzT2tMZHN5TkMiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL29wZ2F0ZS50ZXN0Iiwic3ViIjoiT1AtN1EySzlYNE0iLCJleHAiOjE4MDU5MzMxMDAsImlhdCI6MTgwNTkzMjgwMCwianRpIjoianRpLTMiLCJzaWQiOiJTLTEiLCJzaXRlX2lkIjoiIiwidGVybWluYWxfaWQiOiIifQ.QRGnKgQbEs40wEAsqmf39UT-lQ9Bz0RPqDZ3p4zi4E0yOcmDv1CgkDf74M8woCmCg_Yzgn7IRrsONRBVf6THdQ",
}

// FuzzVerify feeds Verify arbitrary strings. It must never panic, never
// return an error other than ErrInvalidToken, and never accept a string
// that is not one of the tokens we signed: not a mutation of one, not
// another spelling of one.
func FuzzVerify(f *testing.F) {
	clk := clocktest.New()
	now := clk.Now()
	key := fuzzKey(f)
	tk, err := NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}, Clock: clk})
	if err != nil {
		f.Fatal(err)
	}
	signed := map[string]bool{}
	for _, raw := range fuzzSigned {
		if _, err := tk.Verify(raw); err != nil {
			f.Fatalf("seed token refused (was fuzzKey or testClaims changed?): %v", err)
		}
		signed[raw] = true
		f.Add(raw)
	}
	parts := strings.Split(fuzzSigned[0], ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[1] + "." + parts[0] + "." + parts[2])
	f.Add(fuzzSigned[0] + ".")
	f.Add(fuzzSigned[0][:len(fuzzSigned[0])-1])

	// Hostile seeds. Those signed with fuzzKey differ from process to
	// process, which is harmless: each must be refused anyway.
	other := newTestKey(f, now)
	ours := es256(f, key.Private)
	good := payload(testClaims(now))
	hdr := ourHeader(key.ID)
	for _, raw := range []string{
		"",
		".",
		"..",
		"...",
		strings.Repeat(".", 5000),
		strings.Repeat("A", 4097),
		"eyJhbGciOiJub25lIn0.e30.",
		forge(f, with(hdr, "alg", "none"), good, garbage),
		forge(f, with(hdr, "alg", "HS256"), good, hs256([]byte("secret"))),
		forge(f, with(hdr, "kid", "../../etc/passwd"), good, ours),
		forge(f, with(hdr, "jku", "https://evil.example/jwks.json"), good, ours),
		forge(f, with(hdr, "jwk", map[string]any{"kty": "EC"}), good, es256(f, other.Private)),
		forge(f, hdr, good, es256(f, other.Private)),
		forge(f, hdr, without(good, "exp"), ours),
		forge(f, hdr, with(good, "exp", now.Add(-time.Minute).Unix()), garbage),
		forge(f, hdr, with(good, "iss", "https://evil.example"), ours),
		forge(f, hdr, with(good, "exp", 1e300, "iat", -1e300), ours),
		forge(f, hdr, with(good, "amr", map[string]any{"a": []any{1, nil}}), ours),
	} {
		f.Add(raw)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		got, err := tk.Verify(raw)
		if err != nil {
			if err != ErrInvalidToken {
				t.Fatalf("Verify error = %v, want ErrInvalidToken", err)
			}
			return
		}
		if !signed[raw] {
			t.Fatalf("Verify accepted a token it did not sign: %q → %+v", raw, got)
		}
	})
}
