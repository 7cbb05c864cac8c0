package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/roles"
)

// problem is an RFC 9457 problem document with the contract's code.
type problem struct {
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Status      int             `json:"status"`
	Detail      string          `json:"detail,omitempty"`
	Code        string          `json:"code"`
	Errors      []fieldError    `json:"errors,omitempty"`
	Violations  []string        `json:"violations,omitempty"`
	LockedUntil json.RawMessage `json:"locked_until,omitempty"`
	RequestID   string          `json:"request_id,omitempty"`

	retryAfter time.Duration
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Stable problem codes of the contract.
const (
	codeValidation         = "validation_failed"
	codeUnauthenticated    = "unauthenticated"
	codeForbidden          = "forbidden"
	codeSelfGrant          = "self_grant"
	codeNotFound           = "not_found"
	codeConflict           = "conflict"
	codeSoD                = "sod_conflict"
	codePasswordChange     = "password_change_required"
	codeTooLarge           = "request_too_large"
	codeMethod             = "method_not_allowed"
	codeUnavailable        = "unavailable"
	codeInternal           = "internal"
	codeInvalidCredentials = "invalid_credentials"
)

// mapping is one row of the error table: errors matching target become
// this status and code. The first matching row wins.
type mapping struct {
	target error
	status int
	code   string
	title  string
}

// errorTable is the one place where domain errors become HTTP answers
// (house style 8).
var errorTable = []mapping{
	{errValidation, 400, codeValidation, "The request is not valid"},
	{authn.ErrInvalidCredentials, 401, codeInvalidCredentials, "Login failed"},
	{authn.ErrTerminalNotAllowed, 403, "terminal_not_allowed", "This terminal may not be used for this login"},
	{authn.ErrLoginSuspended, 503, "login_suspended", "Logins are suspended"},
	{authn.ErrPasswordChangeFirst, 403, codePasswordChange, "The password must be changed first"},
	{authn.ErrBusy, 429, "rate_limited", "Too many login attempts at once"},
	{authn.ErrStopConflict, 409, codeConflict, "Conflict"},
	{errForbiddenHere, 403, codeForbidden, "Not allowed"},
	{lifecycle.ErrValidation, 400, codeValidation, "The request is not valid"},
	{authz.ErrValidation, 400, codeValidation, "The request is not valid"},
	{roles.ErrInvalid, 400, codeValidation, "The request is not valid"},
	{policy.ErrInvalid, 400, codeValidation, "The policy is not valid"},
	{errUnauthenticated, 401, codeUnauthenticated, "Authentication required"},
	{authn.ErrUnauthenticated, 401, codeUnauthenticated, "Authentication required"},
	{errPasswordChange, 403, codePasswordChange, "The password must be changed first"},
	{authz.ErrSelfGrant, 403, codeSelfGrant, "Nobody grants, approves or reviews for themselves"},
	{authz.ErrForbidden, 403, codeForbidden, "Not allowed"},
	{lifecycle.ErrForbidden, 403, codeForbidden, "Not allowed"},
	{errNotFound, 404, codeNotFound, "Not found"},
	{lifecycle.ErrNotFound, 404, codeNotFound, "Not found"},
	{authz.ErrNotFound, 404, codeNotFound, "Not found"},
	{errMethod, 405, codeMethod, "Method not allowed"},
	{authz.ErrSoDConflict, 409, codeSoD, "Separation of duties forbids this grant"},
	{lifecycle.ErrConflict, 409, codeConflict, "Conflict"},
	{lifecycle.ErrInvalidState, 409, codeConflict, "Conflict"},
	{authz.ErrConflict, 409, codeConflict, "Conflict"},
	{authz.ErrInvalidTarget, 409, codeConflict, "Conflict"},
	{opgate.ErrConflict, 409, codeConflict, "Conflict"},
	{opgate.ErrNotFound, 404, codeNotFound, "Not found"},
	{errTooLarge, 413, codeTooLarge, "Request body too large"},
	{review.ErrValidation, 400, codeValidation, "The request is not valid"},
	{report.ErrValidation, 400, codeValidation, "The request is not valid"},
	{report.ErrForbidden, 403, codeForbidden, "Not allowed"},
	{review.ErrNotFound, 404, codeNotFound, "Not found"},
	{review.ErrConflict, 409, codeConflict, "Conflict"},
	{authn.ErrUnavailable, 503, codeUnavailable, "Temporarily unavailable"},
	{opgate.ErrUnavailable, 503, codeUnavailable, "Temporarily unavailable"},
}

// Errors of the HTTP layer itself.
var (
	errValidation      = errors.New("httpapi: invalid request")
	errUnauthenticated = errors.New("httpapi: unauthenticated")
	errPasswordChange  = errors.New("httpapi: password change required")
	errNotFound        = errors.New("httpapi: not found")
	errMethod          = errors.New("httpapi: method not allowed")
	errTooLarge        = errors.New("httpapi: request body too large")
	errForbiddenHere   = errors.New("httpapi: forbidden")
)

// badRequest is a validation failure with its fields.
type badRequest struct{ fields []fieldError }

func (e *badRequest) Error() string { return "httpapi: invalid request" }
func (e *badRequest) Unwrap() error { return errValidation }

func invalid(field, msg string) error { return &badRequest{fields: []fieldError{{field, msg}}} }

// toProblem turns any error into the problem to send. Details come only
// from errors whose text we wrote for people; an unmapped error is a 500
// that tells nothing but the request ID.
func toProblem(err error) problem {
	if le, ok := errors.AsType[*authn.LockedError](err); ok {
		p := problem{Type: "about:blank", Title: "The account is locked", Status: 423, Code: "account_locked", LockedUntil: json.RawMessage("null")}
		if !le.Until.IsZero() {
			p.LockedUntil, _ = json.Marshal(le.Until.UTC().Format(time.RFC3339))
			p.Detail = "locked until " + le.Until.UTC().Format(time.RFC3339)
		} else {
			p.Detail = "locked until a section chief unlocks it"
		}
		return p
	}
	if re, ok := errors.AsType[*authn.RateLimitedError](err); ok {
		return problem{Type: "about:blank", Title: "Too many failed logins from here", Status: 429, Code: "rate_limited", retryAfter: re.RetryAfter}
	}
	if errors.Is(err, authn.ErrBusy) {
		return problem{Type: "about:blank", Title: "Too many login attempts at once", Status: 429, Code: "rate_limited", retryAfter: time.Second}
	}
	if pv, ok := errors.AsType[*authn.PolicyViolationError](err); ok {
		p := problem{Type: "about:blank", Title: "The new password breaks the policy", Status: 422, Code: "password_policy", Violations: []string{}}
		for _, v := range pv.Violations {
			p.Violations = append(p.Violations, string(v))
		}
		return p
	}
	for _, m := range errorTable {
		if errors.Is(err, m.target) {
			p := problem{Type: "about:blank", Title: m.title, Status: m.status, Code: m.code}
			if m.status < 500 {
				p.Detail = detail(err)
			}
			p.Errors = fieldsOf(err)
			return p
		}
	}
	return problem{Type: "about:blank", Title: "Internal error", Status: 500, Code: codeInternal}
}

func detail(err error) string {
	switch {
	case errors.Is(err, errUnauthenticated), errors.Is(err, authn.ErrUnauthenticated), errors.Is(err, authn.ErrInvalidCredentials):
		return "" // never say why a token or a login was refused
	case errors.Is(err, authz.ErrForbidden), errors.Is(err, lifecycle.ErrForbidden), errors.Is(err, report.ErrForbidden):
		// Why a target is refused (another site, no such target) is what
		// a caller without the permission must not learn (API.md,
		// Conventions).
		return ""
	}
	return err.Error()
}

func fieldsOf(err error) []fieldError {
	var out []fieldError
	if br, ok := errors.AsType[*badRequest](err); ok {
		out = append(out, br.fields...)
	}
	if ve, ok := errors.AsType[*lifecycle.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	if ve, ok := errors.AsType[*authz.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	if ve, ok := errors.AsType[*roles.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	if ve, ok := errors.AsType[*review.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	if ve, ok := errors.AsType[*report.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	if ve, ok := errors.AsType[*policy.ValidationError](err); ok {
		for _, f := range ve.Fields {
			out = append(out, fieldError{f.Field, f.Message})
		}
	}
	return out
}

// writeProblem sends p. A 5xx is logged with the error; the body never
// carries it.
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := toProblem(err)
	p.RequestID = requestID(r.Context())
	if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", slog.String("error", err.Error()), slog.Int("status", p.Status))
	}
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((p.retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
