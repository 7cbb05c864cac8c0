package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"
)

// result is one answer of the API.
type result struct {
	Status  int
	Header  http.Header
	Body    []byte
	Problem *problem
}

// problem is the API's RFC 9457 answer, with the fields the pages show.
type problem struct {
	Status      int     `json:"status"`
	Code        string  `json:"code"`
	Title       string  `json:"title"`
	Detail      string  `json:"detail"`
	LockedUntil *string `json:"locked_until"`
	Violations  []string
	Errors      []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
	RetryAfter string `json:"-"`
}

func (r result) ok() bool { return r.Status >= 200 && r.Status < 300 }

func (r result) decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("web: API answer: %w", err)
	}
	return nil
}

// err is the refusal as an error the pages render with its message.
func (r result) err() error {
	if r.Problem != nil {
		return r.Problem
	}
	return fmt.Errorf("web: API answered %d", r.Status)
}

func (p *problem) Error() string { return "web: API refused: " + p.Code }

// call serves one API request in-process, as the browser's session: the
// access token from the cookie goes in the Authorization header, and the
// client's address and TLS state (a terminal's certificate) are the
// browser's own, so the API judges exactly what it would judge over HTTP.
func (p *page) call(method, path string, body any) result {
	req, err := p.request(method, path, body)
	if err != nil {
		return result{Status: 500}
	}
	rec := httptest.NewRecorder()
	p.w.cfg.API.ServeHTTP(rec, req)
	return resultOf(rec.Code, rec.Header(), rec.Body.Bytes())
}

// request is the API request of call.
func (p *page) request(method, path string, body any) (*http.Request, error) {
	var rd io.Reader = http.NoBody // as a server's request: never a nil body
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(p.r.Context(), method, path, rd)
	if err != nil {
		return nil, err
	}
	req.RemoteAddr, req.TLS, req.Host = p.r.RemoteAddr, p.r.TLS, p.r.Host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	if id := p.rw.Header().Get("X-Request-ID"); id != "" {
		req.Header.Set("X-Request-ID", id)
	}
	return req, nil
}

// resultOf reads an answer of the API, its problem when it refused.
func resultOf(status int, h http.Header, body []byte) result {
	res := result{Status: status, Header: h, Body: body}
	if !res.ok() {
		pr := &problem{Status: status}
		_ = json.Unmarshal(body, pr)
		var v struct {
			Violations []string `json:"violations"`
		}
		_ = json.Unmarshal(body, &v)
		pr.Violations, pr.RetryAfter = v.Violations, h.Get("Retry-After")
		if pr.Code == "" {
			pr.Code = "unavailable"
		}
		res.Problem = pr
	}
	return res
}

// relay passes a successful API answer straight to the browser as a file,
// as it is written: a report streams from the database cursor to the
// browser without being held whole. Any other answer is kept, to be shown
// as a page.
type relay struct {
	dst      http.ResponseWriter
	filename string
	h        http.Header
	status   int
	refused  bytes.Buffer
}

func (r *relay) ok() bool            { return r.status >= 200 && r.status < 300 }
func (r *relay) Header() http.Header { return r.h }

func (r *relay) WriteHeader(code int) {
	if r.status != 0 {
		return
	}
	r.status = code
	if r.ok() {
		d := r.dst.Header()
		d.Set("Content-Type", r.h.Get("Content-Type"))
		d.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", r.filename))
		r.dst.WriteHeader(code)
	}
}

func (r *relay) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.ok() {
		return r.dst.Write(b)
	}
	return r.refused.Write(b)
}

func (r *relay) Flush() {
	if f, ok := r.dst.(http.Flusher); ok && r.ok() {
		f.Flush()
	}
}

// download relays a report file the API writes.
func (p *page) download(path, filename string) error {
	req, err := p.request("GET", path, nil)
	if err != nil {
		return err
	}
	rl := &relay{dst: p.rw, filename: filename, h: http.Header{}}
	p.w.cfg.API.ServeHTTP(rl, req)
	if rl.status == 0 || rl.ok() {
		return nil
	}
	return resultOf(rl.status, rl.h, rl.refused.Bytes()).err()
}

// message turns a refusal into the catalog's words for it: the code's
// message, with the lock's end, the password rules broken and the fields
// named.
func (p *page) message(err error) string {
	pr, ok := errors.AsType[*problem](err)
	if !ok {
		return p.T("err.internal")
	}
	switch pr.Code {
	case "account_locked":
		if pr.LockedUntil == nil {
			return p.T("err.account_locked_permanent")
		}
		if t, err := time.Parse(time.RFC3339, *pr.LockedUntil); err == nil {
			return p.T("err.account_locked", p.localTime(t))
		}
	case "password_policy":
		var parts []string
		for _, v := range pr.Violations {
			parts = append(parts, p.T("violation."+v))
		}
		return p.T("err.password_policy") + " " + strings.Join(parts, p.T("list.sep"))
	case "validation_failed":
		var fields []string
		for _, e := range pr.Errors {
			fields = append(fields, e.Field)
		}
		if len(fields) > 0 {
			return p.T("err.validation_failed") + " (" + strings.Join(fields, ", ") + ")"
		}
	case "rate_limited":
		return p.T("err.rate_limited", pr.RetryAfter)
	}
	if p.w.cat.has(p.lang, "err."+pr.Code) {
		return p.T("err." + pr.Code)
	}
	return p.T("err.unknown", pr.Status)
}

// localTime shows a time in the server's zone (a municipality's terminals
// share one), to the minute.
func (p *page) localTime(t time.Time) string {
	return t.In(time.Local).Format("2006-01-02 15:04 MST")
}
