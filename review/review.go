// Package review owns periodic permission reviews (R5.1, CL 18-2): a
// campaign puts every live grant of one site, as it stood when the
// campaign opened, in front of the site's reviewers with what they need to
// judge it (last login, last use of the grant in the decision log, hints);
// each item is kept or revoked, a revocation ending the grant in the same
// transaction as the decision; at the deadline unreviewed items are revoked
// or escalated to the security administrator. Schedules open campaigns by
// themselves every N months. It knows neither HTTP nor SQL.
package review

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
)

// Errors callers branch on. Self-review and refusals reuse authz's, which
// the HTTP edge already maps (403 self_grant, 403 forbidden).
var (
	ErrNotFound   = errors.New("review: not found")
	ErrConflict   = errors.New("review: conflict")
	ErrValidation = errors.New("review: invalid request")
)

// FieldError names one invalid field.
type FieldError struct{ Field, Message string }

// ValidationError lists every problem at once.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string { return fmt.Sprintf("review: invalid request: %v", e.Fields) }
func (e *ValidationError) Unwrap() error { return ErrValidation }

// Status is where a campaign stands.
type Status string

// Campaign states.
const (
	Open   Status = "open"
	Closed Status = "closed"
)

// Unreviewed is what closing does with items nobody decided.
type Unreviewed string

// What closing does with undecided items.
const (
	Escalate Unreviewed = "escalate"
	Revoke   Unreviewed = "revoke"
)

// Decision is what became of one item. Stable strings, kept in the store
// and the history.
type Decision string

// Item decisions. Pending items are decided by a reviewer (keep, revoke)
// or by closing (revoked_unreviewed, escalated).
const (
	Pending           Decision = ""
	Keep              Decision = "keep"
	RevokeIt          Decision = "revoke"
	RevokedUnreviewed Decision = "revoked_unreviewed"
	Escalated         Decision = "escalated"
)

// Hints a reviewer sees beside an item (issue: unused_90d, dormant,
// expires_soon, high_risk).
const (
	HintUnused      = "unused_90d"
	HintDormant     = "dormant"
	HintExpiresSoon = "expires_soon"
	HintHighRisk    = "high_risk"
)

// Campaign is one review of one site.
type Campaign struct {
	ID           string
	SiteID       opgate.SiteID
	DueAt        time.Time
	OnUnreviewed Unreviewed
	Status       Status
	CreatedBy    opgate.OperatorID // empty when a schedule opened it
	CreatedAt    time.Time
	ClosedAt     time.Time
	ClosedBy     opgate.OperatorID
	ScheduleID   string
}

// Item is one grant under review, as it stood when the campaign opened.
type Item struct {
	ReviewID     string
	ID           string
	GrantID      opgate.GrantID
	OperatorID   opgate.OperatorID
	OperatorName string
	RoleID       opgate.RoleID
	GrantedBy    opgate.OperatorID
	GrantedAt    time.Time
	ValidUntil   time.Time
	LastLoginAt  time.Time
	LastUsedAt   time.Time // last decision this grant allowed
	Hints        []string
	Decision     Decision
	Reason       string
	DecidedBy    opgate.OperatorID
	DecidedAt    time.Time
}

// Schedule opens a campaign at a site every EveryMonths months.
type Schedule struct {
	ID           string
	SiteID       opgate.SiteID
	EveryMonths  int
	DueAfter     time.Duration // each campaign's due date, after it opens
	OnUnreviewed Unreviewed
	NextAt       time.Time
	CreatedBy    opgate.OperatorID
	CreatedAt    time.Time
}

// Filter selects campaigns; zero fields do not filter.
type Filter struct {
	SiteID opgate.SiteID
	Status Status
	After  string
	Limit  int
}

