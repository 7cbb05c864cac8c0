package web

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template/parse"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// TestCatalogComplete: every key is in both languages, and every key the
// templates and the code name exists.
func TestCatalogComplete(t *testing.T) {
	c, err := loadCatalogs()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(c.list(Languages[0]), c.list(Languages[1])); d != "" {
		t.Errorf("keys of ja (-) and en (+) differ:\n%s", d)
	}
	used := map[string]bool{}
	perms := map[string]bool{} // permission names look like keys
	for _, p := range consolePages() {
		for _, x := range p.perms {
			perms[x] = true
		}
	}
	key := regexp.MustCompile(`(?:\.T|T\()\s*\(?"([a-z_]+(?:\.[a-z_]+)+)"|"((?:nav|report|login|password|terminal|action|err|status|enrollcode|temppw|policy|csrf|error)\.[a-z_.]+)"`)
	files, _ := filepath.Glob("*.go")
	tmpls, _ := filepath.Glob("templates/*.html")
	for _, f := range append(files, tmpls...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range key.FindAllStringSubmatch(string(b), -1) {
			k := m[1] + m[2]
			if !strings.HasSuffix(k, ".") && !perms[k] {
				used[k] = true
			}
		}
	}
	// Keys built from API values: every value the contract names.
	for prefix, values := range map[string][]string{
		"status.":    statuses,
		"emp.":       employmentTypes,
		"grant.":     {"active", "pending_approval", "revoked", "expired"},
		"card.":      {"active", "lost", "stolen", "collected", "revoked"},
		"decision.":  {"keep", "revoke"},
		"violation.": {"too_short", "needs_digit", "needs_letter", "denylisted", "reused", "same_as_operator_id", "too_long"},
		"err.": {"validation_failed", "unauthenticated", "invalid_credentials", "password_change_required", "forbidden", "self_grant",
			"terminal_not_allowed", "login_suspended", "not_found", "conflict", "sod_conflict", "password_policy", "account_locked", "rate_limited"},
	} {
		for _, v := range values {
			used[prefix+v] = true
		}
	}
	for _, p := range consolePages() {
		if p.nav != "" {
			used[p.nav] = true
		}
	}
	for k := range used {
		for _, tag := range Languages {
			if !c.has(tag, k) {
				t.Errorf("%s: no %q", tag, k)
			}
		}
	}
	if len(used) < 100 {
		t.Errorf("only %d keys found in use: the scan is broken", len(used))
	}
}

// TestNoTextInTemplates: templates hold markup only; every word a person
// reads comes from the catalogs (R6.3). Text outside tags may hold
// punctuation and symbols, never letters, and so may the attributes that
// are read aloud or shown.
func TestNoTextInTemplates(t *testing.T) {
	tags := regexp.MustCompile(`<[^>]*>`)
	shown := regexp.MustCompile(`\s(?:aria-label|title|placeholder|alt)="([^"]*)"`)
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		b, _ := fs.ReadFile(templateFS, n)
		builtins := map[string]any{}
		for _, f := range []string{"and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or", "print", "printf", "println", "slice", "urlquery"} {
			builtins[f] = struct{}{}
		}
		trees, err := parse.Parse(n, string(b), "{{", "}}", builtins)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		for _, tree := range trees {
			// The template's markup with every action as a placeholder, so
			// that a tag split by actions is still one tag.
			var sb strings.Builder
			walk(tree.Root, &sb)
			text := sb.String()
			for _, m := range shown.FindAllStringSubmatch(text, -1) {
				if hasLetter(m[1]) {
					t.Errorf("%s: literal attribute text %q", n, m[0])
				}
			}
			for _, piece := range strings.Split(tags.ReplaceAllString(text, "\x00"), "\x00") {
				if hasLetter(piece) {
					t.Errorf("%s: literal text %q", n, strings.TrimSpace(piece))
				}
			}
		}
	}
}

func hasLetter(s string) bool { return strings.IndexFunc(s, unicode.IsLetter) >= 0 }

func walk(n parse.Node, sb *strings.Builder) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return
		}
		for _, c := range x.Nodes {
			walk(c, sb)
		}
	case *parse.TextNode:
		sb.Write(x.Text)
	case *parse.IfNode:
		walk(x.List, sb)
		walk(x.ElseList, sb)
	case *parse.RangeNode:
		walk(x.List, sb)
		walk(x.ElseList, sb)
	case *parse.WithNode:
		walk(x.List, sb)
		walk(x.ElseList, sb)
	default:
		sb.WriteString("{}")
	}
}
