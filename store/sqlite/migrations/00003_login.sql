-- +goose Up
-- Judged failures inside the lockout window, and attempt slots being
-- judged, as JSON arrays: the lockout counts exactly across replicas.
ALTER TABLE login_locks ADD COLUMN recent TEXT NOT NULL DEFAULT '[]';
ALTER TABLE login_locks ADD COLUMN pending TEXT NOT NULL DEFAULT '[]';
-- Emergency stops in force (R6.2): '*' for everything or a site ID.
CREATE TABLE emergency_stops (
    scope TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    stopped_by TEXT NOT NULL,
    stopped_at BIGINT NOT NULL
);
-- Service keys for introspection, kept as their SHA-256.
CREATE TABLE service_keys (
    name TEXT PRIMARY KEY,
    key_hash BLOB NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- +goose Down
DROP TABLE service_keys;
DROP TABLE emergency_stops;
ALTER TABLE login_locks DROP COLUMN pending;
ALTER TABLE login_locks DROP COLUMN recent;
