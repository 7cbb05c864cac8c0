package authn

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
)

// KeySealer encrypts token signing keys before they reach the store, with
// AES-256-GCM under a key-encryption key that lives outside the database
// (OPGATE_KEY_ENCRYPTION_KEY_FILE): a copy of the database, or of its
// backups, then holds no key that can sign access tokens. The key's ID is
// bound in as associated data, so a sealed key cannot be passed off under
// another ID. A nil *KeySealer stores keys as plain PEM.
type KeySealer struct {
	aead cipher.AEAD
}

// sealedPrefix marks a sealed key in the store; a key without it was
// stored before sealing was turned on and is read as plain PEM.
const sealedPrefix = "opgate-sealed-v1:"

// NewKeySealer takes a 32-byte key-encryption key.
func NewKeySealer(kek []byte) (*KeySealer, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("authn: key-encryption key: want 32 bytes, got %d", len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KeySealer{aead: aead}, nil
}

// LoadKeySealer reads a key-encryption key file: 32 random bytes in
// standard base64 (for example `openssl rand -base64 32`).
func LoadKeySealer(file string) (*KeySealer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("authn: key-encryption key file: %w", err)
	}
	kek, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil {
		return nil, errors.New("authn: key-encryption key file: not base64")
	}
	return NewKeySealer(kek)
}

func keyAD(id string) []byte { return []byte("opgate signing key\x00" + id) }

// seal returns what the store keeps for the key id.
func (s *KeySealer) seal(id string, pemBytes []byte) ([]byte, error) {
	if s == nil {
		return pemBytes, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ct := s.aead.Seal(nonce, nonce, pemBytes, keyAD(id))
	return []byte(sealedPrefix + base64.StdEncoding.EncodeToString(ct)), nil
}

// isSealed reports whether the store keeps k sealed.
func isSealed(k StoredKey) bool { return bytes.HasPrefix(k.PEM, []byte(sealedPrefix)) }

// open returns the PEM of a key as the store keeps it.
func (s *KeySealer) open(id string, stored []byte) ([]byte, error) {
	enc, sealed := bytes.CutPrefix(stored, []byte(sealedPrefix))
	if !sealed {
		return stored, nil
	}
	if s == nil {
		return nil, fmt.Errorf("authn: signing key %s is sealed: set OPGATE_KEY_ENCRYPTION_KEY_FILE", id)
	}
	ct, err := base64.StdEncoding.DecodeString(string(enc))
	if err != nil || len(ct) < s.aead.NonceSize() {
		return nil, fmt.Errorf("authn: signing key %s: sealed data is malformed", id)
	}
	pemBytes, err := s.aead.Open(nil, ct[:s.aead.NonceSize()], ct[s.aead.NonceSize():], keyAD(id))
	if err != nil {
		return nil, fmt.Errorf("authn: signing key %s: cannot open it with this key-encryption key", id)
	}
	return pemBytes, nil
}
