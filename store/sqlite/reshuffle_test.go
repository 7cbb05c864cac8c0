package sqlite_test

import (
	"database/sql"
	"testing"

	"github.com/opgate/opgate/store"
	"github.com/opgate/opgate/store/storetest"
)

func BenchmarkReshuffle(b *testing.B) {
	storetest.BenchReshuffle(b, func(b *testing.B) (store.Store, *sql.DB, bool) {
		db := open(b)
		return db, db.W, false
	})
}
