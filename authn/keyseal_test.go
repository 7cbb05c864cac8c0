package authn

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestKeySealer: a sealed key opens only under its own ID and with its
// own key-encryption key; a key stored before sealing was turned on still
// reads; a sealed key without a sealer says what is missing.
func TestKeySealer(t *testing.T) {
	k, err := GenerateSigningKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := MarshalSigningKey(k)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKeySealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKeySealer(bytes.Repeat([]byte{8}, 32))
	sealed, err := s.seal(k.ID, pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Fatal("the sealed key shows its PEM")
	}
	if got, err := s.open(k.ID, sealed); err != nil || !bytes.Equal(got, pemBytes) {
		t.Fatalf("open: %v", err)
	}
	if _, err := s.open(k.ID+"x", sealed); err == nil {
		t.Error("a sealed key opened under another ID")
	}
	if _, err := other.open(k.ID, sealed); err == nil {
		t.Error("a sealed key opened with another key-encryption key")
	}
	var none *KeySealer
	if _, err := none.open(k.ID, sealed); err == nil || !strings.Contains(err.Error(), "OPGATE_KEY_ENCRYPTION_KEY_FILE") {
		t.Errorf("a sealed key without a sealer: %v", err)
	}
	if got, err := s.open(k.ID, pemBytes); err != nil || !bytes.Equal(got, pemBytes) {
		t.Errorf("a key stored before sealing: %v", err)
	}
	if _, err := NewKeySealer(make([]byte, 16)); err == nil {
		t.Error("a 16-byte key-encryption key was taken")
	}
}
