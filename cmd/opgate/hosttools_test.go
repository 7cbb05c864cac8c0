package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/store"
)

// TestHostTools runs the commands an administrator uses on the server's
// host: emergency resume (the last resort when nobody who may resume can
// log in), service add and keys rotate, each leaving its audit event.
func TestHostTools(t *testing.T) {
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "opgate.db")
	env := map[string]string{"OPGATE_DATABASE_URL": dbURL}
	bootstrapChild(t, env)
	ctx := context.Background()
	st, err := server.OpenStore(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.InTx(ctx, func(tx store.Tx) error {
		return tx.PutStop(ctx, authn.Stop{Scope: opgate.AllSites, Reason: "drill", StoppedBy: "OP-X", StoppedAt: time.Now().UTC()})
	}); err != nil {
		t.Fatal(err)
	}

	if _, errOut, code := tool(t, env, "emergency", "resume"); code == 0 || !strings.Contains(errOut, "--reason") {
		t.Fatalf("resume without a reason: exit %d, %q", code, errOut)
	}
	if out, errOut, code := tool(t, env, "emergency", "resume", "--reason", "訓練終了"); code != 0 || !strings.Contains(out, "lifted") {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code := tool(t, env, "emergency", "resume", "--reason", "again"); code == 0 {
		t.Fatal("a second resume succeeded")
	}
	out, errOut, code := tool(t, env, "service", "add", "jumin-kiroku")
	if code != 0 || !strings.Contains(out, "opgsk_") {
		t.Fatalf("service add: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code := tool(t, env, "service", "add", "jumin-kiroku"); code == 0 {
		t.Fatal("a second service of one name was added")
	}
	if out, errOut, code := tool(t, env, "keys", "rotate"); code != 0 || !strings.Contains(out, "new signing key") {
		t.Fatalf("keys rotate: exit %d\n%s%s", code, out, errOut)
	}
	var types []string
	if err := st.View(ctx, func(tx store.Tx) error {
		evs, err := tx.ListAudit(ctx, audit.Filter{Limit: 1000})
		for _, e := range evs {
			types = append(types, string(e.Type))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(types, " ")
	for _, want := range []string{"emergency.resumed", "service_key.added", "signing_key.added"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %s event in %v", want, types)
		}
	}
	if out, _, code := tool(t, env, "audit", "verify"); code != 0 {
		t.Fatalf("audit verify after the host tools: %s", out)
	}
}
