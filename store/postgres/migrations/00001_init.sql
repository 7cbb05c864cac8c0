-- +goose Up
-- Times are microseconds since the Unix epoch (BIGINT), identical in both
-- stores, so that what the audit hash covers is exactly what is kept.
CREATE TABLE sites (
    site_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    municipality_code TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE terminals (
    terminal_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites (site_id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    removed_at BIGINT
);
CREATE INDEX terminals_site ON terminals (site_id);
CREATE TABLE roles (
    role_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    conflicts_with TEXT NOT NULL,
    built_in BOOLEAN NOT NULL
);
CREATE TABLE operators (
    operator_id TEXT PRIMARY KEY,
    staff_number TEXT NOT NULL,
    name TEXT NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites (site_id),
    employment_type TEXT NOT NULL,
    status TEXT NOT NULL,
    valid_until BIGINT,
    issued_at BIGINT NOT NULL,
    issued_by TEXT NOT NULL,
    status_changed_at BIGINT NOT NULL,
    last_login_at BIGINT
);
-- R1.1: a staff member has at most one operator ID that is not retired.
CREATE UNIQUE INDEX operators_staff_live ON operators (staff_number) WHERE status <> 'retired';
CREATE INDEX operators_site ON operators (site_id, operator_id);
CREATE TABLE login_locks (
    operator_id TEXT PRIMARY KEY REFERENCES operators (operator_id),
    failures INTEGER NOT NULL,
    window_start BIGINT,
    locked_until BIGINT,
    permanent BOOLEAN NOT NULL,
    locks_in_row INTEGER NOT NULL
);
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators (operator_id),
    role_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    status TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    valid_from BIGINT,
    valid_until BIGINT,
    ended_at BIGINT,
    ended_by TEXT NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX grants_operator ON grants (operator_id);
CREATE INDEX grants_site_status ON grants (site_id, status);
CREATE TABLE cards (
    card_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators (operator_id),
    serial TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    credential_id BYTEA NOT NULL UNIQUE,
    public_key BYTEA NOT NULL,
    sign_count BIGINT NOT NULL,
    aaguid BYTEA NOT NULL,
    flags INTEGER NOT NULL,
    attestation TEXT NOT NULL,
    clone_suspected BOOLEAN NOT NULL,
    enrolled_at BIGINT NOT NULL,
    enrolled_by TEXT NOT NULL,
    status_changed_at BIGINT NOT NULL
);
CREATE INDEX cards_operator ON cards (operator_id);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    card_id TEXT NOT NULL,
    amr TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT NOT NULL,
    password_change_required BOOLEAN NOT NULL,
    refresh_hash BYTEA NOT NULL
);
CREATE INDEX sessions_operator_live ON sessions (operator_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_card_live ON sessions (card_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_site_live ON sessions (site_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE scheduled_changes (
    change_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators (operator_id),
    kind TEXT NOT NULL,
    to_site_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    effective_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    done_at BIGINT,
    error TEXT NOT NULL
);
CREATE INDEX scheduled_due ON scheduled_changes (effective_at) WHERE status = 'pending';
CREATE INDEX scheduled_operator ON scheduled_changes (operator_id);
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    operator_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    reason TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX audit_operator ON audit_events (operator_id, seq);
CREATE INDEX audit_actor ON audit_events (actor_id, seq);
CREATE INDEX audit_resource ON audit_events (resource, seq);
CREATE INDEX audit_type ON audit_events (type, seq);
CREATE INDEX audit_at ON audit_events (at);
-- The head row is locked by every append: it gives the chain one total
-- order across replicas, and lets verification notice a cut-off tail.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    anchor_seq BIGINT NOT NULL,
    anchor_hash BYTEA NOT NULL
);
INSERT INTO audit_head VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex'));
-- History is append-only (R4.2): the application never updates or deletes
-- an event, and the database refuses to.
-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TABLE policies (
    version BIGINT PRIMARY KEY,
    document TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    changed_by TEXT NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    pem BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    not_after BIGINT
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- +goose Down
DROP TABLE meta, signing_keys, policies, audit_head, audit_events, scheduled_changes,
    sessions, cards, grants, login_locks, operators, roles, terminals, sites;
DROP FUNCTION audit_events_append_only();
