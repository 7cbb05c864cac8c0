// Package policy owns the security policy document: its fields, their safe
// defaults, validation, and its one JSON encoding (the API body and the
// stored form are the same document, so the encoding lives here rather than
// being written twice). Each saved change gets a new version; who changed it
// and why is the audit event's business.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/opgate/opgate/internal/jsonstrict"
)

// Login methods a site may require.
const (
	MethodCard         = "card"
	MethodCardPassword = "card+password"
	MethodPassword     = "password"
)

// Policy is the whole document. Durations are time.Duration here and whole
// seconds on the wire.
type Policy struct {
	Version      int64
	LoginMethods []string
	// PasswordOperators, when not empty, are the only operators who may
	// log in with the "password" method alone; everybody else needs their
	// card. A demonstration or a transition to cards names a few people
	// here rather than opening password logins to everyone.
	PasswordOperators         []string
	Lockout                   Lockout
	Password                  Password
	Session                   Session
	Cards                     Cards
	DormantAfter              time.Duration
	RestrictedPurposeRequired bool
	Retention                 Retention
	OfficeHours               OfficeHours
}

// Retention is how long each kind of history is kept before
// `opgate audit purge` may remove it (R4.3, CL 19-2; PIA: 7 years).
type Retention struct {
	Decisions time.Duration // authz.decided: the decision log
	Logins    time.Duration // login.*, account.locked, session.ended
	Other     time.Duration // every other event: rights, changes, policy
}

// OfficeHours are when logins are expected; logins outside them are
// reported as anomalies (R3.7). Minutes are counted from local midnight,
// local being UTC plus UTCOffset.
type OfficeHours struct {
	Start, End int // minutes after midnight, Start < End
	Weekdays   []time.Weekday
	UTCOffset  time.Duration
}

// Within reports whether t falls inside office hours.
func (h OfficeHours) Within(t time.Time) bool {
	l := t.UTC().Add(h.UTCOffset)
	if !slices.Contains(h.Weekdays, l.Weekday()) {
		return false
	}
	m := l.Hour()*60 + l.Minute()
	return m >= h.Start && m < h.End
}

// Retention7Years is the PIA's retention of provision records.
const Retention7Years = 7 * 365 * 24 * time.Hour

// Lockout is R2.4: consecutive failures per operator, locks, escalation,
// and the per-terminal spraying counter.
type Lockout struct {
	Threshold              int
	Window                 time.Duration
	Duration               time.Duration
	PermanentAfter         int
	SprayDistinctOperators int
	SprayWindow            time.Duration
}

// Password is R2.3.
type Password struct {
	MinLength     int
	RequireLetter bool
	RequireDigit  bool
	MaxAge        time.Duration
	History       int
	Denylist      bool
}

// Session is R2.8.
type Session struct {
	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration
	AccessTokenTTL  time.Duration
}

// Cards restricts which authenticators may be enrolled.
type Cards struct {
	AllowedAAGUIDs      []string
	AllowBackupEligible bool
}

// Default is the policy in force before anyone changes it: the contract's
// values, which follow the checklist (CL 11, 12, 17) and OWASP.
func Default() Policy {
	return Policy{
		Version:           0,
		LoginMethods:      []string{MethodCard},
		PasswordOperators: []string{},
		Lockout: Lockout{Threshold: 5, Window: 900 * time.Second, Duration: 1800 * time.Second, PermanentAfter: 3,
			SprayDistinctOperators: 20, SprayWindow: 600 * time.Second},
		Password:                  Password{MinLength: 10, RequireLetter: true, RequireDigit: true, MaxAge: 7776000 * time.Second, History: 5, Denylist: true},
		Session:                   Session{IdleTimeout: 600 * time.Second, AbsoluteTimeout: 32400 * time.Second, AccessTokenTTL: 300 * time.Second},
		Cards:                     Cards{AllowedAAGUIDs: []string{}},
		DormantAfter:              7776000 * time.Second,
		RestrictedPurposeRequired: true,
		Retention:                 Retention{Decisions: Retention7Years, Logins: Retention7Years, Other: Retention7Years},
		OfficeHours: OfficeHours{Start: 8*60 + 30, End: 17*60 + 15, UTCOffset: 9 * time.Hour,
			Weekdays: []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}},
	}
}

// FieldError names one invalid field by its JSON path.
type FieldError struct{ Field, Message string }

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("policy: invalid")

