package authn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
)

// StoredKey is a signing key as the store keeps it.
type StoredKey struct {
	ID        string
	PEM       []byte // PKCS#8 PEM, or sealed (KeySealer)
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
//
// sealer (nil: none) encrypts keys generated here before they are stored,
// and opens sealed ones.
func LoadSigningKeys(ctx context.Context, db KeyDB, file string, sealer *KeySealer, now time.Time) ([]SigningKey, error) {
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
			keys, stored, err = storedKeys(ctx, tx, sealer, now)
			if err != nil || hasCurrent(keys) {
				return err
			}
			if err := tx.PutMeta(ctx, fmt.Sprintf("signing_key_generation_%d", stored), now.UTC().Format(time.RFC3339Nano)); err != nil {
				return err
			}
			k, err := addKey(ctx, tx, sealer, now)
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
func storedKeys(ctx context.Context, tx KeyTx, sealer *KeySealer, now time.Time) ([]SigningKey, int, error) {
	stored, err := tx.ListSigningKeys(ctx)
	if err != nil {
		return nil, 0, err
	}
	var keys []SigningKey
	sealedSeen := false
	for _, sk := range stored { // oldest first
		if isSealed(sk) {
			sealedSeen = true
		} else if sealedSeen && sk.NotAfter.IsZero() {
			// Keys stored before sealing was turned on still read; a
			// current key stored unsealed after a sealed one was written
			// by a rotation run without the key-encryption key, and sits
			// in every backup: no token is signed with it. Rotating with
			// the key set retires it (it then only verifies the tokens it
			// signed, until they expire).
			return nil, 0, fmt.Errorf("authn: signing key %s was stored unsealed after sealed keys: rotate again with OPGATE_KEY_ENCRYPTION_KEY_FILE set", sk.ID)
		}
		if !sk.NotAfter.IsZero() && !now.Before(sk.NotAfter) {
			continue
		}
		pemBytes, err := sealer.open(sk.ID, sk.PEM)
		if err != nil {
			return nil, 0, err
		}
		k, err := ParseSigningKey(sk.ID, pemBytes)
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

func addKey(ctx context.Context, tx KeyTx, sealer *KeySealer, now time.Time) (SigningKey, error) {
	k, err := GenerateSigningKey(now)
	if err != nil {
		return k, err
	}
	pemBytes, err := MarshalSigningKey(k)
	if err != nil {
		return k, err
	}
	stored, err := sealer.seal(k.ID, pemBytes)
	if err != nil {
		return k, err
	}
	if err := tx.AddSigningKey(ctx, StoredKey{ID: k.ID, PEM: stored, CreatedAt: now}); err != nil {
		return k, err
	}
	_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.SigningKeyAdded, At: now, Resource: "signing_key:" + k.ID})
	return k, err
}

// RotateSigningKeys adds a new current key and retires the current ones at
// now + retireAfter (the longest an access token they signed can live), so
// that JWKS keeps publishing them until their last token expires.
func RotateSigningKeys(ctx context.Context, db KeyDB, sealer *KeySealer, now time.Time, retireAfter time.Duration) (SigningKey, error) {
	var k SigningKey
	err := db.InTx(ctx, func(tx KeyTx) error {
		stored, err := tx.ListSigningKeys(ctx)
		if err != nil {
			return err
		}
		if sealer == nil && slices.ContainsFunc(stored, isSealed) {
			return fmt.Errorf("authn: the stored signing keys are sealed: set OPGATE_KEY_ENCRYPTION_KEY_FILE to rotate, or the new key would be stored in the clear")
		}
		for _, sk := range stored {
			if sk.NotAfter.IsZero() {
				sk.NotAfter = now.Add(retireAfter)
				if err := tx.UpdateSigningKey(ctx, sk); err != nil {
					return err
				}
			}
		}
		k, err = addKey(ctx, tx, sealer, now)
		return err
	})
	return k, err
}

// ReloadSigningKeys gives tokens the keys the store holds now.
func ReloadSigningKeys(ctx context.Context, db KeyDB, tokens *Tokens, sealer *KeySealer, now time.Time) error {
	var keys []SigningKey
	if err := db.InTx(ctx, func(tx KeyTx) (err error) { keys, _, err = storedKeys(ctx, tx, sealer, now); return }); err != nil {
		return err
	}
	return tokens.SetKeys(keys)
}
