package authn_test

import (
	"context"
	"crypto/ecdsa"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/sqlite"
)

// BenchmarkTokenCheck measures what every authenticated request pays: the
// token's signature (cached once verified) and its session's liveness in
// the state every replica shares, against a bare golang-jwt ES256 verify
// in the same run.
func BenchmarkTokenCheck(b *testing.B) {
	clk := clocktest.New()
	key, err := authn.GenerateSigningKey(clk.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("baseline-bare-golang-jwt-ES256", func(b *testing.B) {
		raw, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "OP-12345678", "sid": "S-abc", "exp": clk.Now().Add(time.Hour).Unix()}).SignedString(key.Private)
		if err != nil {
			b.Fatal(err)
		}
		pub := &key.Private.PublicKey
		p := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(clk.Now))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Parse(raw, func(*jwt.Token) (any, error) { return (*ecdsa.PublicKey)(pub), nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, be := range []struct {
		name string
		open func(b *testing.B) (store.Store, ephemeral.Store)
	}{
		{"sqlite+memory", func(b *testing.B) (store.Store, ephemeral.Store) {
			st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "opgate.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st, memory.New(memory.Config{Clock: clk})
		}},
		{"postgres+redis", func(b *testing.B) (store.Store, ephemeral.Store) {
			st, err := postgres.Open(context.Background(), testenv.PostgresURL(b), postgres.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			c, prefix := testenv.Redis(b)
			e, err := eredis.New(eredis.Config{Client: c, Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			return st, e
		}},
	} {
		b.Run("authenticate-"+be.name, func(b *testing.B) {
			st, eph := be.open(b)
			tokens, err := authn.NewTokens(authn.TokenConfig{Issuer: "opgate", Keys: []authn.SigningKey{key}, Clock: clk})
			if err != nil {
				b.Fatal(err)
			}
			sessions := sessionsOn(b, st, eph, tokens, clk)
			ctx := context.Background()
			iss, err := sessions.Start(ctx, authn.Start{OperatorID: opgate.OperatorID("OP-12345678"), SiteID: "honcho", TerminalID: "t1", AMR: []string{"hwk", "user"}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := sessions.Authenticate(ctx, iss.AccessToken); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
