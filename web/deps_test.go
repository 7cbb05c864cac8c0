package web_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestPagesOnlyTalkToTheAPI: the pages reach the domain only through the
// HTTP API, so that no rule or permission check can be bypassed or written
// twice here.
func TestPagesOnlyTalkToTheAPI(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "github.com/opgate/opgate/web").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var p struct{ Imports []string }
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if strings.HasPrefix(imp, "github.com/opgate/opgate") && imp != "github.com/opgate/opgate/internal/clock" {
			t.Errorf("web imports %s", imp)
		}
	}
}
