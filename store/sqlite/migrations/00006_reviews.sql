-- +goose Up
-- Periodic permission reviews (R5.1, CL 18-2): a campaign is a snapshot of
-- the live grants of one site when it opened; each item keeps the hints a
-- reviewer saw and the decision taken on it.
CREATE TABLE review_campaigns (
    review_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    on_unreviewed TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT NOT NULL,
    schedule_id TEXT NOT NULL
);
CREATE INDEX review_campaigns_site ON review_campaigns (site_id, closed_at);
CREATE INDEX review_campaigns_open ON review_campaigns (due_at) WHERE status = 'open';
CREATE TABLE review_items (
    review_id TEXT NOT NULL REFERENCES review_campaigns (review_id),
    item_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    operator_id TEXT NOT NULL,
    operator_name TEXT NOT NULL,
    role_id TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    valid_until BIGINT,
    last_login_at BIGINT,
    last_used_at BIGINT,
    hints TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    decided_at BIGINT,
    PRIMARY KEY (review_id, item_id)
);
-- Campaigns opened by themselves every N months at a site.
CREATE TABLE review_schedules (
    schedule_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    every_months INTEGER NOT NULL,
    due_after_s BIGINT NOT NULL,
    on_unreviewed TEXT NOT NULL,
    next_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX review_schedules_next ON review_schedules (next_at);
-- The decision log is read by grant (last use of a grant), by type and
-- time (anomalies) and for restricted reads; these indexes keep those
-- reads to the rows they need.
CREATE INDEX audit_decided_grant ON audit_events ((json_extract(NULLIF(data, ''), '$.grant_id')), at) WHERE type = 'authz.decided';
CREATE INDEX audit_decided_restricted ON audit_events (at) WHERE type = 'authz.decided' AND json_extract(NULLIF(data, ''), '$.restricted') = 1;
CREATE INDEX audit_type_at ON audit_events (type, at);
-- Retention (R4.3): events behind the anchor may be removed, nothing else.
-- A purge first moves the anchor to the last event it removes, so the
-- chain stays verifiable from the anchor's stored hash.
DROP TRIGGER audit_events_no_delete;
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.seq > (SELECT anchor_seq FROM audit_head WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd
CREATE TABLE audit_checkpoints (
    anchor_seq BIGINT PRIMARY KEY,
    anchor_hash BLOB NOT NULL,
    removed BIGINT NOT NULL,
    purged_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE audit_checkpoints;
DROP TRIGGER audit_events_no_delete;
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd
DROP INDEX audit_type_at;
DROP INDEX audit_decided_restricted;
DROP INDEX audit_decided_grant;
DROP TABLE review_schedules;
DROP TABLE review_items;
DROP TABLE review_campaigns;
