package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/opgate/opgate/ephemeral/memory"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/store/sqlite"
)

// TestMetadataNeverFetchesRevocation: a FIDO metadata blob signed under a
// private root, whose signing certificate names a CRL, is verified and
// loaded by a server without that CRL ever being asked for: opgate makes
// no network calls.
func TestMetadataNeverFetchesRevocation(t *testing.T) {
	var hits atomic.Int32
	crl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	defer crl.Close()

	dir := t.TempDir()
	validity := func(c *x509.Certificate) *x509.Certificate {
		c.NotBefore, c.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		return c
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := validity(&x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "private MDS root"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	rootFile := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := validity(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "private MDS signer"},
		KeyUsage: x509.KeyUsageDigitalSignature, CRLDistributionPoints: []string{crl.URL + "/mds.crl"}})
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, rootCert, &leafKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT",
		"x5c": []string{base64.StdEncoding.EncodeToString(leafDER), base64.StdEncoding.EncodeToString(rootDER)}})
	input := b64(header) + "." + b64([]byte(`{"legalHeader":"test","no":1,"nextUpdate":"2027-01-01","entries":[]}`))
	sig, err := jwt.SigningMethodES256.Sign(input, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	blobFile := filepath.Join(dir, "mds3.jwt")
	if err := os.WriteFile(blobFile, []byte(input+"."+b64(sig)), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "opgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := clocktest.New()
	_, err = server.Wire(ctx, server.Config{RPID: "localhost", RPOrigins: []string{"http://localhost:8080"},
		FIDOMetadataFile: blobFile, FIDOMetadataRootFile: rootFile}, st, memory.New(memory.Config{Clock: clk}), clk,
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("wire with the metadata blob: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the CRL was asked for %d times", n)
	}
}
