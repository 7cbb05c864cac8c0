package authz_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/sqlite"
)

// The data set of the decision benchmarks: 100,000 operators, 500,000
// grants over 1,700 sites, the built-in roles and three custom ones, built
// once per process from a fixed seed.
const (
	benchOperators = 100_000
	benchGrants    = 500_000
	benchSites     = 1_700
	benchQueries   = 1 << 16
)

var benchNow = time.Date(2027, 4, 1, 10, 0, 0, 0, time.UTC)

type benchQuery struct {
	op   opgate.OperatorID
	perm opgate.Permission
	site opgate.SiteID
}

type benchData struct {
	state   authz.State
	home    map[opgate.OperatorID]opgate.SiteID
	sites   []opgate.SiteID
	queries []benchQuery
}

var (
	benchOnce sync.Once
	benchSet  *benchData
)

func site(i int) opgate.SiteID { return opgate.SiteID(fmt.Sprintf("site-%04d", i)) }

// pick returns an item of weighted choices.
func pick[T any](r *rand.Rand, items []T, weights []int) T {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return items[i]
		}
		n -= w
	}
	return items[len(items)-1]
}

// benchState builds the data set; every condition of a decision occurs in
// it: suspended, retired and expired operators, IDs ending in the past and
// the future, grants not yet begun, time-bound grants ended but not yet
// swept, grants at other sites and at every site.
func benchState() *benchData {
	benchOnce.Do(func() {
		r := rand.New(rand.NewPCG(2027, 4))
		d := &benchData{home: make(map[opgate.OperatorID]opgate.SiteID, benchOperators)}
		for i := range benchSites {
			d.sites = append(d.sites, site(i))
		}
		st := &d.state
		st.RolesVersion = 1
		st.Roles = append(roles.BuiltIn(),
			roles.Role{ID: "restricted_reader", Name: "支援措置対応", Permissions: []opgate.Permission{roles.ResidentRead, roles.ResidentReadRestricted}},
			roles.Role{ID: "exporter", Name: "一括出力", Permissions: []opgate.Permission{roles.ResidentBulkExport}},
			roles.Role{ID: "issuer", Name: "交付", Permissions: []opgate.Permission{roles.CertificateIssue, roles.CardIssue}},
		)
		statuses := []lifecycle.Status{lifecycle.Active, lifecycle.Suspended, lifecycle.Retired, lifecycle.Expired}
		ops := make([]opgate.OperatorID, benchOperators)
		for i := range benchOperators {
			o := authz.OperatorState{ID: opgate.OperatorID(fmt.Sprintf("OP-%06d", i)), Status: pick(r, statuses, []int{96, 2, 1, 1}), Version: 1}
			if r.IntN(10) == 0 {
				o.ValidUntil = benchNow.Add(time.Duration(r.IntN(400*24)-30*24) * time.Hour)
			}
			ops[i] = o.ID
			d.home[o.ID] = d.sites[r.IntN(benchSites)]
			st.Operators = append(st.Operators, o)
		}
		roleIDs := []opgate.RoleID{roles.CounterClerk, roles.CounterViewer, roles.SectionChief, "issuer", "restricted_reader", "exporter", roles.SecurityAdmin, roles.Auditor}
		roleWeights := []int{450, 250, 80, 100, 70, 20, 15, 15}
		for i := range benchGrants {
			op := ops[r.IntN(benchOperators)]
			g := authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-%07d", i)), OperatorID: op, RoleID: pick(r, roleIDs, roleWeights), Status: authz.Active, SiteID: d.home[op]}
			switch {
			case roles.AllSitesAllowed(g.RoleID):
				g.SiteID = opgate.AllSites
			case r.IntN(10) == 0:
				g.SiteID = d.sites[r.IntN(benchSites)]
			}
			g.ValidFrom = benchNow.Add(-time.Duration(r.IntN(2*365*24)) * time.Hour)
			if r.IntN(33) == 0 {
				g.ValidFrom = benchNow.Add(time.Duration(r.IntN(30*24)+1) * time.Hour) // begins later
			}
			if r.IntN(7) == 0 {
				g.ValidUntil = benchNow.Add(time.Duration(r.IntN(190*24)-10*24) * time.Hour) // some ended, unswept
			}
			st.Grants = append(st.Grants, g)
		}
		perms := []opgate.Permission{roles.ResidentRead, roles.CertificateIssue, roles.ResidentUpdate, roles.CardIssue, roles.ResidentReadRestricted,
			roles.OperatorManage, roles.GrantManage, roles.AuditRead, roles.ResidentBulkExport, "resident.delete_everything"}
		permWeights := []int{400, 200, 150, 60, 50, 40, 40, 30, 20, 10}
		for range benchQueries {
			op := ops[r.IntN(benchOperators)]
			q := benchQuery{op: op, perm: pick(r, perms, permWeights), site: d.home[op]}
			if r.IntN(10) == 0 {
				q.site = d.sites[r.IntN(benchSites)]
			}
			if r.IntN(100) == 0 {
				q.op = opgate.OperatorID(fmt.Sprintf("OP-%06d", benchOperators+r.IntN(1000))) // unknown
			}
			d.queries = append(d.queries, q)
		}
		benchSet = d
	})
	return benchSet
}

