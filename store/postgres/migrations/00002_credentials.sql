-- +goose Up
-- Passwords are argon2id PHC strings; never the password itself (CL 11-5).
CREATE TABLE passwords (
    operator_id TEXT PRIMARY KEY REFERENCES operators (operator_id),
    hash TEXT NOT NULL,
    temporary BOOLEAN NOT NULL,
    set_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- The last N passwords, so none is reused (CL 17-4).
CREATE TABLE password_history (
    operator_id TEXT NOT NULL REFERENCES operators (operator_id),
    set_at BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (operator_id, set_at)
);
-- Card enrollment codes, kept as their SHA-256, single use (R2.5).
CREATE TABLE enrollments (
    code_hash BYTEA PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators (operator_id),
    card_serial TEXT NOT NULL,
    label TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX enrollments_operator ON enrollments (operator_id);

-- +goose Down
DROP TABLE enrollments;
DROP TABLE password_history;
DROP TABLE passwords;