// ValidationError lists every problem at once.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string { return fmt.Sprintf("policy: invalid: %v", e.Fields) }
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Validate checks every field. Minimums for durations are one second so
// that tests can use short ones; maximums keep a typo from disabling a
// control (a lockout window of a year, a session of a month).
func (p Policy) Validate() error {
	var fe []FieldError
	bad := func(f, m string) { fe = append(fe, FieldError{f, m}) }
	if len(p.LoginMethods) == 0 {
		bad("login_methods", "at least one method")
	}
	for _, m := range p.LoginMethods {
		if m != MethodCard && m != MethodCardPassword && m != MethodPassword {
			bad("login_methods", fmt.Sprintf("unknown method %q", m))
		}
	}
	intRange := func(f string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(f, fmt.Sprintf("must be between %d and %d", lo, hi))
		}
	}
	durRange := func(f string, v, lo, hi time.Duration) {
		if v < lo || v > hi || v%time.Second != 0 {
			bad(f, fmt.Sprintf("must be whole seconds between %d and %d", int64(lo/time.Second), int64(hi/time.Second)))
		}
	}
	const day = 24 * time.Hour
	l := p.Lockout
	intRange("lockout.threshold", l.Threshold, 1, 100)
	durRange("lockout.window_s", l.Window, time.Second, 30*day)
	durRange("lockout.duration_s", l.Duration, time.Second, 30*day)
	intRange("lockout.permanent_after", l.PermanentAfter, 0, 100)
	intRange("lockout.spray_distinct_operators", l.SprayDistinctOperators, 2, 10000)
	durRange("lockout.spray_window_s", l.SprayWindow, time.Second, day)
	pw := p.Password
	intRange("password.min_length", pw.MinLength, 8, 128)
	durRange("password.max_age_s", pw.MaxAge, time.Second, 3650*day)
	intRange("password.history", pw.History, 0, 24)
	s := p.Session
	durRange("session.idle_timeout_s", s.IdleTimeout, time.Second, day)
	durRange("session.absolute_timeout_s", s.AbsoluteTimeout, time.Second, 7*day)
	durRange("session.access_token_ttl_s", s.AccessTokenTTL, time.Second, day)
	if s.AccessTokenTTL > s.AbsoluteTimeout {
		bad("session.access_token_ttl_s", "must not exceed absolute_timeout_s")
	}
	if s.IdleTimeout > s.AbsoluteTimeout {
		bad("session.idle_timeout_s", "must not exceed absolute_timeout_s")
	}
	if len(p.PasswordOperators) > 1000 {
		bad("password_operators", "at most 1000 operators")
	}
	for _, op := range p.PasswordOperators {
		if !operatorIDPattern(op) {
			bad("password_operators", fmt.Sprintf("%q is not an operator ID (upper-case letters, digits and dashes, at most 64)", op))
			break
		}
	}
	for _, a := range p.Cards.AllowedAAGUIDs {
		if !aaguidPattern(a) {
			bad("cards.allowed_aaguids", fmt.Sprintf("%q is not an AAGUID (8-4-4-4-12 hex)", a))
		}
	}
	durRange("dormant_after_s", p.DormantAfter, time.Second, 3650*day)
	durRange("retention_s.decisions", p.Retention.Decisions, time.Second, 36500*day)
	durRange("retention_s.logins", p.Retention.Logins, time.Second, 36500*day)
	durRange("retention_s.other", p.Retention.Other, time.Second, 36500*day)
	oh := p.OfficeHours
	if oh.Start < 0 || oh.End > 24*60 || oh.Start >= oh.End {
		bad("office_hours", "start must be before end, both HH:MM within a day")
	}
	for _, d := range oh.Weekdays {
		if d < time.Sunday || d > time.Saturday {
			bad("office_hours.weekdays", "days are 0 (Sunday) to 6 (Saturday)")
		}
	}
	durRange("office_hours.utc_offset_s", oh.UTCOffset.Abs(), 0, 14*time.Hour)
	if fe != nil {
		return &ValidationError{Fields: fe}
	}
	return nil
}