// heapAfterGC is the live heap.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

var (
	indexOnce sync.Once
	benchIdx  *authz.Index
)

// benchIndex loads the data set into an index once, and logs how long
// that took and the heap it keeps.
func benchIndex(b *testing.B) *authz.Index {
	indexOnce.Do(func() {
		d := benchState()
		before := heapAfterGC()
		began := time.Now()
		x := authz.NewIndex()
		x.Load(d.state)
		took := time.Since(began)
		// The index keeps its own copies of nothing it can share with the
		// rows (IDs are the rows' strings), so what it keeps is measured
		// with the rows alive: its maps, entries and grant slices.
		after := heapAfterGC()
		b.Logf("opgate index: %d operators, %d grants loaded from memory in %v; heap kept by the index %.1f MB",
			benchOperators, benchGrants, took.Round(time.Millisecond), float64(after-before)/(1<<20))
		benchIdx = x
	})
	return benchIdx
}

// The casbin model: RBAC with domains, a domain being a site; a grant at
// every site is a grouping in domain "*".
const casbinModel = `
[request_definition]
r = sub, dom, act

[policy_definition]
p = sub, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.act == p.act && (g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "*"))
`

var (
	casbinOnce sync.Once
	casbinE    *casbin.SyncedCachedEnforcer
)

// benchCasbin loads the same policy into casbin once: p lines map a role to
// a permission, g lines an operator to a role at a site. casbin has no
// notion of an operator's status, of validity or of a grant's dates, so it
// is given the easier job: only the grants live at benchNow, of operators
// active then. The cached enforcer's own SyncedEnforcer answers the
// uncached questions, from the same model.
func benchCasbin(b *testing.B) *casbin.SyncedCachedEnforcer {
	casbinOnce.Do(func() {
		d := benchState()
		x := benchIndex(b)
		before := heapAfterGC()
		began := time.Now()
		m, err := model.NewModelFromString(casbinModel)
		if err != nil {
			b.Fatal(err)
		}
		var p, g [][]string
		for _, r := range d.state.Roles {
			for _, perm := range r.Permissions {
				p = append(p, []string{string(r.ID), string(perm)})
			}
		}
		live := map[opgate.OperatorID]bool{}
		for _, o := range d.state.Operators {
			live[o.ID] = o.Status == lifecycle.Active && (o.ValidUntil.IsZero() || benchNow.Before(o.ValidUntil))
		}
		for _, gr := range d.state.Grants {
			if live[gr.OperatorID] && gr.Live(benchNow) {
				g = append(g, []string{string(gr.OperatorID), string(gr.RoleID), string(gr.SiteID)})
			}
		}
		if err := m.AddPolicies("p", "p", p); err != nil {
			b.Fatal(err)
		}
		if err := m.AddPolicies("g", "g", g); err != nil {
			b.Fatal(err)
		}
		e, err := casbin.NewSyncedCachedEnforcer(m)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.BuildRoleLinks(); err != nil {
			b.Fatal(err)
		}
		took := time.Since(began)
		after := heapAfterGC()
		// Warm the cache with every question of the mix, and check that
		// casbin and the index agree on each.
		allowed := 0
		for _, q := range d.queries {
			got, err := e.Enforce(string(q.op), string(q.site), string(q.perm))
			if err != nil {
				b.Fatal(err)
			}
			want := x.Decide(q.op, q.perm, q.site, benchNow)
			if got != want.Allowed {
				b.Fatalf("casbin says %v, the index %+v, for %+v", got, want, q)
			}
			if got {
				allowed++
			}
		}
		b.Logf("casbin: %d p and %d g lines loaded in %v; heap kept %.1f MB; %d of %d questions of the mix allowed, both agree on all",
			len(p), len(g), took.Round(time.Millisecond), float64(after-before)/(1<<20), allowed, len(d.queries))
		casbinE = e
	})
	return casbinE
}

