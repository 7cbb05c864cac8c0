package authz

import (
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
)

// The decision index keeps, per operator, what Decide reads — status, end
// of validity, active grants with their roles' permissions resolved to a bit
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
type permSet uint32

var permBits = func() map[opgate.Permission]uint8 {
	m := map[opgate.Permission]uint8{}
	for i, e := range roles.Catalog() {
		if i >= 32 {
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
	// epoch is the store's authz epoch this set was read or checked at,
	// 0 when never.
	epoch int64
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

// grantEntry is what a decision reads of a grant, 40 bytes: at a hundred
// thousand operators the index does not fit in the CPU's caches, and a
// decision's cost is the memory it touches.
type grantEntry struct {
	perms permSet
	site  uint32 // in the index's site table; allSites is "*"
	from  int64  // live from (inclusive)
	until int64  // live until (exclusive); MaxInt64: no end
	id    opgate.GrantID
}

// entry is one operator's rights at one version. It is never changed once
// published. The index keeps entries by value in its maps: a decision
// then reaches the grants from the map's own slot, one dependent memory
// read fewer.
type entry struct {
	id         opgate.OperatorID
	version    int64
	epoch      int64 // the store's authz epoch it was read or checked at, 0 when never
	validUntil int64
	rolesVer   int64   // the roles version perms were resolved against
	any        permSet // every permission some grant's role gives
	state      uint8
	grants     []grantEntry    // in grant ID order, the order Decide meets them
	roles      []opgate.RoleID // beside grants: what their perms were resolved from
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

func newEntryOf(o OperatorState, rs *roleSet) entry {
	return entry{id: o.ID, version: o.Version, state: stateOf(o.Status), validUntil: operatorEnd(o.ValidUntil), rolesVer: rs.version}
}

// newEntry builds an operator's entry from its state and grants (those of
// other operators and those not active are left out), in grant ID order,
// so that the allowing grant named is the one Decide names.
func (x *Index) newEntry(o OperatorState, gs []Grant, rs *roleSet) *entry {
	e := newEntryOf(o, rs)
	order := make([]int32, len(gs))
	for i := range order {
		order[i] = int32(i)
	}
	sortByGrantID(gs, order)
	for _, i := range order {
		x.add(&e, &gs[i], rs)
	}
	return &e
}

func sortByGrantID(gs []Grant, order []int32) {
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(string(gs[a].ID), string(gs[b].ID)) })
}

func (x *Index) add(e *entry, g *Grant, rs *roleSet) {
	if g.Status != Active || g.OperatorID != e.id {
		return
	}
	perms := rs.perms[g.RoleID]
	e.grants = append(e.grants, grantEntry{perms: perms, site: x.siteID(g.SiteID), from: nanos(g.ValidFrom), until: endNanos(g.ValidUntil), id: g.ID})
	e.roles = append(e.roles, g.RoleID)
	e.any |= perms
}

// withRoles is e with its grants' permissions resolved against rs.
func (e *entry) withRoles(rs *roleSet) *entry {
	if e.rolesVer == rs.version {
		return e
	}
	c := *e
	c.rolesVer, c.any = rs.version, 0
	c.grants = slices.Clone(e.grants)
	for i := range c.grants {
		c.grants[i].perms = rs.perms[c.roles[i]]
		c.any |= c.grants[i].perms
	}
	return &c
}

// decide is Decide over the entry (nil: no such operator).
func (e *entry) decide(perm opgate.Permission, site opgate.SiteID, now time.Time, sites *siteTable) Decision {
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
	if e.any&bit == 0 {
		return Decision{Reason: ReasonNoGrant}
	}
	want, looked := noSite, false
	elsewhere := false
	for i := range e.grants {
		g := &e.grants[i]
		if g.perms&bit == 0 || t < g.from || t >= g.until {
			continue
		}
		if !looked {
			want, looked = sites.lookup(site), true
		}
		if g.site == allSites || g.site == want {
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
func (e *entry) hasGrantAt(site opgate.SiteID, now time.Time, sites *siteTable) bool {
	if e == nil {
		return false
	}
	t, want := nanos(now), sites.lookup(site)
	for _, g := range e.grants {
		if t >= g.from && t < g.until && (g.site == want || g.site == allSites) {
			return true
		}
	}
	return false
}

// siteTable numbers the sites grants name, so that a grant keeps four
// bytes instead of a string, and a decision compares integers. It only
// grows (a new table replaces it), so an entry's numbers stay valid in
// every table published after it was built.
type siteTable struct {
	ids   map[opgate.SiteID]uint32
	names []opgate.SiteID
}

const (
	allSites uint32 = 0
	noSite   uint32 = math.MaxUint32 // a site no grant names
)

func (t *siteTable) lookup(s opgate.SiteID) uint32 {
	if id, ok := t.ids[s]; ok {
		return id
	}
	return noSite
}

// siteID numbers s, adding it to the table if it is new.
func (x *Index) siteID(s opgate.SiteID) uint32 {
	if id, ok := x.sites.Load().ids[s]; ok {
		return id
	}
	x.addSites(map[opgate.SiteID]bool{s: true})
	return x.sites.Load().ids[s]
}

// addSites adds the sites the table lacks, with one copy of it.
func (x *Index) addSites(ss map[opgate.SiteID]bool) {
	x.siteMu.Lock()
	defer x.siteMu.Unlock()
	old := x.sites.Load()
	t := &siteTable{ids: maps.Clone(old.ids), names: slices.Clip(old.names)}
	for s := range ss {
		if _, ok := t.ids[s]; !ok {
			t.ids[s] = uint32(len(t.names))
			t.names = append(t.names, s)
		}
	}
	if len(t.names) > len(old.names) {
		x.sites.Store(t)
	}
}

// Index is the in-memory decision index. It is safe for concurrent use:
// readers take a shard's read lock for one map lookup; writers replace
// whole entries.
type Index struct {
	roles  atomic.Pointer[roleSet]
	sites  atomic.Pointer[siteTable]
	siteMu sync.Mutex // serialises additions to sites
	shards [indexShards]indexShard
}

// indexShards spreads writers (reloads after changes) so that they rarely
// block readers of other operators.
const indexShards = 64

type indexShard struct {
	mu sync.RWMutex
	m  map[opgate.OperatorID]entry
	_  [40]byte // keeps neighbouring shards' locks off one cache line
}

// NewIndex returns an empty index; decisions fill it as they meet
// operators, or Load fills it at once.
func NewIndex() *Index {
	x := &Index{}
	x.sites.Store(&siteTable{ids: map[opgate.SiteID]uint32{opgate.AllSites: allSites}, names: []opgate.SiteID{opgate.AllSites}})
	for i := range x.shards {
		x.shards[i].m = map[opgate.OperatorID]entry{}
	}
	return x
}

// shard picks an operator's shard from the last two characters of its ID
// (random in issued IDs), sparing a second hash of the whole ID before the
// map's own.
func shardOf(op opgate.OperatorID) uint {
	n := len(op)
	if n < 2 {
		return uint(n)
	}
	return (uint(op[n-1]) + 31*uint(op[n-2])) % indexShards
}

func (x *Index) get(op opgate.OperatorID) (entry, bool) {
	sh := &x.shards[shardOf(op)]
	sh.mu.RLock()
	e, ok := sh.m[op]
	sh.mu.RUnlock()
	return e, ok
}

func (x *Index) put(e *entry) {
	sh := &x.shards[shardOf(e.id)]
	sh.mu.Lock()
	sh.m[e.id] = *e
	sh.mu.Unlock()
}

// Load replaces the index's content with st. The entries' grants share
// one array, in operator order, so that loading allocates little and the
// collector has few objects to trace.
func (x *Index) Load(st State) {
	rs := newRoleSet(st.RolesVersion, st.Roles)
	pos := make(map[opgate.OperatorID]int32, len(st.Operators))
	for i, o := range st.Operators {
		pos[o.ID] = int32(i)
	}
	// Counting sort of the grants by operator.
	start := make([]int32, len(st.Operators)+1)
	owner := make([]int32, len(st.Grants))
	for i := range st.Grants {
		owner[i] = -1
		if g := &st.Grants[i]; g.Status == Active {
			if p, ok := pos[g.OperatorID]; ok {
				owner[i] = p
				start[p+1]++
			}
		}
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	order := make([]int32, len(st.Grants))
	next := slices.Clone(start[:len(st.Operators)])
	for i, p := range owner {
		if p >= 0 {
			order[next[p]] = int32(i)
			next[p]++
		}
	}
	// Adding a site to the table copies it: add them all first, at once.
	seen := map[opgate.SiteID]bool{}
	for i := range st.Grants {
		if owner[i] >= 0 {
			seen[st.Grants[i].SiteID] = true
		}
	}
	x.addSites(seen)
	n := start[len(st.Operators)]
	grants, rls := make([]grantEntry, n), make([]opgate.RoleID, n)
	entries := make([]entry, len(st.Operators))
	for i, o := range st.Operators {
		e := &entries[i]
		*e = newEntryOf(o, rs)
		a, b := start[i], start[i+1]
		e.grants, e.roles = grants[a:a:b], rls[a:a:b]
		mine := order[a:b]
		sortByGrantID(st.Grants, mine)
		for _, g := range mine {
			x.add(e, &st.Grants[g], rs)
		}
	}
	var fresh [indexShards]map[opgate.OperatorID]entry
	for i := range fresh {
		fresh[i] = make(map[opgate.OperatorID]entry, len(st.Operators)/indexShards*5/4+1)
	}
	for i := range entries {
		fresh[shardOf(entries[i].id)][entries[i].id] = entries[i]
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
	e, ok := x.get(op)
	if !ok {
		return Decision{Reason: ReasonUnknownOperator}
	}
	if rs := x.roles.Load(); rs != nil && e.rolesVer != rs.version {
		return e.withRoles(rs).decide(perm, site, now, x.sites.Load())
	}
	return e.decide(perm, site, now, x.sites.Load())
}
