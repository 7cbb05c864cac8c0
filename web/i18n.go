package web

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"golang.org/x/text/message/catalog"
)

//go:embed catalog/*.json
var catalogFS embed.FS

// Languages are the catalogs' languages, the default first (R6.3:
// Japanese first, English second).
var Languages = []language.Tag{language.Japanese, language.English}

// catalogs hold every text of the pages, one JSON file per language whose
// values are golang.org/x/text/message formats.
type catalogs struct {
	b       *catalog.Builder
	keys    map[language.Tag]map[string]bool
	matcher language.Matcher
}

func loadCatalogs() (*catalogs, error) {
	c := &catalogs{b: catalog.NewBuilder(catalog.Fallback(Languages[0])), keys: map[language.Tag]map[string]bool{},
		matcher: language.NewMatcher(Languages)}
	for _, tag := range Languages {
		msgs, err := readCatalog(tag)
		if err != nil {
			return nil, err
		}
		c.keys[tag] = map[string]bool{}
		for k, v := range msgs {
			if err := c.b.SetString(tag, k, v); err != nil {
				return nil, fmt.Errorf("web: catalog %s: %s: %w", tag, k, err)
			}
			c.keys[tag][k] = true
		}
	}
	return c, nil
}

func readCatalog(tag language.Tag) (map[string]string, error) {
	b, err := fs.ReadFile(catalogFS, "catalog/"+tag.String()+".json")
	if err != nil {
		return nil, fmt.Errorf("web: catalog %s: %w", tag, err)
	}
	var msgs map[string]string
	if err := json.Unmarshal(b, &msgs); err != nil {
		return nil, fmt.Errorf("web: catalog %s: %w", tag, err)
	}
	return msgs, nil
}

// match picks the language: the switch's cookie first, then the browser's
// preference, else Japanese.
func (c *catalogs) match(chosen, accept string) language.Tag {
	for _, tag := range Languages {
		if chosen == tag.String() {
			return tag
		}
	}
	prefs, _, err := language.ParseAcceptLanguage(accept)
	if err != nil || len(prefs) == 0 {
		return Languages[0]
	}
	_, i, conf := c.matcher.Match(prefs...)
	if conf == language.No {
		return Languages[0]
	}
	return Languages[i]
}

func (c *catalogs) printer(tag language.Tag) *message.Printer {
	return message.NewPrinter(tag, message.Catalog(c.b))
}

func (c *catalogs) has(tag language.Tag, key string) bool { return c.keys[tag][key] }

// Keys lists a language's keys, sorted (for the completeness test).
func (c *catalogs) list(tag language.Tag) []string {
	var out []string
	for k := range c.keys[tag] {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// T is a text of the catalog in the page's language.
func (p *page) T(key string, args ...any) string {
	if !p.w.cat.has(p.lang, key) {
		p.w.log.Warn("web: missing catalog key", "key", key, "lang", p.lang.String())
	}
	return p.pr.Sprintf(key, args...)
}

// Lang is the page's language for <html lang>.
func (p *page) Lang() string { return p.lang.String() }
