package authn

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/opgate/opgate/internal/clock"
)

// The benchmarks use the real clock: the baseline below checks exp with
// time.Now, and the three must verify the same token.
func benchTokens(b *testing.B, cacheSize int) (*Tokens, SigningKey, string) {
	b.Helper()
	clk := clock.Real{}
	key := newTestKey(b, clk.Now())
	tk, err := NewTokens(TokenConfig{Issuer: testIssuer, Keys: []SigningKey{key}, Clock: clk, CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	c := testClaims(clk.Now().Truncate(time.Second))
	c.ExpiresAt = c.IssuedAt.Add(time.Hour)
	return tk, key, mustSign(b, tk, c)
}

func BenchmarkTokenVerify(b *testing.B) {
	b.Run("bare-golang-jwt-ES256", func(b *testing.B) {
		_, key, raw := benchTokens(b, -1)
		pub := &key.Private.PublicKey
		keyFunc := func(*jwt.Token) (any, error) { return pub, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jwt.Parse(raw, keyFunc, jwt.WithValidMethods([]string{"ES256"})); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("opgate-uncached", func(b *testing.B) {
		tk, _, raw := benchTokens(b, -1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.Verify(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("opgate-cached", func(b *testing.B) {
		tk, _, raw := benchTokens(b, 0)
		if _, err := tk.Verify(raw); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.Verify(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("opgate-cached-parallel", func(b *testing.B) {
		tk, _, raw := benchTokens(b, 0)
		if _, err := tk.Verify(raw); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tk.Verify(raw); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("opgate-megabyte-of-dots", func(b *testing.B) {
		tk, _, _ := benchTokens(b, 0)
		dots := strings.Repeat(".", 1<<20)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.Verify(dots); err != ErrInvalidToken {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkTokenSign(b *testing.B) {
	tk, _, _ := benchTokens(b, 0)
	c := testClaims(clock.Real{}.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
