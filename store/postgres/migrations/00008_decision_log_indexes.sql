-- +goose Up
-- Decisions are most of the history, and every index on audit_events
-- keyed by a person or a grant costs each commit one page per distinct
-- key in it. Two of them are narrowed here, with no question losing an
-- answer:
--
-- The actor index leaves out events a person did to themselves (every
-- decision, every login): those are found by the operator index, and a
-- query by actor asks both (sqlstore ListAudit).
DROP INDEX audit_actor;
CREATE INDEX audit_actor ON audit_events (actor_id, seq) WHERE actor_id <> operator_id;
-- The last use of a grant (review hints) is kept as one small row per
-- grant, written with the decision in the same transaction, instead of an
-- index entry per decision.
CREATE TABLE grant_last_use (
    grant_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
INSERT INTO grant_last_use (grant_id, at)
SELECT (NULLIF(data, '')::jsonb) ->> 'grant_id', MAX(at) FROM audit_events
WHERE type = 'authz.decided' AND (NULLIF(data, '')::jsonb) ->> 'grant_id' <> ''
GROUP BY 1;
DROP INDEX audit_decided_grant;

-- +goose Down
CREATE INDEX audit_decided_grant ON audit_events (((NULLIF(data, '')::jsonb) ->> 'grant_id'), at) WHERE type = 'authz.decided';
DROP TABLE grant_last_use;
DROP INDEX audit_actor;
CREATE INDEX audit_actor ON audit_events (actor_id, seq);
