package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// parseTemplates parses each page with the layout.
func parseTemplates() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", base, err)
		}
		out[base] = t
	}
	return out, nil
}

// view is what a template sees: the page (its texts, language, CSRF
// token, operator and permissions), the title and the page's data.
type view struct {
	*page
	Title  string
	Data   any
	Nav    []navLink
	Notice string
	Error  string
}

type navLink struct {
	Path, Label string
	Current     bool
}

// render writes a page. titleKey names the title in the catalog.
func (p *page) render(name, titleKey string, data any) {
	p.renderWith(name, titleKey, data, "", "")
}

func (p *page) renderWith(name, titleKey string, data any, notice, errMsg string) {
	t, ok := p.w.pages[name]
	if !ok {
		p.w.log.Error("web: no template", "name", name)
		http.Error(p.rw, "internal error", http.StatusInternalServerError)
		return
	}
	v := view{page: p, Title: p.T(titleKey), Data: data, Notice: notice, Error: errMsg}
	if p.me != nil && !p.me.Session.PasswordChangeRequired {
		v.Nav = p.nav()
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		p.w.log.Error("web: render", "name", name, "error", err.Error())
		http.Error(p.rw, "internal error", http.StatusInternalServerError)
		return
	}
	p.rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(p.rw)
}

// nav lists the console pages the operator may use.
func (p *page) nav() []navLink {
	var out []navLink
	for _, cp := range p.w.table {
		if cp.nav == "" || (len(cp.perms) > 0 && !p.Holds(cp.perms...)) {
			continue
		}
		out = append(out, navLink{Path: cp.path, Label: p.T(cp.nav), Current: p.r.URL.Path == cp.path})
	}
	return out
}

// Tiles are the menu's pages besides the menu itself.
func (v view) Tiles() []navLink {
	var out []navLink
	for _, l := range v.Nav {
		if l.Path != "/console" {
			out = append(out, l)
		}
	}
	return out
}

// fail shows a refusal of the API in the page's words, or a plain error
// page for anything else (its details go to the log only).
func (p *page) fail(err error) {
	status := http.StatusInternalServerError
	if pr, ok := errors.AsType[*problem](err); ok {
		status = pr.Status
	} else {
		p.w.log.ErrorContext(p.r.Context(), "web: page", "path", p.r.URL.Path, "error", err.Error())
	}
	p.rw.WriteHeader(status)
	p.render("error", "error.title", map[string]any{"Message": p.message(err)})
}

// Time shows an API time (RFC 3339, as a string or a nullable one) in
// local time; empty for none.
func (p *page) Time(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case *string:
		if x != nil {
			s = *x
		}
	}
	if s == "" {
		return ""
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return p.localTime(t)
}

// Enum shows a value of the API by its catalog text (prefix + value), or
// as it is when the catalog has none.
func (p *page) Enum(prefix, value string) string {
	if p.w.cat.has(p.lang, prefix+value) {
		return p.T(prefix + value)
	}
	return value
}

// Text shows a nullable API string.
func (p *page) Text(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// redirect answers a form with a 303 to the page showing its result.
func (p *page) redirect(to string) error {
	http.Redirect(p.rw, p.r, to, http.StatusSeeOther)
	return nil
}

// CSRF is the form token of the page.
func (p *page) CSRF() string { return p.csrf }

// Me is the signed-in operator and session, nil before login.
func (p *page) Me() *me { return p.me }

// IdleSeconds is when the page locks the screen: the policy's idle
// timeout counted from this request, the session's last activity.
func (p *page) IdleSeconds() int64 {
	if p.me == nil {
		return 0
	}
	return p.me.Session.IdleTimeoutS
}

// Path is the page's own address, for forms that come back to it.
func (p *page) Path() string {
	if p.r.Method != http.MethodGet {
		return "/console"
	}
	return p.r.URL.RequestURI()
}
