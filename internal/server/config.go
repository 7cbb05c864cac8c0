package server

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/ephemeral"
	"github.com/opgate/opgate/ephemeral/memory"
	eredis "github.com/opgate/opgate/ephemeral/redis"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/sqlite"
)

// Config is everything read from the environment, once.
type Config struct {
	Addr           string
	DatabaseURL    string
	RedisURL       string
	RPID           string
	RPOrigins      []string
	SigningKeyFile string
	// KeyEncryptionKeyFile holds the key that seals signing keys kept in
	// the store (authn.KeySealer); empty: they are kept as plain PEM.
	KeyEncryptionKeyFile string
	TLSCert              string
	TLSKey               string
	TLSClientCA          string
	Issuer               string
	// FIDOMetadataFile is an optional FIDO MDS3 blob on disk.
	FIDOMetadataFile string
	// FIDOMetadataRootFile is the PEM certificate the blob's signature
	// must chain to; empty: the FIDO Alliance's production root.
	FIDOMetadataRootFile string
	// PasswordParams are argon2id's; zero means the OWASP defaults. Tests
	// use small ones.
	PasswordParams authn.PasswordParams
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// LoadConfig reads the environment.
func LoadConfig() Config {
	c := Config{
		Addr:                 env("OPGATE_ADDR", "127.0.0.1:8080"),
		DatabaseURL:          env("OPGATE_DATABASE_URL", "sqlite:opgate.db"),
		RedisURL:             env("OPGATE_REDIS_URL", ""),
		RPID:                 env("OPGATE_RP_ID", "localhost"),
		SigningKeyFile:       env("OPGATE_SIGNING_KEY_FILE", ""),
		KeyEncryptionKeyFile: env("OPGATE_KEY_ENCRYPTION_KEY_FILE", ""),
		TLSCert:              env("OPGATE_TLS_CERT", ""),
		TLSKey:               env("OPGATE_TLS_KEY", ""),
		TLSClientCA:          env("OPGATE_TLS_CLIENT_CA", ""),
		Issuer:               env("OPGATE_ISSUER", "opgate"),
		FIDOMetadataFile:     env("OPGATE_FIDO_METADATA_FILE", ""),
		FIDOMetadataRootFile: env("OPGATE_FIDO_METADATA_ROOT_FILE", ""),
	}
	for _, o := range strings.Split(env("OPGATE_RP_ORIGINS", "http://localhost:8080"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.RPOrigins = append(c.RPOrigins, o)
		}
	}
	return c
}

// withDefaults fills what the environment left empty with the documented
// defaults, so that a Config built in code behaves like one read from an
// empty environment.
func (c Config) withDefaults() Config {
	if c.RPID == "" {
		c.RPID = "localhost"
	}
	if len(c.RPOrigins) == 0 {
		c.RPOrigins = []string{"http://localhost:8080"}
	}
	if c.Issuer == "" {
		c.Issuer = "opgate"
	}
	return c
}

// Validate reports every inconsistency at once.
func (c Config) Validate() error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("OPGATE_TLS_CERT and OPGATE_TLS_KEY go together"))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("OPGATE_TLS_CLIENT_CA needs OPGATE_TLS_CERT and OPGATE_TLS_KEY"))
	}
	return errors.Join(errs...)
}

// OpenStore opens the store the URL names and applies migrations.
func OpenStore(ctx context.Context, url string) (store.Store, error) {
	switch {
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		if path == "" {
			return nil, errors.New("OPGATE_DATABASE_URL: sqlite: needs a file path")
		}
		return sqlite.Open(ctx, path)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return postgres.Open(ctx, url, postgres.Options{})
	}
	return nil, errors.New("OPGATE_DATABASE_URL must start with sqlite: or postgres://")
}

// OpenEphemeral opens Redis, or the in-process state when url is empty.
func OpenEphemeral(ctx context.Context, url string, clk clock.Clock) (ephemeral.Store, func(), error) {
	if url == "" {
		s := memory.New(memory.Config{Clock: clk})
		return s, func() { _ = s.Close() }, nil
	}
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, nil, errors.New("OPGATE_REDIS_URL is not a redis:// URL") // the parse error may echo a password
	}
	client := goredis.NewClient(opt)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, nil, fmt.Errorf("redis: %w", ephemeral.ErrUnavailable)
	}
	s, err := eredis.New(eredis.Config{Client: client, Prefix: env("OPGATE_REDIS_PREFIX", "opgate:")})
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	return s, func() { _ = s.Close(); _ = client.Close() }, nil
}

// KeySealer is the sealer of signing keys kept in the store, nil without
// a key-encryption key file.
func (c Config) KeySealer() (*authn.KeySealer, error) {
	if c.KeyEncryptionKeyFile == "" {
		return nil, nil
	}
	return authn.LoadKeySealer(c.KeyEncryptionKeyFile)
}

// FIDOMetadataRoot is the trust anchor of the FIDO metadata blob as
// authn.CeremonyConfig takes it (base64 DER), empty for the production
// root.
func (c Config) FIDOMetadataRoot() (string, error) {
	if c.FIDOMetadataRootFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.FIDOMetadataRootFile)
	if err != nil {
		return "", fmt.Errorf("OPGATE_FIDO_METADATA_ROOT_FILE: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("OPGATE_FIDO_METADATA_ROOT_FILE: no PEM CERTIFICATE")
	}
	return base64.StdEncoding.EncodeToString(block.Bytes), nil
}
