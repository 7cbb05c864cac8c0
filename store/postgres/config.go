package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5"
)

func pgconnConfig(url string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// The parse error can echo the URL, password included.
		return nil, fmt.Errorf("postgres: invalid database URL")
	}
	return cfg, nil
}
