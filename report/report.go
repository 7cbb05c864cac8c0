// Package report owns the reports municipal offices need (R5.2-R5.4,
// R1.6, R3.7, R4.3, R4.5): the operator ID ledger (操作者ID管理簿), the
// checklist self-assessment scored from live data, dormant and expiring
// IDs, anomalies, a resident's disclosure report, and retention of the
// history. Every report streams from the store's cursor to its writer
// (JSON, CSV with a BOM and formula escaping, XLSX), so memory does not
// grow with the rows. It knows neither HTTP nor SQL.
package report

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
)

// Source is what reports read. Every walk hands rows to fn one at a time,
// straight from the store's cursor.
type Source interface {
	// Ledger walks operators (of a site, or all) in ID order with their
	// cards and current grants.
	Ledger(ctx context.Context, site opgate.SiteID, now time.Time, fn func(LedgerRow) error) error
	// Events walks the events q selects in seq order.
	Events(ctx context.Context, q EventQuery, fn func(audit.Event) error) error
	// DecisionCounts counts decisions per operator, site and local day.
	DecisionCounts(ctx context.Context, from, to time.Time, offset time.Duration) ([]DayCount, error)
	// Expiring walks dormant operators and what expires soon.
	Expiring(ctx context.Context, q ExpiringQuery, fn func(ExpiringRow) error) error
	// CloneSuspects lists cards flagged as possibly cloned.
	CloneSuspects(ctx context.Context) ([]CardRef, error)
	// Facts counts what the checklist is scored from.
	Facts(ctx context.Context, now time.Time, p policy.Policy) (Facts, error)
}

// EventQuery selects events; zero fields do not filter.
type EventQuery struct {
	Types      []audit.Type
	Resource   string
	Reasons    []string
	Restricted bool // decisions on restricted records only
	From, To   time.Time
}

// DayCount is one operator's decisions at one site on one local day.
type DayCount struct {
	OperatorID opgate.OperatorID
	SiteID     opgate.SiteID
	Day        string // YYYY-MM-DD, local
	N          int
}

// CardRef names a card and its holder.
type CardRef struct {
	CardID     opgate.CardID
	Serial     string
	OperatorID opgate.OperatorID
	SiteID     opgate.SiteID
	Status     string
	ChangedAt  time.Time
}

// Authorizer answers permission questions (authz.Service).
type Authorizer interface {
	Require(ctx context.Context, actor opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) error
}

// Policies gives the policy in force.
type Policies interface {
	Policy(ctx context.Context) (policy.Policy, error)
}

// Recorder records that a report was read (who looked at what), in the
// history: reading the ledger or a resident's disclosure is itself worth
// knowing (R4.1), and the checklist counts the anomaly reads (CL 19-1).
type Recorder interface {
	InTx(ctx context.Context, fn func(AuditTx) error) error
}

