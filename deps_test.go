package opgate_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraph holds the architecture: domain packages know neither
// HTTP, SQL nor Redis, and reach stores and ephemeral state only through
// interfaces they declare (DESIGN.md, house style 12). Direct imports are
// checked against the standard library's HTTP too; transitive ones only
// against the drivers and our own edges, since go-webauthn itself imports
// net/http for its metadata fetcher, which authn does not use.
func TestImportGraph(t *testing.T) {
	const mod = "github.com/opgate/opgate"
	drivers := []string{"github.com/jackc/pgx", "github.com/redis/go-redis", "modernc.org/sqlite", "github.com/pressly/goose"}
	ours := []string{mod + "/store", mod + "/ephemeral", mod + "/httpapi", mod + "/internal/server", mod + "/cmd"}
	for _, pkg := range []string{"", "/audit", "/policy", "/roles", "/lifecycle", "/authz", "/authn", "/internal/clock", "/review", "/report"} {
		t.Run(strings.TrimPrefix(pkg, "/"), func(t *testing.T) {
			out, err := exec.Command("go", "list", "-json", mod+pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			var p struct {
				Imports []string
				Deps    []string
			}
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatal(err)
			}
			for _, imp := range p.Imports {
				if imp == "net/http" || imp == "database/sql" {
					t.Errorf("%s imports %s", mod+pkg, imp)
				}
			}
			for _, dep := range p.Deps {
				for _, bad := range append(drivers, ours...) {
					if dep == bad || strings.HasPrefix(dep, bad+"/") {
						t.Errorf("%s depends on %s", mod+pkg, dep)
					}
				}
			}
		})
	}
}
