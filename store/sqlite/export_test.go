package sqlite

import (
	"context"
	"database/sql"
)

// OpenAt opens path as a database migrated only up to version, as an
// older release left it.
func OpenAt(ctx context.Context, path string, version int64) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, err
	}
	p, err := provider(db)
	if err == nil {
		_, err = p.UpTo(ctx, version)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}
