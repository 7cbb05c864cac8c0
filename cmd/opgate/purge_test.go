package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/server"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/store"
)

// TestAuditPurge runs `opgate audit purge` on both stores: only what is
// past retention and older than --before goes, one audit.purged event
// says what, and `opgate audit verify` stays green.
func TestAuditPurge(t *testing.T) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) {
			dbURL := "sqlite:" + filepath.Join(t.TempDir(), "opgate.db")
			if b == "postgres" {
				dbURL = testenv.PostgresURL(t)
			}
			env := map[string]string{"OPGATE_DATABASE_URL": dbURL}
			ctx := context.Background()
			st, err := server.OpenStore(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			now := time.Now().UTC()
			old := now.AddDate(-8, 0, 0)
			if err := st.InTx(ctx, func(tx store.Tx) error {
				for i := range 8 {
					at := old.Add(time.Duration(i) * time.Hour)
					if i >= 5 {
						at = now.Add(-time.Duration(8-i) * time.Minute)
					}
					typ := []audit.Type{audit.AuthzDecided, audit.LoginFailed, audit.GrantRevoked}[i%3]
					if _, err := tx.AppendAudit(ctx, audit.Event{Type: typ, At: at, Reason: "r", Resource: "x"}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, errOut, code := tool(t, env, "audit", "purge"); code != 2 || !strings.Contains(errOut, "--before") {
				t.Fatalf("purge without --before: exit %d %q", code, errOut)
			}
			// Before the oldest event: nothing goes.
			out, errOut, code := tool(t, env, "audit", "purge", "--before", old.Add(-time.Hour).Format(time.RFC3339))
			if code != 0 || !strings.Contains(out, "nothing to purge") {
				t.Fatalf("purge before everything: exit %d\n%s%s", code, out, errOut)
			}
			out, errOut, code = tool(t, env, "audit", "purge", "--before", now.Format(time.RFC3339))
			if code != 0 || !strings.Contains(out, "purged 5 events through seq 5") || !strings.Contains(out, "audit chain intact") {
				t.Fatalf("purge: exit %d\n%s%s", code, out, errOut)
			}
			var left []audit.Event
			if err := st.ScanAudit(ctx, 0, func(e audit.Event) error { left = append(left, e); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(left) != 4 || left[0].Seq != 6 || left[3].Type != audit.AuditPurged {
				t.Fatalf("left %d events: %+v", len(left), left)
			}
			if out, _, code := tool(t, env, "audit", "verify"); code != 0 {
				t.Fatalf("audit verify after purge: %s", out)
			}
			// The recent events are inside retention whatever --before says.
			out, _, code = tool(t, env, "audit", "purge", "--before", now.Add(time.Hour).Format(time.RFC3339))
			if code != 0 || !strings.Contains(out, "nothing to purge") {
				t.Fatalf("second purge: exit %d %s", code, out)
			}
		})
	}
}
