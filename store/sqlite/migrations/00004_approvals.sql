-- +goose Up
-- Per-use approvals of bulk output (R3.6): requested by one person,
-- approved by another, used once by the decision that allows it.
CREATE TABLE approvals (
    approval_id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    site_id TEXT NOT NULL,
    requested_by TEXT NOT NULL REFERENCES operators (operator_id),
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at BIGINT,
    used_at BIGINT,
    used_by_decision TEXT NOT NULL
);
CREATE INDEX approvals_requester ON approvals (requested_by);

-- +goose Down
DROP TABLE approvals;