// Tx is what reviews read and write inside one transaction: authz's view
// of grants (revocations go through authz.RevokeIn) and the review rows.
type Tx interface {
	authz.Tx
	GetSite(ctx context.Context, id opgate.SiteID) (lifecycle.Site, error)
	CreateReview(ctx context.Context, c Campaign, items []Item) error
	// GetReview locks the campaign row until the transaction ends.
	GetReview(ctx context.Context, id string) (Campaign, error)
	UpdateReview(ctx context.Context, c Campaign) error
	ListReviews(ctx context.Context, f Filter) ([]Campaign, error)
	// DueReviews lists open campaigns due at or before now.
	DueReviews(ctx context.Context, now time.Time, limit int) ([]Campaign, error)
	ReviewItems(ctx context.Context, review string, after string, limit int) ([]Item, error)
	GetReviewItem(ctx context.Context, review, item string) (Item, error)
	UpdateReviewItem(ctx context.Context, it Item) error
	// LastUses is the time of the last decision each grant allowed.
	LastUses(ctx context.Context, grants []opgate.GrantID) (map[opgate.GrantID]time.Time, error)
	// Operators returns the operators that exist among ids, unlocked.
	Operators(ctx context.Context, ids []opgate.OperatorID) ([]lifecycle.Operator, error)
	CreateReviewSchedule(ctx context.Context, s Schedule) error
	ListReviewSchedules(ctx context.Context, site opgate.SiteID) ([]Schedule, error)
	// ClaimDueSchedules locks schedules due at now, skipping those
	// another transaction holds.
	ClaimDueSchedules(ctx context.Context, now time.Time, limit int) ([]Schedule, error)
	UpdateReviewSchedule(ctx context.Context, s Schedule) error
	DeleteReviewSchedule(ctx context.Context, id string) error
}

