// Package store owns the storage contract: the one transaction every state
// change and its audit event commit in, the repository methods available
// inside it, and the errors every implementation translates its driver's
// errors into. Domain packages declare the subsets they use; store/postgres
// and store/sqlite implement the whole, and store/storetest holds the one
// conformance suite both pass.
package store

import (
	"context"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/roles"
)

// Errors every implementation returns in place of its driver's.
// They are the vocabulary's own values, so that domain packages, which may
// not import a store, can still recognise them.
var (
	ErrNotFound    = opgate.ErrNotFound
	ErrConflict    = opgate.ErrConflict
	ErrUnavailable = opgate.ErrUnavailable
)

// Page bounds a list: items after the cursor, at most Limit of them.
type Page struct {
	After string
	Limit int
}

// Tx is everything a transaction can read and write. Implementations make
// each Tx see a consistent state and serialise writers where the contract
// says "for update".
type Tx interface {
	// Sites and terminals.
	CreateSite(ctx context.Context, s lifecycle.Site) error
	GetSite(ctx context.Context, id opgate.SiteID) (lifecycle.Site, error)
	ListSites(ctx context.Context) ([]lifecycle.Site, error)
	CreateTerminal(ctx context.Context, t lifecycle.Terminal) error
	GetTerminal(ctx context.Context, id opgate.TerminalID) (lifecycle.Terminal, error)
	ListTerminals(ctx context.Context, site opgate.SiteID) ([]lifecycle.Terminal, error)
	RemoveTerminal(ctx context.Context, id opgate.TerminalID, at time.Time) error

	// Roles.
	PutRole(ctx context.Context, r roles.Role) error
	GetRole(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	GetRoleForUpdate(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	GetRoleForShare(ctx context.Context, id opgate.RoleID) (roles.Role, error)
	ListRoles(ctx context.Context) ([]roles.Role, error)

	// Operators. GetOperatorForUpdate locks the row until the transaction ends.
	CreateOperator(ctx context.Context, o lifecycle.Operator) error
	GetOperator(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	GetOperatorForUpdate(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	// GetOperatorsForUpdate locks and returns the operators that exist.
	GetOperatorsForUpdate(ctx context.Context, ids []opgate.OperatorID) ([]lifecycle.Operator, error)
	// MoveOperators sets the site of many operators (a batch of transfers).
	MoveOperators(ctx context.Context, ids []opgate.OperatorID, site opgate.SiteID) error
	// SetOperatorStatus sets the status of many operators.
	SetOperatorStatus(ctx context.Context, ids []opgate.OperatorID, status lifecycle.Status, at time.Time) error
	UpdateOperator(ctx context.Context, o lifecycle.Operator) error
	ListOperators(ctx context.Context, f lifecycle.OperatorFilter) ([]lifecycle.Operator, error)
	CountOperators(ctx context.Context) (int, error)
	// LocksOf returns the lock rows of those operators that have one.
	LocksOf(ctx context.Context, ids []opgate.OperatorID) (map[opgate.OperatorID]lifecycle.Lock, error)
	// DueOperators lists active or suspended operators whose valid_until
	// is at or before now.
	DueOperators(ctx context.Context, now time.Time, limit int) ([]lifecycle.Operator, error)
	GetLock(ctx context.Context, id opgate.OperatorID) (lifecycle.Lock, error)
	PutLock(ctx context.Context, l lifecycle.Lock) error

	// Grants.
	CreateGrant(ctx context.Context, g authz.Grant) error
	GetGrant(ctx context.Context, id opgate.GrantID) (authz.Grant, error)
	UpdateGrant(ctx context.Context, g authz.Grant) error
	ListGrants(ctx context.Context, f authz.GrantFilter) ([]authz.Grant, error)
	// EndGrants ends every pending or active grant of the operators as
	// revoked and returns which.
	EndGrants(ctx context.Context, ops []opgate.OperatorID, at time.Time, by opgate.OperatorID, reason string) ([]lifecycle.Ended, error)
	// ExpireGrants marks active grants whose valid_until has passed as
	// expired and returns them.
	ExpireGrants(ctx context.Context, now time.Time, limit int) ([]authz.Grant, error)
	// AuthzEpoch reads the number every change of authorization state
	// moves (every move of an operator's rights version or of the roles
	// version), where one writer at a time lets a transaction read it once
	// until it writes; ok is false where the store keeps none.
	AuthzEpoch(ctx context.Context) (epoch int64, ok bool, err error)
	// AuthzVersions reads the versions of op's rights (moved by the
	// database on every write to its row's status, site or validity and to
	// its grants) and of the roles (moved on every write to roles), in one
	// statement. In a write transaction where writers commit side by side
	// (PostgreSQL) it first takes the chain head's lock, so that no change
	// of rights commits between this read and the transaction's commit.
	AuthzVersions(ctx context.Context, op opgate.OperatorID) (authz.Versions, error)
	// LoadAuthz reads every operator's status, validity and version, every
	// active grant and every role, each version before what it stands for.
	LoadAuthz(ctx context.Context) (authz.State, error)

	// Per-use approvals.
	CreateApproval(ctx context.Context, a authz.Approval) error
	GetApproval(ctx context.Context, id string) (authz.Approval, error)
	ApproveApproval(ctx context.Context, id string, by opgate.OperatorID, at time.Time) error // ErrNotFound unless pending
	UseApproval(ctx context.Context, id string, op opgate.OperatorID, action opgate.Permission, site opgate.SiteID, decision string, at time.Time) (bool, error)

	// Cards.
	CreateCard(ctx context.Context, c authn.Card) error
	GetCard(ctx context.Context, id opgate.CardID) (authn.Card, error)
	GetCardByCredential(ctx context.Context, credentialID []byte) (authn.Card, error)
	UpdateCard(ctx context.Context, c authn.Card) error
	ListCards(ctx context.Context, op opgate.OperatorID) ([]authn.Card, error)
	// CollectCards marks every active card of the operators collected and
	// returns which.
	CollectCards(ctx context.Context, ops []opgate.OperatorID, at time.Time) ([]lifecycle.Ended, error)

	// Credentials.
	GetPassword(ctx context.Context, op opgate.OperatorID) (authn.PasswordRecord, error)
	// PutPassword replaces the operator's password and keeps the old hash
	// in the history.
	PutPassword(ctx context.Context, p authn.PasswordRecord) error
	PasswordHistory(ctx context.Context, op opgate.OperatorID, n int) ([]string, error)
	CreateEnrollment(ctx context.Context, e authn.Enrollment) error
	// TakeEnrollment marks the enrollment with that code hash used and
	// returns it; a used or unknown code is ErrNotFound. Expiry is the
	// caller's to check against its clock.
	TakeEnrollment(ctx context.Context, codeHash []byte, at time.Time) (authn.Enrollment, error)

	// Sessions.
	CreateSession(ctx context.Context, s authn.Session) error
	GetSession(ctx context.Context, id opgate.SessionID) (authn.Session, error)
	UpdateSession(ctx context.Context, s authn.Session) error
	// EndSessions ends every live session in scope and returns the IDs.
	EndSessions(ctx context.Context, scope authn.SessionScope, at time.Time, reason string) ([]opgate.SessionID, error)
	// EndOperatorSessions ends every live session of the operators.
	EndOperatorSessions(ctx context.Context, ops []opgate.OperatorID, at time.Time, reason string) ([]lifecycle.Ended, error)
	// EndedSessionsSince lists sessions ended at or after t, for
	// reconciling the ephemeral cache.
	EndedSessionsSince(ctx context.Context, t time.Time) ([]opgate.SessionID, error)

	// Scheduled changes.
	CreateChange(ctx context.Context, c lifecycle.Change) error
	GetChange(ctx context.Context, id opgate.ChangeID) (lifecycle.Change, error)
	UpdateChange(ctx context.Context, c lifecycle.Change) error
	ListChanges(ctx context.Context, f lifecycle.ChangeFilter) ([]lifecycle.Change, error)
	// ClaimDueChanges locks up to limit pending changes due at now, skipping
	// rows another transaction holds, so that each applies exactly once
	// across replicas.
	ClaimDueChanges(ctx context.Context, now time.Time, limit int) ([]lifecycle.Change, error)
	// FinishChanges sets the status of many changes at once.
	FinishChanges(ctx context.Context, ids []opgate.ChangeID, status lifecycle.ChangeStatus, at time.Time) error

	// History. AppendAudit adds an event that takes its place in the
	// chain when the transaction commits (seq, prev_hash and hash are
	// assigned then, under the chain head's lock).
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error)

	// Policy: the newest version, and a new version.
	GetPolicy(ctx context.Context) (policy.Policy, error)
	PutPolicy(ctx context.Context, p policy.Policy, at time.Time, by opgate.OperatorID) (policy.Policy, error)

	// Signing keys, PEM-encoded.
	ListSigningKeys(ctx context.Context) ([]authn.StoredKey, error)
	AddSigningKey(ctx context.Context, k authn.StoredKey) error
	UpdateSigningKey(ctx context.Context, k authn.StoredKey) error

	// Emergency stops in force.
	ListStops(ctx context.Context) ([]authn.Stop, error)
	PutStop(ctx context.Context, s authn.Stop) error // ErrConflict if one is in force for the scope
	DeleteStop(ctx context.Context, scope opgate.SiteID) error

	// Service keys for introspection.
	PutServiceKey(ctx context.Context, k authn.ServiceKey) error
	GetServiceKeyByHash(ctx context.Context, hash []byte) (authn.ServiceKey, error)

	// Review campaigns, their items and schedules (review.Tx).
	CreateReview(ctx context.Context, c review.Campaign, items []review.Item) error
	GetReview(ctx context.Context, id string) (review.Campaign, error)
	UpdateReview(ctx context.Context, c review.Campaign) error
	ListReviews(ctx context.Context, f review.Filter) ([]review.Campaign, error)
	DueReviews(ctx context.Context, now time.Time, limit int) ([]review.Campaign, error)
	ReviewItems(ctx context.Context, review string, after string, limit int) ([]review.Item, error)
	GetReviewItem(ctx context.Context, review, item string) (review.Item, error)
	UpdateReviewItem(ctx context.Context, it review.Item) error
	LastUses(ctx context.Context, grants []opgate.GrantID) (map[opgate.GrantID]time.Time, error)
	Operators(ctx context.Context, ids []opgate.OperatorID) ([]lifecycle.Operator, error)
	CreateReviewSchedule(ctx context.Context, s review.Schedule) error
	ListReviewSchedules(ctx context.Context, site opgate.SiteID) ([]review.Schedule, error)
	ClaimDueSchedules(ctx context.Context, now time.Time, limit int) ([]review.Schedule, error)
	UpdateReviewSchedule(ctx context.Context, s review.Schedule) error
	DeleteReviewSchedule(ctx context.Context, id string) error
	// DormantOperators lists active operators whose last login (or issue)
	// is before cutoff.
	DormantOperators(ctx context.Context, cutoff time.Time, limit int) ([]lifecycle.Operator, error)
	// PurgeAudit removes the prefix of the history past retention and
	// moves the chain's anchor to its last removed event.
	PurgeAudit(ctx context.Context, p report.PurgePlan, at time.Time) (report.Purged, error)

	// Meta holds one-off markers such as the bootstrap.
	PutMeta(ctx context.Context, key, value string) error // ErrConflict if present
	GetMeta(ctx context.Context, key string) (string, error)
}

// Store runs transactions.
type Store interface {
	// InTx runs fn in a read-write transaction and commits if fn returns
	// nil. It retries fn on serialisation failures, so fn must not have
	// effects outside the transaction.
	InTx(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// ScanAudit walks the history in seq order from after the anchor.
	ScanAudit(ctx context.Context, after int64, fn func(audit.Event) error) error
	// AuditHead is the last event's seq and hash as recorded with it.
	AuditHead(ctx context.Context) (seq int64, hash []byte, err error)
	// AuditAnchor is where verification starts (genesis, or the checkpoint
	// a purge left).
	AuditAnchor(ctx context.Context) (audit.Anchor, error)
	// Reports read through cursors of their own, outside any
	// transaction, so that rows stream.
	report.Source
	Ping(ctx context.Context) error
	Close() error
}

// Runner adapts a Store to a domain package's own transaction interface T,
// which store.Tx must implement.
type Runner[T any] struct{ S Store }

// InTx runs fn in a read-write transaction.
func (r Runner[T]) InTx(ctx context.Context, fn func(T) error) error {
	return r.S.InTx(ctx, func(tx Tx) error { return fn(any(tx).(T)) })
}

// View runs fn in a read-only transaction.
func (r Runner[T]) View(ctx context.Context, fn func(T) error) error {
	return r.S.View(ctx, func(tx Tx) error { return fn(any(tx).(T)) })
}

// Every domain's transaction interface is a subset of Tx.
var (
	_ lifecycle.Tx      = Tx(nil)
	_ authz.Tx          = Tx(nil)
	_ authn.SessionTx   = Tx(nil)
	_ authn.KeyTx       = Tx(nil)
	_ authn.LoginTx     = Tx(nil)
	_ authn.EmergencyTx = Tx(nil)
	_ authn.ServiceTx   = Tx(nil)
)

var _ policy.Tx = Tx(nil)

var (
	_ review.Tx      = Tx(nil)
	_ report.PurgeTx = Tx(nil)
	_ report.AuditTx = Tx(nil)
)
