package authz

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// The decision index keeps, per operator, what Decide reads — status, end
// of validity, live grants with their roles' permissions resolved to a bit
// set — so that a decision is a map lookup and a short scan. It answers
// exactly as Decide does; the index tests hold it to that over random data.
//
// It is never trusted blindly. Every entry carries the version the
// database gave the operator's rights when it was read (operators.
// authz_version, moved by triggers on any write to the operator's row or
// grants; one more version for all roles), and a decision first reads the
// current versions in its own transaction: an entry is used only when its
// version is the one the transaction sees, otherwise the operator is read
// again in that same transaction. A revoke, a transfer, a suspension
// committed before the decision began is therefore always seen, on every
// replica, with no message between replicas. Time is not part of a
// version: grants and validity keep their dates and are judged against the
// clock at every decision.
//
// An entry is installed only after the transaction that read it
// committed, so the index never holds a state that was rolled back (whose
// version number a later, different state could take). Entries are
// immutable: a change replaces the entry.

// Versions are the database's versions of one operator's rights and of the
// roles, as one transaction sees them.
type Versions struct {
	Found    bool  // the operator exists
	Operator int64 // operators.authz_version
	Roles    int64
}

// OperatorState is what a decision reads of an operator.
type OperatorState struct {
	ID         opgate.OperatorID
	Status     lifecycle.Status
	ValidUntil time.Time
	Version    int64
}

// State is everything decisions read, loaded at once at start.
type State struct {
	RolesVersion int64
	Roles        []roles.Role
	Operators    []OperatorState
	// Grants are the active grants; others never count.
	Grants []Grant
}

// permSet is a set of catalog permissions, one bit each.
type permSet uint64

var permBits = func() map[opgate.Permission]uint8 {
	m := map[opgate.Permission]uint8{}
	for i, e := range roles.Catalog() {
		if i >= 64 {
			panic("authz: the permission catalog outgrew the index's bit set")
		}
		m[e.Permission] = uint8(i)
	}
	return m
}()

func permsOf(ps []opgate.Permission) permSet {
	var s permSet
	for _, p := range ps {
		if b, ok := permBits[p]; ok {
			s |= 1 << b
		}
	}
	return s
}

// roleSet is one version of all roles, as permission sets.
type roleSet struct {
	version int64
	perms   map[opgate.RoleID]permSet
}

func newRoleSet(version int64, rs []roles.Role) *roleSet {
	out := &roleSet{version: version, perms: make(map[opgate.RoleID]permSet, len(rs))}
	for _, r := range rs {
		out.perms[r.ID] = permsOf(r.Permissions)
	}
	return out
}

// Operator states, as the decision orders its checks.
const (
	stateActive uint8 = iota
	stateSuspended
	stateInactive
)

// Times are kept as Unix nanoseconds, so that comparing them is comparing
// integers, with Decide's exact answers for every instant between 1678 and
// 2262 (outside, they are clamped).
var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// endNanos is nanos for a grant's end that may be unset (zero: no end).
func endNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MaxInt64
	}
	return nanos(t)
}

// operatorEnd is nanos for an operator's end: as Decide reads it, only an
// instant after the zero time is an end.
func operatorEnd(t time.Time) int64 {
	if !t.After(time.Time{}) {
		return math.MaxInt64
	}
	return nanos(t)
}

type grantEntry struct {
	id    opgate.GrantID
	role  opgate.RoleID
	site  opgate.SiteID
	from  int64 // live from (inclusive)
	until int64 // live until (exclusive); MaxInt64: no end
	perms permSet
}

// entry is one operator's rights at one version. It is never changed once
// published.
type entry struct {
	id         opgate.OperatorID
	version    int64
	state      uint8
	validUntil int64
	rolesVer   int64 // the roles version perms were resolved against
	grants     []grantEntry
}

func stateOf(s lifecycle.Status) uint8 {
	switch s {
	case lifecycle.Active:
		return stateActive
	case lifecycle.Suspended:
		return stateSuspended
	}
	return stateInactive
}

// newEntry builds an operator's entry from its state and grants (those of
// other operators and those not active are left out), in grant ID order:
// the order in which Decide meets them, so that the allowing grant named
// is the same.
func newEntry(o OperatorState, gs []Grant, rs *roleSet, sites map[opgate.SiteID]opgate.SiteID) *entry {
	e := &entry{id: o.ID, version: o.Version, state: stateOf(o.Status), validUntil: operatorEnd(o.ValidUntil), rolesVer: rs.version}
	for _, g := range gs {
		if g.Status != Active || g.OperatorID != o.ID {
			continue
		}
		site := g.SiteID
		if sites != nil {
			// One copy of each site ID for the whole index.
			if s, ok := sites[site]; ok {
				site = s
			} else {
				sites[site] = site
			}
		}
		e.grants = append(e.grants, grantEntry{id: g.ID, role: g.RoleID, site: site, from: nanos(g.ValidFrom), until: endNanos(g.ValidUntil), perms: rs.perms[g.RoleID]})
	}
	if !slices.IsSortedFunc(e.grants, cmpGrantEntry) {
		slices.SortFunc(e.grants, cmpGrantEntry)
	}
	return e
}