// DB runs review transactions.
type DB interface {
	InTx(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
}

// Authorizer answers permission questions (authz.Service).
type Authorizer interface {
	Require(ctx context.Context, actor opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) error
}

// Policies gives the policy in force (dormancy for the hints).
type Policies interface {
	Policy(ctx context.Context) (policy.Policy, error)
}

// Config configures a Service.
type Config struct {
	// DB, Authorizer and Policies are required.
	DB         DB
	Authorizer Authorizer
	Policies   Policies
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Service runs reviews.
type Service struct {
	db  DB
	az  Authorizer
	pol Policies
	clk clock.Clock
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("DB is required"))
	}
	if cfg.Authorizer == nil {
		errs = append(errs, errors.New("Authorizer is required"))
	}
	if cfg.Policies == nil {
		errs = append(errs, errors.New("Policies is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("review: config: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Service{db: cfg.DB, az: cfg.Authorizer, pol: cfg.Policies, clk: cfg.Clock}, nil
}

// Actor is who acts, from which terminal.
type Actor = lifecycle.Actor

// OpenRequest opens a campaign.
type OpenRequest struct {
	SiteID       opgate.SiteID
	DueAt        time.Time
	OnUnreviewed Unreviewed // empty: escalate
}

func validUnreviewed(u Unreviewed) bool { return u == Escalate || u == Revoke }

// Open opens a campaign for a site: one item per grant live at the site
// now (R5.1). Grants at every site ("*") belong to no site's review.
func (s *Service) Open(ctx context.Context, a Actor, r OpenRequest) (Campaign, error) {
	if err := s.az.Require(ctx, a.ID, roles.ReviewPerform, r.SiteID); err != nil {
		return Campaign{}, err
	}
	now := s.clk.Now()
	if r.OnUnreviewed == "" {
		r.OnUnreviewed = Escalate
	}
	var fe []FieldError
	if !validUnreviewed(r.OnUnreviewed) {
		fe = append(fe, FieldError{"on_unreviewed", "one of revoke, escalate"})
	}
	if !r.DueAt.After(now) {
		fe = append(fe, FieldError{"due_at", "must be in the future"})
	}
	if fe != nil {
		return Campaign{}, &ValidationError{Fields: fe}
	}
	var c Campaign
	err := s.db.InTx(ctx, func(tx Tx) (err error) {
		c, err = s.open(ctx, tx, a, r, "", now)
		return err
	})
	return c, err
}

// open snapshots the site's live grants into a new campaign.
func (s *Service) open(ctx context.Context, tx Tx, a Actor, r OpenRequest, schedule string, now time.Time) (Campaign, error) {
	if _, err := tx.GetSite(ctx, r.SiteID); err != nil {
		if errors.Is(err, opgate.ErrNotFound) {
			return Campaign{}, &ValidationError{Fields: []FieldError{{"site_id", "no such site"}}}
		}
		return Campaign{}, err
	}
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return Campaign{}, err
	}
	rs, err := tx.ListRoles(ctx)
	if err != nil {
		return Campaign{}, err
	}
	risky := map[opgate.RoleID]bool{}
	for _, r := range rs {
		risky[r.ID] = r.HighRisk()
	}
	var live []authz.Grant
	for after := opgate.GrantID(""); ; {
		gs, err := tx.ListGrants(ctx, authz.GrantFilter{SiteID: r.SiteID, Status: authz.Active, After: after, Limit: 1000})
		if err != nil {
			return Campaign{}, err
		}
		for _, g := range gs {
			if g.Live(now) {
				live = append(live, g)
			}
		}
		if len(gs) < 1000 {
			break
		}
		after = gs[len(gs)-1].ID
	}
	c := Campaign{ID: lifecycle.NewID("R-", 10), SiteID: r.SiteID, DueAt: r.DueAt.UTC().Truncate(time.Microsecond), OnUnreviewed: r.OnUnreviewed,
		Status: Open, CreatedBy: a.ID, CreatedAt: now, ScheduleID: schedule}
	items := make([]Item, 0, len(live))
	gids := make([]opgate.GrantID, 0, len(live))
	var oids []opgate.OperatorID
	seen := map[opgate.OperatorID]bool{}
	for _, g := range live {
		gids = append(gids, g.ID)
		if !seen[g.OperatorID] {
			seen[g.OperatorID] = true
			oids = append(oids, g.OperatorID)
		}
	}
	uses, err := tx.LastUses(ctx, gids)
	if err != nil {
		return Campaign{}, err
	}
	ops, err := tx.Operators(ctx, oids)
	if err != nil {
		return Campaign{}, err
	}
	byID := make(map[opgate.OperatorID]lifecycle.Operator, len(ops))
	for _, o := range ops {
		byID[o.ID] = o
	}
	for i, g := range live {
		o := byID[g.OperatorID]
		it := Item{ReviewID: c.ID, ID: fmt.Sprintf("I-%05d", i+1), GrantID: g.ID, OperatorID: g.OperatorID, OperatorName: o.Name,
			RoleID: g.RoleID, GrantedBy: g.GrantedBy, GrantedAt: g.ValidFrom, ValidUntil: g.ValidUntil, LastLoginAt: o.LastLoginAt,
			LastUsedAt: uses[g.ID]}
		it.Hints = Hints(it, o, risky[g.RoleID], p.DormantAfter, now)
		items = append(items, it)
	}
	if err := tx.CreateReview(ctx, c, items); err != nil {
		return Campaign{}, err
	}
	e := audit.Event{Type: audit.ReviewOpened, At: now, ActorID: a.ID, TerminalID: a.TerminalID, SiteID: c.SiteID, Resource: "review:" + c.ID,
		Data: audit.D(map[string]any{"due_at": c.DueAt.Format(time.RFC3339), "on_unreviewed": string(c.OnUnreviewed), "items": len(items), "schedule_id": schedule})}
	_, err = tx.AppendAudit(ctx, e)
	return c, err
}

// Hints are the reasons a reviewer should look twice at an item.
func Hints(it Item, o lifecycle.Operator, highRisk bool, dormantAfter time.Duration, now time.Time) []string {
	hints := []string{}
	const unused = 90 * 24 * time.Hour
	if now.Sub(it.GrantedAt) >= unused && (it.LastUsedAt.IsZero() || now.Sub(it.LastUsedAt) >= unused) {
		hints = append(hints, HintUnused)
	}
	if Dormant(o, dormantAfter, now) {
		hints = append(hints, HintDormant)
	}
	if !it.ValidUntil.IsZero() && it.ValidUntil.Sub(now) <= 30*24*time.Hour {
		hints = append(hints, HintExpiresSoon)
	}
	if highRisk {
		hints = append(hints, HintHighRisk)
	}
	return hints
}

// Dormant reports whether an operator has not logged in for the policy's
// dormancy period (an ID never used counts from its issue).
func Dormant(o lifecycle.Operator, after time.Duration, now time.Time) bool {
	since := o.LastLoginAt
	if since.IsZero() {
		since = o.IssuedAt
	}
	return after > 0 && !since.IsZero() && now.Sub(since) >= after
}

// Get returns a campaign and its items, to a reviewer of its site or a
// reader of reports there.
func (s *Service) Get(ctx context.Context, a Actor, id string) (Campaign, []Item, error) {
	var c Campaign
	var items []Item
	err := s.db.View(ctx, func(tx Tx) (err error) {
		if c, err = tx.GetReview(ctx, id); err != nil {
			return err
		}
		items, err = allItems(ctx, tx, id)
		return err
	})
	if err != nil && !errors.Is(err, opgate.ErrNotFound) {
		return c, nil, err
	}
	if c.ID == "" || (s.az.Require(ctx, a.ID, roles.ReviewPerform, c.SiteID) != nil && s.az.Require(ctx, a.ID, roles.ReportRead, c.SiteID) != nil) {
		return Campaign{}, nil, s.hide(ctx, a)
	}
	return c, items, nil
}

func allItems(ctx context.Context, tx Tx, id string) ([]Item, error) {
	var out []Item
	for after := ""; ; {
		page, err := tx.ReviewItems(ctx, id, after, 1000)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out, nil
		}
		after = page[len(page)-1].ID
	}
}

// hide answers for a campaign the actor may not see: not found for whoever
// reviews at every site, forbidden for everybody else (API.md,
// Conventions).
func (s *Service) hide(ctx context.Context, a Actor) error {
	if s.az.Require(ctx, a.ID, roles.ReviewPerform, opgate.AllSites) == nil {
		return ErrNotFound
	}
	return authz.ErrForbidden
}

// Decide records a reviewer's decision on one item. Nobody decides on
// their own grants (the security administrator decides those); a revoke
// ends the grant in the same transaction as the decision. An item
// escalated at closing is still open to the security administrator.
func (s *Service) Decide(ctx context.Context, a Actor, reviewID, itemID string, d Decision, reason string) (Item, error) {
	var c Campaign
	err := s.db.View(ctx, func(tx Tx) (err error) { c, err = tx.GetReview(ctx, reviewID); return })
	if err != nil && !errors.Is(err, opgate.ErrNotFound) {
		return Item{}, err
	}
	if c.ID == "" || s.az.Require(ctx, a.ID, roles.ReviewPerform, c.SiteID) != nil {
		return Item{}, s.hide(ctx, a)
	}
	var fe []FieldError
	if d != Keep && d != RevokeIt {
		fe = append(fe, FieldError{"decision", "one of keep, revoke"})
	}
	if len(reason) == 0 || len(reason) > 1000 {
		fe = append(fe, FieldError{"reason", "required, at most 1000 bytes"})
	}
	if fe != nil {
		return Item{}, &ValidationError{Fields: fe}
	}
	now := s.clk.Now()
	// Escalated items are the security administrator's (a reviewer at
	// every site) to decide, after the campaign closed.
	top := s.az.Require(ctx, a.ID, roles.ReviewPerform, opgate.AllSites) == nil
	var it Item
	err = s.db.InTx(ctx, func(tx Tx) (err error) {
		if c, err = tx.GetReview(ctx, reviewID); err != nil {
			return err
		}
		if it, err = tx.GetReviewItem(ctx, reviewID, itemID); err != nil {
			if errors.Is(err, opgate.ErrNotFound) {
				return fmt.Errorf("%w: item %s", ErrNotFound, itemID)
			}
			return err
		}
		if it.OperatorID == a.ID {
			return authz.ErrSelfGrant
		}
		escalated := it.Decision == Escalated && top
		if c.Status != Open && !escalated {
			return fmt.Errorf("%w: review is %s", ErrConflict, c.Status)
		}
		if it.Decision != Pending && !escalated {
			return fmt.Errorf("%w: item already decided (%s)", ErrConflict, it.Decision)
		}
		it.Decision, it.Reason, it.DecidedBy, it.DecidedAt = d, reason, a.ID, now
		return s.settle(ctx, tx, a, c, it, now)
	})
	return it, err
}

// settle stores an item's decision with its event and, for a revocation,
// ends the grant through authz: all in the caller's transaction. A grant
// that ended since the campaign opened has nothing left to revoke.
func (s *Service) settle(ctx context.Context, tx Tx, a Actor, c Campaign, it Item, now time.Time) error {
	revoked := false
	if it.Decision == RevokeIt || it.Decision == RevokedUnreviewed {
		_, err := authz.RevokeIn(ctx, tx, a, it.GrantID, "review "+c.ID+": "+it.Reason, now)
		switch {
		case err == nil:
			revoked = true
		case errors.Is(err, authz.ErrConflict):
		default:
			return err
		}
	}
	if err := tx.UpdateReviewItem(ctx, it); err != nil {
		return err
	}
	e := audit.Event{Type: audit.ReviewDecided, At: now, ActorID: a.ID, TerminalID: a.TerminalID, OperatorID: it.OperatorID, SiteID: c.SiteID,
		Resource: "review:" + c.ID, Reason: it.Reason,
		Data: audit.D(map[string]any{"item_id": it.ID, "grant_id": string(it.GrantID), "role_id": string(it.RoleID), "decision": string(it.Decision), "revoked": revoked})}
	_, err := tx.AppendAudit(ctx, e)
	return err
}

// Close ends a campaign: undecided items are revoked or escalated as the
// campaign was opened to do. Closing twice is refused.
func (s *Service) Close(ctx context.Context, a Actor, id string) (Campaign, []Item, error) {
	var c Campaign
	err := s.db.View(ctx, func(tx Tx) (err error) { c, err = tx.GetReview(ctx, id); return })
	if err != nil && !errors.Is(err, opgate.ErrNotFound) {
		return c, nil, err
	}
	if c.ID == "" || s.az.Require(ctx, a.ID, roles.ReviewPerform, c.SiteID) != nil {
		return Campaign{}, nil, s.hide(ctx, a)
	}
	var items []Item
	err = s.db.InTx(ctx, func(tx Tx) (err error) {
		c, items, err = s.close(ctx, tx, a, id, s.clk.Now())
		return err
	})
	return c, items, err
}

func (s *Service) close(ctx context.Context, tx Tx, a Actor, id string, now time.Time) (Campaign, []Item, error) {
	c, err := tx.GetReview(ctx, id)
	if err != nil {
		return c, nil, err
	}
	if c.Status != Open {
		return c, nil, fmt.Errorf("%w: review is already %s", ErrConflict, c.Status)
	}
	items, err := allItems(ctx, tx, id)
	if err != nil {
		return c, nil, err
	}
	var escalated []string
	counts := map[string]int{}
	for i, it := range items {
		if it.Decision == Pending {
			it.DecidedBy, it.DecidedAt = a.ID, now
			if c.OnUnreviewed == Revoke {
				it.Decision, it.Reason = RevokedUnreviewed, "not reviewed by the due date"
			} else {
				it.Decision, it.Reason = Escalated, "not reviewed by the due date; escalated to the security administrator"
				escalated = append(escalated, it.ID)
			}
			if err := s.settle(ctx, tx, a, c, it, now); err != nil {
				return c, nil, err
			}
			items[i] = it
		}
		counts[string(items[i].Decision)]++
	}
	c.Status, c.ClosedAt, c.ClosedBy = Closed, now, a.ID
	if err := tx.UpdateReview(ctx, c); err != nil {
		return c, nil, err
	}
	if len(escalated) > 0 {
		e := audit.Event{Type: audit.ReviewEscalated, At: now, ActorID: a.ID, TerminalID: a.TerminalID, SiteID: c.SiteID, Resource: "review:" + c.ID,
			Reason: "unreviewed items need the security administrator", Data: audit.D(map[string]any{"items": escalated})}
		if _, err := tx.AppendAudit(ctx, e); err != nil {
			return c, nil, err
		}
	}
	e := audit.Event{Type: audit.ReviewClosed, At: now, ActorID: a.ID, TerminalID: a.TerminalID, SiteID: c.SiteID, Resource: "review:" + c.ID,
		Data: audit.D(map[string]any{"decisions": counts})}
	_, err = tx.AppendAudit(ctx, e)
	return c, items, err
}

// List lists campaigns of a site the actor reviews or reads reports of.
func (s *Service) List(ctx context.Context, a Actor, f Filter) ([]Campaign, error) {
	site := f.SiteID
	if site == "" {
		site = opgate.AllSites
	}
	if s.az.Require(ctx, a.ID, roles.ReviewPerform, site) != nil && s.az.Require(ctx, a.ID, roles.ReportRead, site) != nil {
		return nil, authz.ErrForbidden
	}
	var out []Campaign
	err := s.db.View(ctx, func(tx Tx) (err error) { out, err = tx.ListReviews(ctx, f); return })
	return out, err
}
