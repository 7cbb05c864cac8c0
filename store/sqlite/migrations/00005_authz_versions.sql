-- +goose Up
-- Versions of what decisions read, kept by the database itself so that no
-- code path can change a right without moving them: a replica keeping
-- decisions in memory reads only these in the decision's own transaction
-- and reloads what moved. A version is only ever compared for equality.
ALTER TABLE operators ADD COLUMN authz_version BIGINT NOT NULL DEFAULT 0;
CREATE TABLE authz_roles_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO authz_roles_version VALUES (1, 0);

-- An operator's own row moves its version when what a decision reads of it
-- changes (status, site, end of validity), not on a login's last_login_at.
-- The trigger's own UPDATE sets authz_version only, so it does not fire
-- again.
-- +goose StatementBegin
CREATE TRIGGER operators_authz_version AFTER UPDATE OF status, site_id, valid_until ON operators
FOR EACH ROW WHEN OLD.status IS NOT NEW.status OR OLD.site_id IS NOT NEW.site_id OR OLD.valid_until IS NOT NEW.valid_until
BEGIN
    UPDATE operators SET authz_version = authz_version + 1 WHERE operator_id = NEW.operator_id;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER grants_authz_version_insert AFTER INSERT ON grants
BEGIN
    UPDATE operators SET authz_version = authz_version + 1 WHERE operator_id = NEW.operator_id;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER grants_authz_version_update AFTER UPDATE ON grants
BEGIN
    UPDATE operators SET authz_version = authz_version + 1 WHERE operator_id IN (OLD.operator_id, NEW.operator_id);
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER grants_authz_version_delete AFTER DELETE ON grants
BEGIN
    UPDATE operators SET authz_version = authz_version + 1 WHERE operator_id = OLD.operator_id;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER roles_authz_version_insert AFTER INSERT ON roles
BEGIN
    UPDATE authz_roles_version SET version = version + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER roles_authz_version_update AFTER UPDATE ON roles
BEGIN
    UPDATE authz_roles_version SET version = version + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER roles_authz_version_delete AFTER DELETE ON roles
BEGIN
    UPDATE authz_roles_version SET version = version + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER roles_authz_version_delete;
DROP TRIGGER roles_authz_version_update;
DROP TRIGGER roles_authz_version_insert;
DROP TRIGGER grants_authz_version_delete;
DROP TRIGGER grants_authz_version_update;
DROP TRIGGER grants_authz_version_insert;
DROP TRIGGER operators_authz_version;
DROP TABLE authz_roles_version;
ALTER TABLE operators DROP COLUMN authz_version;
