-- +goose Up
-- The site a transfer was scheduled from: at its effective time it moves
-- the operator only if they are still there. '' for changes scheduled
-- before this column, which are judged as before.
ALTER TABLE scheduled_changes ADD COLUMN from_site_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE scheduled_changes DROP COLUMN from_site_id;