// BenchmarkDecision compares one decision on the index with casbin's
// synced enforcer and its cached one (warm: every question of the mix
// already cached), on the same policy and question mix: a random
// operator, a weighted random permission, its home site mostly, another
// site sometimes, an unknown operator now and then.
func BenchmarkDecision(b *testing.B) {
	d := benchState()
	q := d.queries
	b.Run("opgate-index", func(b *testing.B) {
		x := benchIndex(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			qq := &q[i&(benchQueries-1)]
			_ = x.Decide(qq.op, qq.perm, qq.site, benchNow)
			i++
		}
	})
	b.Run("opgate-index-parallel", func(b *testing.B) {
		x := benchIndex(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(benchQueries)
			for pb.Next() {
				qq := &q[i&(benchQueries-1)]
				_ = x.Decide(qq.op, qq.perm, qq.site, benchNow)
				i++
			}
		})
	})
	b.Run("casbin-synced", func(b *testing.B) {
		e := benchCasbin(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			qq := &q[i&(benchQueries-1)]
			if _, err := e.SyncedEnforcer.Enforce(string(qq.op), string(qq.site), string(qq.perm)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("casbin-synced-cached", func(b *testing.B) {
		e := benchCasbin(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			qq := &q[i&(benchQueries-1)]
			if _, err := e.Enforce(string(qq.op), string(qq.site), string(qq.perm)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("casbin-synced-cached-parallel", func(b *testing.B) {
		e := benchCasbin(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(benchQueries)
			for pb.Next() {
				qq := &q[i&(benchQueries-1)]
				if _, err := e.Enforce(string(qq.op), string(qq.site), string(qq.perm)); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkIndexLoad is the time to fill an index with the data set: from
// rows already in memory, and from SQLite and PostgreSQL through the bulk
// read (LoadAuthz) that a server runs at start.
func BenchmarkIndexLoad(b *testing.B) {
	d := benchState()
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			authz.NewIndex().Load(d.state)
		}
	})
	b.Run("sqlite", func(b *testing.B) {
		db, err := sqlite.Open(b.Context(), b.TempDir()+"/opgate.db")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		benchLoadStore(b, db, func(q string) error { _, err := db.W.ExecContext(b.Context(), q); return err })
	})
	b.Run("postgres", func(b *testing.B) {
		db, err := postgres.Open(b.Context(), testenv.PostgresURL(b), postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		benchLoadStore(b, db, func(q string) error { _, err := db.W.ExecContext(b.Context(), q); return err })
	})
}

// benchLoadStore writes the data set with multi-row INSERTs (the database's
// triggers run as for any write), then times the bulk read and the index
// built from it.
func benchLoadStore(b *testing.B, s store.Store, exec func(string) error) {
	d := benchState()
	began := time.Now()
	insert := func(head string, n int, row func(i int) string) {
		const batch = 1000
		var sb strings.Builder
		for i := 0; i < n; i += batch {
			sb.Reset()
			sb.WriteString(head)
			for j := i; j < min(i+batch, n); j++ {
				if j > i {
					sb.WriteByte(',')
				}
				sb.WriteString(row(j))
			}
			if err := exec(sb.String()); err != nil {
				b.Fatal(err)
			}
		}
	}
	us := func(t time.Time) string {
		if t.IsZero() {
			return "NULL"
		}
		return fmt.Sprint(t.UnixMicro())
	}
	now := benchNow.UnixMicro()
	insert(`INSERT INTO sites (site_id, name, municipality_code, created_at) VALUES `, benchSites, func(i int) string {
		return fmt.Sprintf("('%s', '拠点', '132152', %d)", d.sites[i], now)
	})
	insert(`INSERT INTO operators (operator_id, staff_number, name, site_id, employment_type, status, valid_until, issued_at, issued_by, status_changed_at) VALUES `,
		benchOperators, func(i int) string {
			o := d.state.Operators[i]
			return fmt.Sprintf("('%s', '%s', '職員', '%s', 'regular', '%s', %s, %d, 'OP-admin', %d)", o.ID, o.ID, d.home[o.ID], o.Status, us(o.ValidUntil), now, now)
		})
	insert(`INSERT INTO grants (grant_id, operator_id, role_id, site_id, status, granted_by, approved_by, reason, created_at, valid_from, valid_until, ended_at, ended_by, end_reason) VALUES `,
		benchGrants, func(i int) string {
			g := d.state.Grants[i]
			return fmt.Sprintf("('%s', '%s', '%s', '%s', 'active', 'OP-admin', '', '配属', %d, %s, %s, NULL, '', '')", g.ID, g.OperatorID, g.RoleID, g.SiteID, now, us(g.ValidFrom), us(g.ValidUntil))
		})
	if err := s.InTx(b.Context(), func(tx store.Tx) error {
		for _, r := range d.state.Roles {
			if err := tx.PutRole(context.Background(), r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.Logf("data set written in %v", time.Since(began).Round(time.Millisecond))
	svc, err := authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: s}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		n, err := svc.LoadIndex(b.Context())
		if err != nil || n != benchOperators {
			b.Fatalf("LoadIndex: %d operators, %v", n, err)
		}
	}
}
