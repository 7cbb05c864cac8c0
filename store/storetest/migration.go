package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/store"
)

// GrantUsesCarriedOver checks that migration 00008, which moves the last
// use of each grant from an index over the history into a table of its
// own, fills that table from the decisions already in the history. insert
// writes one audit_events row into a database migrated to version 7;
// upgrade opens it as a store, which applies the later migrations.
func GrantUsesCarriedOver(t *testing.T, insert func(seq, at int64, typ, data string) error, upgrade func() store.Store) {
	micros := func(day, hour int) int64 { return ts(day, hour, 0).UnixMicro() }
	for i, r := range []struct {
		at   int64
		typ  string
		data string
	}{
		{micros(2, 9), "authz.decided", `{"allowed":true,"grant_id":"g-1","reason":"allowed"}`},
		{micros(3, 9), "authz.decided", `{"allowed":true,"grant_id":"g-1","reason":"allowed"}`},
		{micros(2, 10), "authz.decided", `{"allowed":true,"grant_id":"g-2","reason":"allowed"}`},
		{micros(4, 9), "authz.decided", `{"allowed":false,"reason":"no_grant"}`},
		{micros(5, 9), "grant.revoked", `{"grant_id":"g-3"}`},
		{micros(5, 9), "site.created", ``},
	} {
		if err := insert(int64(i+1), r.at, r.typ, r.data); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	s := upgrade()
	got := read(t, s, func(ctx context.Context, tx store.Tx) (map[opgate.GrantID]time.Time, error) {
		return tx.LastUses(ctx, []opgate.GrantID{"g-1", "g-2", "g-3"})
	})
	diff(t, "LastUses after the migration", map[opgate.GrantID]time.Time{"g-1": ts(3, 9, 0), "g-2": ts(2, 10, 0)}, got)
}
