package authz_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/internal/testenv"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/postgres"
	"github.com/opgate/opgate/store/sqlite"
)

// BenchmarkCheckDurable is the decision point as the server runs it, less
// HTTP: 32 callers at once, each decision checked against the store (its
// versions, or on SQLite its authz epoch) and recorded in the history
// before it returns, with group commit. Its baseline, in the same run, is
// the floor of that record: the same callers appending an authz.decided
// event of the same shape, each in a transaction of its own, with nothing
// to decide or read.
func BenchmarkCheckDurable(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		db, err := sqlite.Open(b.Context(), b.TempDir()+"/opgate.db")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		benchCheckDurable(b, db)
	})
	b.Run("postgres", func(b *testing.B) {
		db, err := postgres.Open(b.Context(), testenv.PostgresURL(b), postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		benchCheckDurable(b, db)
	})
}

// The questions of cmd/opgate-load: mostly reads at the terminal's own
// site, and refusals that walk further (a restricted record without the
// permission, a bulk export without an approval, another site's record).
var benchChecks = func() []authz.CheckRequest {
	var out []authz.CheckRequest
	add := func(n int, action opgate.Permission, site opgate.SiteID, restricted bool) {
		for i := range n {
			out = append(out, authz.CheckRequest{TerminalID: "T-HONCHO", TerminalSite: "honcho", Action: action, Purpose: "窓口での本人確認",
				Resource: authz.Resource{Type: "resident", ID: fmt.Sprintf("R-%06d", i), SiteID: site, Restricted: restricted}})
		}
	}
	add(16, roles.ResidentRead, "honcho", false)
	add(1, roles.ResidentUpdate, "honcho", true)
	add(1, roles.ResidentBulkExport, "honcho", false)
	add(2, roles.ResidentRead, "kita", false)
	return out
}()

func benchCheckDurable(b *testing.B, st store.Store) {
	const operators = 128
	ctx := b.Context()
	t0 := time.Now().Add(-time.Hour)
	ops := make([]opgate.OperatorID, operators)
	if err := st.InTx(ctx, func(tx store.Tx) error {
		if err := authz.SeedRoles(ctx, tx); err != nil {
			return err
		}
		for _, s := range []opgate.SiteID{"honcho", "kita"} {
			if err := tx.CreateSite(ctx, lifecycle.Site{ID: s, Name: string(s), MunicipalityCode: "132152", CreatedAt: t0}); err != nil {
				return err
			}
		}
		for i := range ops {
			ops[i] = opgate.OperatorID(fmt.Sprintf("OP-%04d", i))
			if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: ops[i], StaffNumber: string(ops[i]), Name: "職員", SiteID: "honcho",
				EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: t0, StatusChanged: t0}); err != nil {
				return err
			}
			if err := tx.CreateGrant(ctx, authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-%04d", i)), OperatorID: ops[i], RoleID: roles.CounterClerk,
				SiteID: "honcho", Status: authz.Active, GrantedBy: "OP-CHIEF", Reason: "bench", CreatedAt: t0, ValidFrom: t0,
				ValidUntil: t0.Add(24 * time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	svc, err := authz.New(authz.Config{DB: store.Runner[authz.Tx]{S: st}, Clock: clock.Real{}})
	if err != nil {
		b.Fatal(err)
	}
	// 32 callers on this machine's two cores, as cmd/opgate-load runs.
	parallel := func(b *testing.B, op func(i int) error) {
		var next atomic.Int64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(int(next.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("append", func(b *testing.B) {
		parallel(b, func(i int) error {
			q := benchChecks[i%len(benchChecks)]
			op := ops[i%len(ops)]
			return st.InTx(ctx, func(tx store.Tx) error {
				_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.AuthzDecided, At: time.Now(), ActorID: op, OperatorID: op,
					SiteID: q.Resource.SiteID, TerminalID: q.TerminalID, Resource: q.Resource.Type + ":" + q.Resource.ID, Reason: authz.ReasonAllowed,
					Data: audit.D(map[string]any{"decision_id": fmt.Sprintf("D-%016d", i), "action": string(q.Action), "resource_type": q.Resource.Type,
						"resource_site_id": string(q.Resource.SiteID), "restricted": q.Resource.Restricted, "allowed": true, "reason": authz.ReasonAllowed,
						"session_id": "S-BENCH", "purpose": q.Purpose, "grant_id": fmt.Sprintf("G-%04d", i%len(ops))})})
				return err
			})
		})
	})
	b.Run("check", func(b *testing.B) {
		var allowed atomic.Int64
		parallel(b, func(i int) error {
			q := benchChecks[i%len(benchChecks)]
			q.OperatorID, q.SessionID = ops[i%len(ops)], "S-BENCH"
			c, err := svc.Check(ctx, q, true)
			if c.Allowed {
				allowed.Add(1)
			}
			return err
		})
		if want := int64(b.N) * 16 / 20; allowed.Load() < want*9/10 {
			b.Errorf("%d of %d decisions allowed, want about %d", allowed.Load(), b.N, want)
		}
	})
}