// AuditTx appends events.
type AuditTx interface {
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// Config configures a Service.
type Config struct {
	// Source, Authorizer, Policies and Recorder are required.
	Source     Source
	Authorizer Authorizer
	Policies   Policies
	Recorder   Recorder
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Service produces reports.
type Service struct {
	src Source
	az  Authorizer
	pol Policies
	rec Recorder
	clk clock.Clock
}

// ErrForbidden is returned to a caller without report.read where asked.
var ErrForbidden = errors.New("report: forbidden")

// ErrValidation is wrapped by bad report parameters.
var ErrValidation = errors.New("report: invalid request")

// FieldError is one bad parameter.
type FieldError struct{ Field, Message string }

// ValidationError lists every bad parameter.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string { return fmt.Sprintf("report: invalid request: %v", e.Fields) }
func (e *ValidationError) Unwrap() error { return ErrValidation }

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.Source == nil {
		errs = append(errs, errors.New("Source is required"))
	}
	if cfg.Authorizer == nil {
		errs = append(errs, errors.New("Authorizer is required"))
	}
	if cfg.Policies == nil {
		errs = append(errs, errors.New("Policies is required"))
	}
	if cfg.Recorder == nil {
		errs = append(errs, errors.New("Recorder is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("report: config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Service{src: cfg.Source, az: cfg.Authorizer, pol: cfg.Policies, rec: cfg.Recorder, clk: cfg.Clock}, nil
}

// Actor is who reads.
type Actor struct {
	ID         opgate.OperatorID
	TerminalID opgate.TerminalID
}

// Allow checks report.read at site ("*" for reports over every site).
func (s *Service) Allow(ctx context.Context, a Actor, site opgate.SiteID) error {
	if site == "" {
		site = opgate.AllSites
	}
	if err := s.az.Require(ctx, a.ID, roles.ReportRead, site); err != nil {
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return nil
}

// Record writes a report.read event for a report about to be produced.
func (s *Service) Record(ctx context.Context, a Actor, kind string, site opgate.SiteID, resource string, params map[string]any) error {
	d := map[string]any{"kind": kind}
	for k, v := range params {
		d[k] = v
	}
	return s.rec.InTx(ctx, func(tx AuditTx) error {
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.ReportRead, At: s.clk.Now(), ActorID: a.ID, TerminalID: a.TerminalID,
			SiteID: site, Resource: resource, Data: audit.D(d)})
		return err
	})
}

// Now is the service's clock.
func (s *Service) Now() time.Time { return s.clk.Now() }

// ---- ledger

// LedgerRow is one operator in the ledger.
type LedgerRow struct {
	OperatorID        opgate.OperatorID `json:"operator_id"`
	StaffNumber       string            `json:"staff_number"`
	Name              string            `json:"name"`
	SiteID            opgate.SiteID     `json:"site_id"`
	EmploymentType    string            `json:"employment_type"`
	Status            string            `json:"status"`
	IssuedAt          T                 `json:"issued_at"`
	ValidUntil        T                 `json:"valid_until"`
	LastLoginAt       T                 `json:"last_login_at"`
	PasswordExpiresAt T                 `json:"password_expires_at"`
	Cards             []LedgerCard      `json:"cards"`
	Grants            []LedgerGrant     `json:"grants"`
}

// LedgerCard is one card of an operator.
type LedgerCard struct {
	CardID     opgate.CardID `json:"card_id"`
	Serial     string        `json:"card_serial"`
	Status     string        `json:"status"`
	EnrolledAt T             `json:"enrolled_at"`
	ChangedAt  T             `json:"status_changed_at"`
}

// LedgerGrant is one current grant of an operator.
type LedgerGrant struct {
	GrantID   opgate.GrantID    `json:"grant_id"`
	RoleID    opgate.RoleID     `json:"role_id"`
	SiteID    opgate.SiteID     `json:"site_id"`
	Status    string            `json:"status"`
	GrantedBy opgate.OperatorID `json:"granted_by"`
	Since     T                 `json:"since"`
	Until     T                 `json:"until"`
}

// LedgerTable is the ledger's layout.
var LedgerTable = Table{Name: "操作者ID管理簿", Columns: []Column{
	{"operator_id", "操作者ID (operator ID)"}, {"staff_number", "職員番号 (staff number)"}, {"name", "氏名 (name)"},
	{"site_id", "拠点 (site)"}, {"employment_type", "雇用形態 (employment)"}, {"status", "状態 (status)"},
	{"issued_at", "発行日 (issued)"}, {"valid_until", "有効期限 (valid until)"}, {"last_login_at", "最終ログイン (last login)"},
	{"password_expires_at", "パスワード期限 (password expires)"}, {"cards", "カード (cards)"}, {"grants", "権限 (grants)"},
}}

// Cells is the row in the spreadsheet: cards and grants as one text each.
func (r LedgerRow) Cells() []string {
	var cards, grants []string
	for _, c := range r.Cards {
		cards = append(cards, fmt.Sprintf("%s %s (%s, %s)", c.Serial, c.Status, c.EnrolledAt, c.ChangedAt))
	}
	for _, g := range r.Grants {
		until := g.Until.String()
		if until == "" {
			until = "無期限"
		}
		grants = append(grants, fmt.Sprintf("%s@%s %s by %s %s〜%s", g.RoleID, g.SiteID, g.Status, g.GrantedBy, g.Since, until))
	}
	return []string{string(r.OperatorID), r.StaffNumber, r.Name, string(r.SiteID), r.EmploymentType, r.Status, r.IssuedAt.String(),
		r.ValidUntil.String(), r.LastLoginAt.String(), r.PasswordExpiresAt.String(), strings.Join(cards, "; "), strings.Join(grants, "; ")}
}

// Ledger writes the ledger of a site ("" for every site) to w.
func (s *Service) Ledger(ctx context.Context, site opgate.SiteID, w Writer) error {
	return s.src.Ledger(ctx, site, s.clk.Now(), func(r LedgerRow) error { return w.Write(r) })
}

// ---- disclosure

// DisclosureRow is one decision on a resident's record.
type DisclosureRow struct {
	At         T                 `json:"at"`
	DecisionID string            `json:"decision_id"`
	OperatorID opgate.OperatorID `json:"operator_id"`
	SiteID     opgate.SiteID     `json:"site_id"`
	TerminalID opgate.TerminalID `json:"terminal_id"`
	Action     string            `json:"action"`
	Allowed    bool              `json:"allowed"`
	Reason     string            `json:"reason"`
	Purpose    string            `json:"purpose"`
}

// DisclosureTable is the disclosure report's layout (本人確認情報提供状況の開示).
var DisclosureTable = Table{Name: "提供状況開示", Columns: []Column{
	{"at", "日時 (time)"}, {"decision_id", "判定ID (decision)"}, {"operator_id", "操作者ID (operator)"}, {"site_id", "拠点 (site)"},
	{"terminal_id", "端末 (terminal)"}, {"action", "操作 (action)"}, {"allowed", "許可 (allowed)"}, {"reason", "理由 (reason)"},
	{"purpose", "目的 (purpose)"},
}}

// Cells is the row in the spreadsheet.
func (r DisclosureRow) Cells() []string {
	return []string{r.At.String(), r.DecisionID, string(r.OperatorID), string(r.SiteID), string(r.TerminalID), r.Action,
		strconv.FormatBool(r.Allowed), r.Reason, r.Purpose}
}

// DisclosureQuery names one resident record and a period.
type DisclosureQuery struct {
	ResourceType, ResourceID string
	From, To                 time.Time
}

// Disclosure writes every decision on one record, allowed or refused
// (R4.5).
func (s *Service) Disclosure(ctx context.Context, q DisclosureQuery, w Writer) error {
	return s.src.Events(ctx, EventQuery{Types: []audit.Type{audit.AuthzDecided}, Resource: q.ResourceType + ":" + q.ResourceID, From: q.From, To: q.To},
		func(e audit.Event) error {
			d := decisionData(e)
			return w.Write(DisclosureRow{At: T(e.At), DecisionID: d.DecisionID, OperatorID: e.OperatorID, SiteID: e.SiteID, TerminalID: e.TerminalID,
				Action: d.Action, Allowed: d.Allowed, Reason: e.Reason, Purpose: d.Purpose})
		})
}

// ValidateDisclosure checks a disclosure query.
func ValidateDisclosure(q DisclosureQuery) error {
	var fe []FieldError
	if q.ResourceType == "" || len(q.ResourceType) > 64 || strings.Contains(q.ResourceType, ":") {
		fe = append(fe, FieldError{"resource_type", "required, at most 64 bytes, no colon"})
	}
	if q.ResourceID == "" || len(q.ResourceID) > 200 {
		fe = append(fe, FieldError{"resource_id", "required, at most 200 bytes"})
	}
	if fe != nil {
		return &ValidationError{Fields: fe}
	}
	return nil
}

// decision is what authz.decided events carry in their data.
type decision struct {
	DecisionID string `json:"decision_id"`
	Action     string `json:"action"`
	Allowed    bool   `json:"allowed"`
	Purpose    string `json:"purpose"`
	Restricted bool   `json:"restricted"`
	GrantID    string `json:"grant_id"`
	Reason     string `json:"reason"`
}

// ParseRange reads ?from= and ?to= (RFC 3339; empty from is the
// beginning, empty to is now) and checks from < to.
func ParseRange(from, to string, now time.Time) (time.Time, time.Time, error) {
	var fe []FieldError
	var f, t time.Time
	var err error
	if from != "" {
		if f, err = time.Parse(time.RFC3339, from); err != nil || f.Year() < 1970 || f.Year() > 9999 {
			fe = append(fe, FieldError{"from", "must be an RFC 3339 time"})
		}
	}
	t = now
	if to != "" {
		if t, err = time.Parse(time.RFC3339, to); err != nil || t.Year() < 1970 || t.Year() > 9999 {
			fe = append(fe, FieldError{"to", "must be an RFC 3339 time"})
		}
	}
	if fe == nil && !f.IsZero() && !f.Before(t) {
		fe = append(fe, FieldError{"to", "must be after from"})
	}
	if fe != nil {
		return f, t, &ValidationError{Fields: fe}
	}
	return f.UTC(), t.UTC(), nil
}
