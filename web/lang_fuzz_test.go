package web

import (
	"slices"
	"testing"
)

// FuzzLanguage: any Accept-Language header and language cookie choose one
// of the catalogs' languages.
func FuzzLanguage(f *testing.F) {
	for _, s := range []string{"", "ja", "en-US,en;q=0.9", "fr;q=2", "*", "en;q=0.0001,ja;q=0.5", "x-" + string(rune(0)), "zh-Hant-TW"} {
		f.Add(s, "en")
	}
	c, err := loadCatalogs()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, accept, chosen string) {
		if got := c.match(chosen, accept); !slices.Contains(Languages, got) {
			t.Errorf("match(%q, %q) = %v", chosen, accept, got)
		}
	})
}