// operatorIDPattern accepts what operator IDs are made of (OP-7Q2K9X4M),
// as a login normalises them: nothing else can ever match a login, and
// text such as a NUL would only be refused later, by the database.
func operatorIDPattern(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func aaguidPattern(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// Allows reports whether the policy admits a login method.
func (p Policy) Allows(method string) bool { return slices.Contains(p.LoginMethods, method) }

// AllowsPasswordLogin reports whether op may log in with a password alone.
func (p Policy) AllowsPasswordLogin(op string) bool {
	return p.Allows(MethodPassword) && (len(p.PasswordOperators) == 0 || slices.Contains(p.PasswordOperators, op))
}

type doc struct {
	Version           int64    `json:"version"`
	LoginMethods      []string `json:"login_methods"`
	PasswordOperators []string `json:"password_operators,omitempty"` // omitted when empty: the contract's default document stays as API.md shows it
	Lockout           struct {
		Threshold              int   `json:"threshold"`
		WindowS                int64 `json:"window_s"`
		DurationS              int64 `json:"duration_s"`
		PermanentAfter         int   `json:"permanent_after"`
		SprayDistinctOperators int   `json:"spray_distinct_operators"`
		SprayWindowS           int64 `json:"spray_window_s"`
	} `json:"lockout"`
	Password struct {
		MinLength     int   `json:"min_length"`
		RequireLetter bool  `json:"require_letter"`
		RequireDigit  bool  `json:"require_digit"`
		MaxAgeS       int64 `json:"max_age_s"`
		History       int   `json:"history"`
		Denylist      bool  `json:"denylist"`
	} `json:"password"`
	Session struct {
		IdleTimeoutS     int64 `json:"idle_timeout_s"`
		AbsoluteTimeoutS int64 `json:"absolute_timeout_s"`
		AccessTokenTTLS  int64 `json:"access_token_ttl_s"`
	} `json:"session"`
	Cards struct {
		AllowedAAGUIDs      []string `json:"allowed_aaguids"`
		AllowBackupEligible bool     `json:"allow_backup_eligible"`
	} `json:"cards"`
	DormantAfterS             int64 `json:"dormant_after_s"`
	RestrictedPurposeRequired bool  `json:"restricted_purpose_required"`
	RetentionS                struct {
		Decisions int64 `json:"decisions"`
		Logins    int64 `json:"logins"`
		Other     int64 `json:"other"`
	} `json:"retention_s"`
	OfficeHours struct {
		Start      string `json:"start"`
		End        string `json:"end"`
		Weekdays   []int  `json:"weekdays"`
		UTCOffsetS int64  `json:"utc_offset_s"`
	} `json:"office_hours"`
}

// clockTime is minutes after midnight as HH:MM (24:00 for the end of day).
func clockTime(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// minutes reads HH:MM; anything else is -1, which Validate refuses.
func minutes(s string) int {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return -1
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 24 || m > 59 || (h == 24 && m > 0) {
		return -1
	}
	return h*60 + m
}

func secs(d time.Duration) int64 { return int64(d / time.Second) }
func dur(s int64) time.Duration {
	const max = int64(1<<63-1) / int64(time.Second)
	if s > max || s < -max {
		return -1 // out of range; Validate refuses negative durations
	}
	return time.Duration(s) * time.Second
}

// Encode is the document as JSON, the API body and the stored form.
func Encode(p Policy) []byte {
	var d doc
	d.Version = p.Version
	d.LoginMethods, d.PasswordOperators = nonNil(p.LoginMethods), nonNil(p.PasswordOperators)
	d.Lockout.Threshold, d.Lockout.WindowS, d.Lockout.DurationS = p.Lockout.Threshold, secs(p.Lockout.Window), secs(p.Lockout.Duration)
	d.Lockout.PermanentAfter, d.Lockout.SprayDistinctOperators, d.Lockout.SprayWindowS = p.Lockout.PermanentAfter, p.Lockout.SprayDistinctOperators, secs(p.Lockout.SprayWindow)
	d.Password.MinLength, d.Password.RequireLetter, d.Password.RequireDigit = p.Password.MinLength, p.Password.RequireLetter, p.Password.RequireDigit
	d.Password.MaxAgeS, d.Password.History, d.Password.Denylist = secs(p.Password.MaxAge), p.Password.History, p.Password.Denylist
	d.Session.IdleTimeoutS, d.Session.AbsoluteTimeoutS, d.Session.AccessTokenTTLS = secs(p.Session.IdleTimeout), secs(p.Session.AbsoluteTimeout), secs(p.Session.AccessTokenTTL)
	d.Cards.AllowedAAGUIDs, d.Cards.AllowBackupEligible = nonNil(p.Cards.AllowedAAGUIDs), p.Cards.AllowBackupEligible
	d.DormantAfterS, d.RestrictedPurposeRequired = secs(p.DormantAfter), p.RestrictedPurposeRequired
	d.RetentionS.Decisions, d.RetentionS.Logins, d.RetentionS.Other = secs(p.Retention.Decisions), secs(p.Retention.Logins), secs(p.Retention.Other)
	d.OfficeHours.Start, d.OfficeHours.End, d.OfficeHours.UTCOffsetS = clockTime(p.OfficeHours.Start), clockTime(p.OfficeHours.End), secs(p.OfficeHours.UTCOffset)
	d.OfficeHours.Weekdays = []int{}
	for _, w := range p.OfficeHours.Weekdays {
		d.OfficeHours.Weekdays = append(d.OfficeHours.Weekdays, int(w))
	}
	b, _ := json.Marshal(d) // plain structs of strings and numbers cannot fail
	return b
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Decode reads a whole document. Unknown fields are refused; a field left
// out keeps its default, so that an older client never weakens a control
// it does not know about. The version is the store's business and ignored.
func Decode(b []byte) (Policy, error) {
	d := docOf(Default())
	if err := jsonstrict.Check(b, &d); err != nil {
		ke, _ := errors.AsType[*jsonstrict.KeyError](err)
		return Policy{}, &ValidationError{Fields: []FieldError{{ke.Path, ke.Reason}}}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Policy{}, decodeError(err)
	}
	if dec.More() {
		return Policy{}, &ValidationError{Fields: []FieldError{{"body", "trailing data after the document"}}}
	}
	p := Policy{
		Version:           d.Version,
		LoginMethods:      d.LoginMethods,
		PasswordOperators: nonNil(d.PasswordOperators),
		Lockout: Lockout{Threshold: d.Lockout.Threshold, Window: dur(d.Lockout.WindowS), Duration: dur(d.Lockout.DurationS),
			PermanentAfter: d.Lockout.PermanentAfter, SprayDistinctOperators: d.Lockout.SprayDistinctOperators, SprayWindow: dur(d.Lockout.SprayWindowS)},
		Password: Password{MinLength: d.Password.MinLength, RequireLetter: d.Password.RequireLetter, RequireDigit: d.Password.RequireDigit,
			MaxAge: dur(d.Password.MaxAgeS), History: d.Password.History, Denylist: d.Password.Denylist},
		Session:      Session{IdleTimeout: dur(d.Session.IdleTimeoutS), AbsoluteTimeout: dur(d.Session.AbsoluteTimeoutS), AccessTokenTTL: dur(d.Session.AccessTokenTTLS)},
		Cards:        Cards{AllowedAAGUIDs: nonNil(d.Cards.AllowedAAGUIDs), AllowBackupEligible: d.Cards.AllowBackupEligible},
		DormantAfter: dur(d.DormantAfterS), RestrictedPurposeRequired: d.RestrictedPurposeRequired,
		Retention:   Retention{Decisions: dur(d.RetentionS.Decisions), Logins: dur(d.RetentionS.Logins), Other: dur(d.RetentionS.Other)},
		OfficeHours: OfficeHours{Start: minutes(d.OfficeHours.Start), End: minutes(d.OfficeHours.End), UTCOffset: dur(d.OfficeHours.UTCOffsetS)},
	}
	for _, w := range d.OfficeHours.Weekdays {
		p.OfficeHours.Weekdays = append(p.OfficeHours.Weekdays, time.Weekday(w))
	}
	return p, nil
}

// decodeError names the field a document could not be read at, without
// the decoder's Go type names and without echoing values.
func decodeError(err error) error {
	field, msg := "body", "not a policy document (a JSON object)"
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		field, msg = te.Field, "must be a JSON "+jsonKind(te.Type)
	} else if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field, msg = strings.Trim(name, `"`), "unknown field"
		if len(field) > 64 {
			field = field[:64] + "…"
		}
	} else if _, ok := errors.AsType[*json.SyntaxError](err); ok {
		msg = "malformed JSON"
	}
	return &ValidationError{Fields: []FieldError{{field, msg}}}
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array"
	case reflect.String:
		return "string"
	}
	return "object"
}

func docOf(p Policy) doc {
	var d doc
	_ = json.Unmarshal(Encode(p), &d)
	return d
}
