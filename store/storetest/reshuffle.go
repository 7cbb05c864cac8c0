package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/internal/clock/clocktest"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/store"
)

// ReshuffleSize is the April 1 reshuffle of the benchmark: this many
// operators, each with a grant, a card and a live session, transferred by
// changes dated ahead and applied by the scheduler.
const ReshuffleSize = 20000

// BenchReshuffle measures the scheduler applying ReshuffleSize dated
// transfers with every grant, card, session and event, and, in the same
// run, the baseline of writing the same number of rows with plain
// single-row INSERTs in transactions of the same size. raw is the store's
// own connection pool; numbered says whether it takes $1 placeholders.
func BenchReshuffle(b *testing.B, open func(b *testing.B) (store.Store, *sql.DB, bool)) {
	b.Run("scheduler", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			st, _, _ := open(b)
			clk := clocktest.New()
			effective := setupReshuffle(b, st, clk, ReshuffleSize)
			svc, err := lifecycle.New(lifecycle.Config{DB: store.Runner[lifecycle.Tx]{S: st}, Authorizer: lifecycle.AllowAll{}, Clock: clk})
			if err != nil {
				b.Fatal(err)
			}
			clk.Set(effective)
			b.StartTimer()
			start := time.Now()
			n, err := svc.Sweep(context.Background())
			elapsed := time.Since(start)
			b.StopTimer()
			if err != nil || n != ReshuffleSize {
				b.Fatalf("sweep applied %d, err %v", n, err)
			}
			b.ReportMetric(float64(n)/elapsed.Seconds(), "transfers/s")
			b.ReportMetric(elapsed.Seconds(), "s/reshuffle")
			checkReshuffle(b, st)
		}
	})
	b.Run("baseline-plain-inserts", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			_, raw, numbered := open(b)
			if _, err := raw.Exec(`CREATE TABLE bench_rows (id TEXT PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			q := `INSERT INTO bench_rows (id, kind, payload) VALUES (?, ?, ?)`
			if numbered {
				q = `INSERT INTO bench_rows (id, kind, payload) VALUES ($1, $2, $3)`
			}
			// The scheduler writes per transfer: the operator, its grant,
			// card and session, the change, and five events.
			const rowsPerTransfer = 10
			payload := strings.Repeat("x", 120)
			b.StartTimer()
			start := time.Now()
			for batch := 0; batch < ReshuffleSize; batch += 200 {
				tx, err := raw.Begin()
				if err != nil {
					b.Fatal(err)
				}
				for i := batch; i < batch+200 && i < ReshuffleSize; i++ {
					for k := range rowsPerTransfer {
						if _, err := tx.Exec(q, fmt.Sprintf("%d-%d", i, k), "row", payload); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(ReshuffleSize)/elapsed.Seconds(), "transfers/s")
			b.ReportMetric(elapsed.Seconds(), "s/reshuffle")
		}
	})
}

func setupReshuffle(b *testing.B, st store.Store, clk *clocktest.Clock, n int) time.Time {
	ctx := context.Background()
	now := clk.Now()
	effective := now.Add(24 * time.Hour)
	err := st.InTx(ctx, func(tx store.Tx) error {
		for _, id := range []opgate.SiteID{"honcho", "kita"} {
			if err := tx.CreateSite(ctx, lifecycle.Site{ID: id, Name: string(id), MunicipalityCode: "132152", CreatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for start := 0; start < n; start += 1000 {
		err := st.InTx(ctx, func(tx store.Tx) error {
			for i := start; i < start+1000 && i < n; i++ {
				op := opgate.OperatorID(fmt.Sprintf("OP-%08d", i))
				if err := tx.CreateOperator(ctx, lifecycle.Operator{ID: op, StaffNumber: fmt.Sprint(i), Name: "職員", SiteID: "honcho",
					EmploymentType: lifecycle.Regular, Status: lifecycle.Active, IssuedAt: now, StatusChanged: now}); err != nil {
					return err
				}
				if err := tx.CreateGrant(ctx, authz.Grant{ID: opgate.GrantID(fmt.Sprintf("G-%08d", i)), OperatorID: op, RoleID: "counter_clerk",
					SiteID: "honcho", Status: authz.Active, GrantedBy: "OP-CHIEF", Reason: "配属", CreatedAt: now, ValidFrom: now}); err != nil {
					return err
				}
				if err := tx.CreateCard(ctx, authn.Card{ID: opgate.CardID(fmt.Sprintf("C-%08d", i)), OperatorID: op, Serial: fmt.Sprint(i),
					Status: authn.CardActive, CredentialID: []byte(fmt.Sprintf("cred-%d", i)), PublicKey: []byte("k"), EnrolledAt: now, StatusChanged: now}); err != nil {
					return err
				}
				if err := tx.CreateSession(ctx, authn.Session{ID: opgate.SessionID(fmt.Sprintf("S-%08d", i)), OperatorID: op, SiteID: "honcho",
					TerminalID: "t1", CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(48 * time.Hour), RefreshHash: []byte("r")}); err != nil {
					return err
				}
				if err := tx.CreateChange(ctx, lifecycle.Change{ID: opgate.ChangeID(fmt.Sprintf("CH-%08d", i)), OperatorID: op, Kind: lifecycle.ChangeTransfer,
					ToSiteID: "kita", Reason: "4月1日付人事異動", EffectiveAt: effective, CreatedBy: "OP-CHIEF", CreatedAt: now, Status: lifecycle.ChangePending}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return effective
}

// checkReshuffle makes sure the benchmark measured the whole work: every
// operator moved with no right left behind.
func checkReshuffle(b *testing.B, st store.Store) {
	ctx := context.Background()
	err := st.View(ctx, func(tx store.Tx) error {
		left, err := tx.ListGrants(ctx, authz.GrantFilter{Status: authz.Active, Limit: 10})
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("%d grants still active", len(left))
		}
		ops, err := tx.ListOperators(ctx, lifecycle.OperatorFilter{SiteID: "honcho", Limit: 10})
		if err != nil {
			return err
		}
		if len(ops) > 0 {
			return fmt.Errorf("operators still at the old site")
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
