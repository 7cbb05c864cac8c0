package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA issues certificates for the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key, PEM-encoded.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTerminalCertificates runs `opgate serve` with TLS and terminal
// client certificates (R2.9): the terminal of a login is its certificate's
// CN, a different terminal_id is refused, a login without a certificate is
// refused, and a certificate from another CA does not get through TLS.
func TestTerminalCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "opgate test terminals"), newCA(t, "someone else")
	srvCert, srvKey := ca.issue(t, "opgate", true)
	termCert, termKey := ca.issue(t, "admin-console", false)
	strayCert, strayKey := other.issue(t, "admin-console", false)
	env := map[string]string{
		"OPGATE_DATABASE_URL":  "sqlite:" + filepath.Join(dir, "opgate.db"),
		"OPGATE_TLS_CERT":      writeFile(t, dir, "server.pem", srvCert),
		"OPGATE_TLS_KEY":       writeFile(t, dir, "server-key.pem", srvKey),
		"OPGATE_TLS_CLIENT_CA": writeFile(t, dir, "ca.pem", ca.pem),
	}
	bootstrapChild(t, env)
	p := launchServe(t, "serve-tls", env)
	url := "https://" + p.url[len("http://"):]

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	newClient := func(certPEM, keyPEM []byte) *http.Client {
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	terminal, anonymous, stray := newClient(termCert, termKey), newClient(nil, nil), newClient(strayCert, strayKey)

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := anonymous.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("TLS server not ready: %v\n%s", err, p.out.tail(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	begin := func(c *http.Client, body map[string]any) (int, map[string]any, error) {
		b, _ := json.Marshal(body)
		resp, err := c.Post(url+"/v1/login/card/begin", "application/json", bytes.NewReader(b))
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m, nil
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
		body   map[string]any
		status int
		code   string
	}{
		{"terminal named by its certificate", terminal, map[string]any{}, 200, ""},
		{"certificate and the same terminal_id", terminal, map[string]any{"terminal_id": "admin-console"}, 200, ""},
		{"certificate and another terminal_id", terminal, map[string]any{"terminal_id": "honcho-02"}, 403, "terminal_not_allowed"},
		{"no certificate", anonymous, map[string]any{"terminal_id": "admin-console"}, 403, "terminal_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m, err := begin(tc.client, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || (tc.code != "" && m["code"] != tc.code) {
				t.Fatalf("got %d %v, want %d %s", status, m, tc.status, tc.code)
			}
		})
	}
	t.Run("certificate of another CA", func(t *testing.T) {
		// A client offers only a certificate the server's CA list names,
		// so this one arrives as no certificate at all, or is refused in
		// the handshake; either way no login begins.
		status, m, err := begin(stray, map[string]any{"terminal_id": "admin-console"})
		if err == nil && (status != 403 || m["code"] != "terminal_not_allowed") {
			t.Fatalf("got %d %v, want a refusal", status, m)
		}
	})
}
