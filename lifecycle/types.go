package lifecycle

import (
	"time"

	"github.com/opgate/opgate"
)

// Site is a place whose operators one section chief manages.
type Site struct {
	ID               opgate.SiteID
	Name             string
	MunicipalityCode string
	CreatedAt        time.Time
}

// Terminal is a registered counter terminal at a site.
type Terminal struct {
	ID        opgate.TerminalID
	SiteID    opgate.SiteID
	Name      string
	CreatedAt time.Time
	RemovedAt time.Time // zero while registered
}

// EmploymentType is how the staff member is employed (R1.2).
type EmploymentType string

// Employment types. Every type but Regular must carry an end date.
const (
	Regular    EmploymentType = "regular"
	PartTime   EmploymentType = "part_time"
	Temporary  EmploymentType = "temporary"
	Dispatched EmploymentType = "dispatched"
	Contractor EmploymentType = "contractor"
)

// Valid reports whether t is one of the known types.
func (t EmploymentType) Valid() bool {
	switch t {
	case Regular, PartTime, Temporary, Dispatched, Contractor:
		return true
	}
	return false
}

// Status is an operator's lifecycle state as stored. "locked" is not a
// stored status: it is shown when an active operator's lock is in force.
type Status string

// Stored statuses.
const (
	Active    Status = "active"
	Suspended Status = "suspended"
	Expired   Status = "expired"
	Retired   Status = "retired"
	// Locked is only ever shown, never stored.
	Locked Status = "locked"
)

// Operator is a staff member's identity.
type Operator struct {
	ID             opgate.OperatorID
	StaffNumber    string
	Name           string
	SiteID         opgate.SiteID
	EmploymentType EmploymentType
	Status         Status
	ValidUntil     time.Time // zero: no end date (regular staff only)
	IssuedAt       time.Time
	IssuedBy       opgate.OperatorID
	StatusChanged  time.Time
	LastLoginAt    time.Time
}

// Lock is an operator's login lock state, kept durably so that losing the
// ephemeral store never unlocks anyone (R2.4).
type Lock struct {
	OperatorID opgate.OperatorID
	Recent     []time.Time   // judged failures not yet outside the window, oldest first
	Pending    []Reservation // attempts being judged right now
	Until      time.Time     // zero when not locked, unless Permanent
	Permanent  bool          // only a chief's unlock lifts it
	LocksInRow int           // temporary locks since the last success or unlock
}

// Reservation is an attempt slot held while one credential is judged.
type Reservation struct {
	ID    string
	Until time.Time // the slot is freed after this even if never released
}

// Locked reports whether the lock is in force at now.
func (l Lock) Locked(now time.Time) bool {
	return l.Permanent || (!l.Until.IsZero() && now.Before(l.Until))
}

// ChangeKind is what a scheduled change does.
type ChangeKind string

// Kinds of changes that can be dated ahead.
const (
	ChangeTransfer ChangeKind = "transfer"
	ChangeRetire   ChangeKind = "retire"
)

// ChangeStatus is where a scheduled change stands.
type ChangeStatus string

// Scheduled change states.
const (
	ChangePending   ChangeStatus = "pending"
	ChangeApplied   ChangeStatus = "applied"
	ChangeCancelled ChangeStatus = "cancelled"
	ChangeFailed    ChangeStatus = "failed"
)

// Change is a transfer or retirement dated ahead (R1.5).
type Change struct {
	ID         opgate.ChangeID
	OperatorID opgate.OperatorID
	Kind       ChangeKind
	ToSiteID   opgate.SiteID // transfers only
	// FromSiteID is where the operator was when a transfer was scheduled
	// ("" for changes that carry none).
	FromSiteID  opgate.SiteID
	Reason      string
	EffectiveAt time.Time
	CreatedBy   opgate.OperatorID
	CreatedAt   time.Time
	Status      ChangeStatus
	DoneAt      time.Time
	Error       string
}

// OperatorFilter selects operators; zero fields do not filter.
type OperatorFilter struct {
	SiteID      opgate.SiteID
	Status      Status
	StaffNumber string
	// Query finds operators whose ID or staff number starts with it, or
	// whose name contains it.
	Query string
	At    time.Time         // the instant "locked" is judged at
	After opgate.OperatorID // cursor
	Limit int
}

// ChangeFilter selects scheduled changes.
type ChangeFilter struct {
	OperatorID opgate.OperatorID
	// Sites, when set, keeps the changes of operators at one of them now,
	// or moving to one of them.
	Sites  []opgate.SiteID
	Status ChangeStatus
	After  opgate.ChangeID
	Limit  int
}

// Ended names one right (a grant, card or session, by its ID) that a
// change ended, and whose it was.
type Ended struct {
	OperatorID opgate.OperatorID
	ID         string
}
