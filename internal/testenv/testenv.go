// Package testenv finds the real services tests run against. A test that
// needs PostgreSQL or Redis gets its own database or key prefix, dropped
// after the test. Without the service it skips, unless
// OPGATE_TEST_REQUIRE_SERVICES=1, which makes it fail: CI must never pass
// by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Required reports whether missing services fail tests instead of skipping.
func Required() bool { return os.Getenv("OPGATE_TEST_REQUIRE_SERVICES") == "1" }

func missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s is required (OPGATE_TEST_REQUIRE_SERVICES=1) but not available", what)
	}
	t.Skipf("%s not available; set it to run this test", what)
}

// Name returns a short random name usable as a database name or key prefix.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PostgresURL creates a fresh database on the server named by
// OPGATE_TEST_POSTGRES_URL and returns its URL; the database is dropped
// when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("OPGATE_TEST_POSTGRES_URL")
	if base == "" {
		missing(t, "PostgreSQL (OPGATE_TEST_POSTGRES_URL)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		missing(t, "PostgreSQL at OPGATE_TEST_POSTGRES_URL ("+err.Error()+")")
	}
	defer conn.Close(ctx)
	name := Name("opgate_test_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop test database: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("OPGATE_TEST_POSTGRES_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns a client for OPGATE_TEST_REDIS_URL and a fresh key prefix;
// every key under the prefix is deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	raw := os.Getenv("OPGATE_TEST_REDIS_URL")
	if raw == "" {
		missing(t, "Redis (OPGATE_TEST_REDIS_URL)")
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatalf("OPGATE_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		missing(t, "Redis at OPGATE_TEST_REDIS_URL ("+err.Error()+")")
	}
	prefix := Name("opgate-test-") + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		DeletePrefix(ctx, c, prefix)
		_ = c.Close()
	})
	return c, prefix
}

// RedisURL is OPGATE_TEST_REDIS_URL, for tests that start servers.
func RedisURL(t testing.TB) string {
	t.Helper()
	c, _ := Redis(t)
	_ = c
	return os.Getenv("OPGATE_TEST_REDIS_URL")
}

// DeletePrefix removes every key that starts with prefix.
func DeletePrefix(ctx context.Context, c *redis.Client, prefix string) {
	iter := c.Scan(ctx, 0, escapeGlob(prefix)+"*", 500).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			c.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Del(ctx, batch...)
	}
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	return r.Replace(s)
}
