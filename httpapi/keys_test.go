package httpapi_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/internal/servertest"
	"github.com/opgate/opgate/store"
)

// TestIntrospectionWithServiceKey: a service key (opgate service add)
// introspects tokens; a wrong key, or an operator without audit.read, may
// not; an ended session is inactive.
func TestIntrospectionWithServiceKey(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	ctx := context.Background()
	key, err := authn.AddServiceKey(ctx, store.Runner[authn.ServiceTx]{S: s.App.Store}, "jumin-kiroku", s.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.AddServiceKey(ctx, store.Runner[authn.ServiceTx]{S: s.App.Store}, "jumin-kiroku", s.Clock.Now()); err == nil {
		t.Fatal("a second key of one name was added")
	}
	op := s.Must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": "5001", "name": "窓口 花子", "site_id": "honcho", "employment_type": "regular"}).Map(t)
	id := op["operator_id"].(string)
	s.Must(201, "POST", "/v1/operators/"+id+"/grants", s.Admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"})
	clerk := s.Token(opID(id), "honcho", "admin-console")

	got := s.Must(200, "POST", "/v1/introspect", key, map[string]any{"token": clerk}).Map(t)
	if got["active"] != true || got["sub"] != id || got["site_id"] != "honcho" || got["terminal_id"] != "admin-console" || got["sid"] == nil || got["exp"] == nil {
		t.Fatalf("introspection: %v", got)
	}
	s.Must(401, "POST", "/v1/introspect", "opgsk_not-a-key", map[string]any{"token": clerk})
	s.Must(403, "POST", "/v1/introspect", clerk, map[string]any{"token": clerk})
	s.Must(200, "POST", "/v1/introspect", s.Admin, map[string]any{"token": clerk})

	// A session that must change its password first is not active to
	// another system either.
	iss, err := s.App.Sessions.Start(ctx, authn.Start{OperatorID: opID(id), SiteID: "honcho", TerminalID: "admin-console",
		AMR: []string{"pwd"}, PasswordChangeRequired: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Must(200, "POST", "/v1/introspect", key, map[string]any{"token": iss.AccessToken}).Map(t); got["active"] != false {
		t.Fatalf("a session that must change its password: %v", got)
	}

	s.Must(204, "POST", "/v1/logout", clerk, nil)
	if got := s.Must(200, "POST", "/v1/introspect", key, map[string]any{"token": clerk}).Map(t); got["active"] != false || len(got) != 1 {
		t.Fatalf("after logout: %v", got)
	}
}

// TestKeyRotationReachesRunningServers: a key added by `opgate keys
// rotate` signs the next tokens on every replica after one sweep; the old
// key keeps verifying its tokens, and is published, until it retires.
func TestKeyRotationReachesRunningServers(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	other := servertest.Join(t, s.Shared(), s.Clock)
	ctx := context.Background()
	jwks := func(srv *servertest.Server) []string {
		var doc struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		srv.Must(200, "GET", "/.well-known/jwks.json", "", nil).JSON(t, &doc)
		var ids []string
		for _, k := range doc.Keys {
			ids = append(ids, k.Kid)
		}
		return ids
	}
	before := jwks(s)
	if len(before) != 1 {
		t.Fatalf("keys before rotation: %v", before)
	}
	oldToken := s.Admin
	k, err := authn.RotateSigningKeys(ctx, store.Runner[authn.KeyTx]{S: s.App.Store}, nil, s.Clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	since := s.Clock.Now().Add(-time.Minute)
	s.App.Sweep(ctx, since)
	other.App.Sweep(ctx, since)
	for _, srv := range []*servertest.Server{s, other} {
		if got := jwks(srv); len(got) != 2 {
			t.Fatalf("keys after rotation: %v", got)
		}
		srv.Must(200, "GET", "/v1/me", oldToken, nil)
	}
	newToken := other.Token(s.Boot.OperatorID, "honcho", "admin-console")
	s.Must(200, "GET", "/v1/me", newToken, nil)
	if got := s.Must(200, "POST", "/v1/introspect", s.Admin, map[string]any{"token": newToken}).Map(t); got["active"] != true {
		t.Fatalf("new token: %v", got)
	}
	// After the old key retires it is neither published nor trusted.
	s.Clock.Advance(time.Hour + time.Second)
	s.App.Sweep(ctx, since)
	if got := jwks(s); len(got) != 1 || got[0] != k.ID {
		t.Fatalf("keys after retirement: %v, want [%s]", got, k.ID)
	}
}

// TestSigningKeysSealedInTheStore: with a key-encryption key, the signing
// keys the store keeps are sealed (no private key in the database), tokens
// work and rotation seals the new key too; a replica without that key, or
// with another one, refuses to start rather than sign with nothing.
func TestSigningKeysSealedInTheStore(t *testing.T) {
	kekFile := func(name string) string {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kek := kekFile("kek")
	s := servertest.Start(t, servertest.Backends[0], servertest.WithKeyEncryptionKeyFile(kek))
	ctx := context.Background()
	s.Must(200, "GET", "/v1/me", s.Admin, nil)
	sealer, err := authn.LoadKeySealer(kek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.RotateSigningKeys(ctx, store.Runner[authn.KeyTx]{S: s.App.Store}, sealer, s.Clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	s.App.Sweep(ctx, s.Clock.Now().Add(-time.Minute))
	s.Must(200, "GET", "/v1/me", s.Token(s.Boot.OperatorID, "honcho", "admin-console"), nil)
	var stored []authn.StoredKey
	if err := s.App.Store.View(ctx, func(tx store.Tx) (err error) { stored, err = tx.ListSigningKeys(ctx); return }); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 {
		t.Fatalf("%d keys stored, want 2", len(stored))
	}
	for _, k := range stored {
		if !strings.HasPrefix(string(k.PEM), "opgate-sealed-v1:") || strings.Contains(string(k.PEM), "PRIVATE KEY") {
			t.Errorf("key %s stored unsealed: %.40s", k.ID, k.PEM)
		}
	}
	// A rotation run without the key-encryption key would store the new
	// key in the clear: it is refused.
	if _, err := authn.RotateSigningKeys(ctx, store.Runner[authn.KeyTx]{S: s.App.Store}, nil, s.Clock.Now(), time.Hour); err == nil {
		t.Error("a rotation without the key-encryption key went through")
	}
	for name, file := range map[string]string{"no key-encryption key": "", "another key-encryption key": kekFile("other")} {
		_, err := server.Wire(ctx, server.Config{Issuer: "opgate-test", RPID: "localhost", RPOrigins: []string{servertest.Origin},
			KeyEncryptionKeyFile: file}, s.App.Store, s.App.Eph, s.Clock, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		if err == nil {
			t.Errorf("%s: a replica started on sealed keys", name)
		}
	}
	// A key stored in the clear after sealed ones (a rotation by an older
	// build, or by hand) is refused, not signed with.
	clear, err := authn.GenerateSigningKey(s.Clock.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := authn.MarshalSigningKey(clear)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.App.Store.InTx(ctx, func(tx store.Tx) error {
		return tx.AddSigningKey(ctx, authn.StoredKey{ID: clear.ID, PEM: pemBytes, CreatedAt: s.Clock.Now().Add(time.Second)})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Wire(ctx, server.Config{Issuer: "opgate-test", RPID: "localhost", RPOrigins: []string{servertest.Origin},
		KeyEncryptionKeyFile: kek}, s.App.Store, s.App.Eph, s.Clock, slog.New(slog.NewJSONHandler(io.Discard, nil))); err == nil {
		t.Error("a replica started with a key stored in the clear after sealed ones")
	}
	// The remedy the refusal names works: a rotation with the key set
	// retires the clear key, and replicas start again.
	if _, err := authn.RotateSigningKeys(ctx, store.Runner[authn.KeyTx]{S: s.App.Store}, sealer, s.Clock.Now().Add(2*time.Second), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Wire(ctx, server.Config{Issuer: "opgate-test", RPID: "localhost", RPOrigins: []string{servertest.Origin},
		KeyEncryptionKeyFile: kek}, s.App.Store, s.App.Eph, s.Clock, slog.New(slog.NewJSONHandler(io.Discard, nil))); err != nil {
		t.Errorf("after a sealed rotation: %v", err)
	}
}