func cmpGrantEntry(a, b grantEntry) int {
	switch {
	case a.id < b.id:
		return -1
	case a.id > b.id:
		return 1
	}
	return 0
}

// withRoles is e with its grants' permissions resolved against rs.
func (e *entry) withRoles(rs *roleSet) *entry {
	if e.rolesVer == rs.version {
		return e
	}
	c := *e
	c.rolesVer = rs.version
	c.grants = slices.Clone(e.grants)
	for i := range c.grants {
		c.grants[i].perms = rs.perms[c.grants[i].role]
	}
	return &c
}

// decide is Decide over the entry (nil: no such operator).
func (e *entry) decide(perm opgate.Permission, site opgate.SiteID, now time.Time) Decision {
	if e == nil {
		return Decision{Reason: ReasonUnknownOperator}
	}
	switch e.state {
	case stateSuspended:
		return Decision{Reason: ReasonOperatorSuspended}
	case stateInactive:
		return Decision{Reason: ReasonOperatorInactive}
	}
	b, ok := permBits[perm]
	if !ok {
		return Decision{Reason: ReasonUnknownAction}
	}
	t := nanos(now)
	if t >= e.validUntil {
		return Decision{Reason: ReasonOperatorInactive}
	}
	bit := permSet(1) << b
	elsewhere := false
	for i := range e.grants {
		g := &e.grants[i]
		if g.perms&bit == 0 || t < g.from || t >= g.until {
			continue
		}
		if g.site == opgate.AllSites || g.site == site {
			return Decision{Allowed: true, Reason: ReasonAllowed, GrantID: g.id}
		}
		elsewhere = true
	}
	if elsewhere {
		return Decision{Reason: ReasonOtherSite}
	}
	return Decision{Reason: ReasonNoGrant}
}

// hasGrantAt reports whether a grant of the entry is live at site now,
// whatever its role.
func (e *entry) hasGrantAt(site opgate.SiteID, now time.Time) bool {
	if e == nil {
		return false
	}
	t := nanos(now)
	for _, g := range e.grants {
		if t >= g.from && t < g.until && (g.site == site || g.site == opgate.AllSites) {
			return true
		}
	}
	return false
}

// Index is the in-memory decision index. It is safe for concurrent use:
// readers take a shard's read lock for one map lookup; writers replace
// whole entries.
type Index struct {
	seed   maphash.Seed
	roles  atomic.Pointer[roleSet]
	shards [indexShards]indexShard
}

// indexShards spreads writers (reloads after changes) so that they rarely
// block readers of other operators.
const indexShards = 64

type indexShard struct {
	mu sync.RWMutex
	m  map[opgate.OperatorID]*entry
	_  [40]byte // keeps neighbouring shards' locks off one cache line
}

// NewIndex returns an empty index; decisions fill it as they meet
// operators, or Load fills it at once.
func NewIndex() *Index {
	x := &Index{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].m = map[opgate.OperatorID]*entry{}
	}
	return x
}

func (x *Index) shard(op opgate.OperatorID) *indexShard {
	return &x.shards[maphash.String(x.seed, string(op))%indexShards]
}

func (x *Index) get(op opgate.OperatorID) *entry {
	sh := x.shard(op)
	sh.mu.RLock()
	e := sh.m[op]
	sh.mu.RUnlock()
	return e
}

func (x *Index) put(e *entry) {
	sh := x.shard(e.id)
	sh.mu.Lock()
	sh.m[e.id] = e
	sh.mu.Unlock()
}

// Load replaces the index's content with st.
func (x *Index) Load(st State) {
	rs := newRoleSet(st.RolesVersion, st.Roles)
	byOp := make(map[opgate.OperatorID][]Grant, len(st.Operators))
	for _, g := range st.Grants {
		byOp[g.OperatorID] = append(byOp[g.OperatorID], g)
	}
	sites := map[opgate.SiteID]opgate.SiteID{}
	var fresh [indexShards]map[opgate.OperatorID]*entry
	for i := range fresh {
		fresh[i] = make(map[opgate.OperatorID]*entry, len(st.Operators)/indexShards+1)
	}
	for _, o := range st.Operators {
		fresh[maphash.String(x.seed, string(o.ID))%indexShards][o.ID] = newEntry(o, byOp[o.ID], rs, sites)
	}
	x.roles.Store(rs)
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		sh.m = fresh[i]
		sh.mu.Unlock()
	}
}

// Len is the number of operators held.
func (x *Index) Len() int {
	n := 0
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Decide answers from the index alone, as Decide would over the state it
// holds; it does not look at the database. Service uses it only after
// checking the entry's version in a transaction.
func (x *Index) Decide(op opgate.OperatorID, perm opgate.Permission, site opgate.SiteID, now time.Time) Decision {
	e := x.get(op)
	if e != nil {
		if rs := x.roles.Load(); rs != nil && e.rolesVer != rs.version {
			e = e.withRoles(rs)
		}
	}
	return e.decide(perm, site, now)
}
