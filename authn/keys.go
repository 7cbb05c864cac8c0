package authn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
)

// StoredKey is a signing key as the store keeps it.
type StoredKey struct {
	ID        string
	PEM       []byte
	CreatedAt time.Time
	NotAfter  time.Time
}

// KeyTx is what key management reads and writes.
type KeyTx interface {
	ListSigningKeys(ctx context.Context) ([]StoredKey, error)
	AddSigningKey(ctx context.Context, k StoredKey) error
	UpdateSigningKey(ctx context.Context, k StoredKey) error
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
	// PutMeta records a one-off marker; ErrConflict if it is present.
	PutMeta(ctx context.Context, key, value string) error
}

// KeyDB runs key management's transactions.
type KeyDB interface {
	InTx(ctx context.Context, fn func(KeyTx) error) error
}

// LoadSigningKeys returns the keys to sign and verify with. With a key
// file, that key alone signs. Otherwise the keys kept in the store are
// used, and on first start a key is generated and kept there; replicas
// starting together agree on one: each first claims the generation (a
// marker named by how many keys are stored), the second claim conflicts,
// and that replica reads the first's key. Distinct keys never conflict by
// themselves, and under PostgreSQL's READ COMMITTED both replicas would
// otherwise add their own and refuse each other's tokens.
func LoadSigningKeys(ctx context.Context, db KeyDB, file string, now time.Time) ([]SigningKey, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("authn: signing key file: %w", err)
		}
		k, err := ParseSigningKey("", b)
		if err != nil {
			return nil, err
		}
		k.CreatedAt = now
		return []SigningKey{k}, nil
	}
	var keys []SigningKey
	for attempt := 0; attempt < 3; attempt++ {
		err := db.InTx(ctx, func(tx KeyTx) error {
			var err error
			var stored int
			keys, stored, err = storedKeys(ctx, tx, now)
			if err != nil || hasCurrent(keys) {
				return err
			}
			if err := tx.PutMeta(ctx, fmt.Sprintf("signing_key_generation_%d", stored), now.UTC().Format(time.RFC3339Nano)); err != nil {
				return err
			}
			k, err := addKey(ctx, tx, now)
			keys = append(keys, k)
			return err
		})
		if err == nil {
			return keys, nil
		}
		if !errors.Is(err, opgate.ErrConflict) {
			return nil, err
		}
	}
	return nil, errors.New("authn: could not agree on a signing key")
}

// storedKeys returns the keys still live at now, and how many keys are
// stored, live or not.
func storedKeys(ctx context.Context, tx KeyTx, now time.Time) ([]SigningKey, int, error) {
	stored, err := tx.ListSigningKeys(ctx)
	if err != nil {
		return nil, 0, err
	}
	var keys []SigningKey
	for _, sk := range stored {
		if !sk.NotAfter.IsZero() && !now.Before(sk.NotAfter) {
			continue
		}
		k, err := ParseSigningKey(sk.ID, sk.PEM)
		if err != nil {
			return nil, 0, err
		}
		k.CreatedAt, k.NotAfter = sk.CreatedAt, sk.NotAfter
		keys = append(keys, k)
	}
	return keys, len(stored), nil
}

func hasCurrent(keys []SigningKey) bool {
	for _, k := range keys {
		if k.current() {
			return true
		}
	}
	return false
}

func addKey(ctx context.Context, tx KeyTx, now time.Time) (SigningKey, error) {
	k, err := GenerateSigningKey(now)
	if err != nil {
		return k, err
	}
	pem, err := MarshalSigningKey(k)
	if err != nil {
		return k, err
	}
	if err := tx.AddSigningKey(ctx, StoredKey{ID: k.ID, PEM: pem, CreatedAt: now}); err != nil {
		return k, err
	}
	_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.SigningKeyAdded, At: now, Resource: "signing_key:" + k.ID})
	return k, err
}

// RotateSigningKeys adds a new current key and retires the current ones at
// now + retireAfter (the longest an access token they signed can live), so
// that JWKS keeps publishing them until their last token expires.
func RotateSigningKeys(ctx context.Context, db KeyDB, now time.Time, retireAfter time.Duration) (SigningKey, error) {
	var k SigningKey
	err := db.InTx(ctx, func(tx KeyTx) error {
		stored, err := tx.ListSigningKeys(ctx)
		if err != nil {
			return err
		}
		for _, sk := range stored {
			if sk.NotAfter.IsZero() {
				sk.NotAfter = now.Add(retireAfter)
				if err := tx.UpdateSigningKey(ctx, sk); err != nil {
					return err
				}
			}
		}
		k, err = addKey(ctx, tx, now)
		return err
	})
	return k, err
}

// ReloadSigningKeys gives tokens the keys the store holds now.
func ReloadSigningKeys(ctx context.Context, db KeyDB, tokens *Tokens, now time.Time) error {
	var keys []SigningKey
	if err := db.InTx(ctx, func(tx KeyTx) (err error) { keys, _, err = storedKeys(ctx, tx, now); return }); err != nil {
		return err
	}
	return tokens.SetKeys(keys)
}
