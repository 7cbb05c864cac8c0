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
-- +goose StatementBegin
CREATE FUNCTION operators_authz_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.site_id IS DISTINCT FROM OLD.site_id
       OR NEW.valid_until IS DISTINCT FROM OLD.valid_until THEN
        NEW.authz_version := OLD.authz_version + 1;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER operators_authz_version BEFORE UPDATE ON operators
    FOR EACH ROW EXECUTE FUNCTION operators_authz_version();

-- Any write to grants moves the version of every operator whose grants it
-- touched, once per statement: ending 20,000 people's grants in one
-- statement updates each operator once.
-- +goose StatementBegin
CREATE FUNCTION grants_authz_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE operators SET authz_version = authz_version + 1
         WHERE operator_id IN (SELECT DISTINCT operator_id FROM new_grants);
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE operators SET authz_version = authz_version + 1
         WHERE operator_id IN (SELECT operator_id FROM new_grants UNION SELECT operator_id FROM old_grants);
    ELSE
        UPDATE operators SET authz_version = authz_version + 1
         WHERE operator_id IN (SELECT DISTINCT operator_id FROM old_grants);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER grants_authz_version_insert AFTER INSERT ON grants
    REFERENCING NEW TABLE AS new_grants FOR EACH STATEMENT EXECUTE FUNCTION grants_authz_version();
CREATE TRIGGER grants_authz_version_update AFTER UPDATE ON grants
    REFERENCING OLD TABLE AS old_grants NEW TABLE AS new_grants FOR EACH STATEMENT EXECUTE FUNCTION grants_authz_version();
CREATE TRIGGER grants_authz_version_delete AFTER DELETE ON grants
    REFERENCING OLD TABLE AS old_grants FOR EACH STATEMENT EXECUTE FUNCTION grants_authz_version();

-- Roles are few and change rarely: one version for all of them.
-- +goose StatementBegin
CREATE FUNCTION roles_authz_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE authz_roles_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER roles_authz_version AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION roles_authz_version();

-- +goose Down
DROP TRIGGER roles_authz_version ON roles;
DROP TRIGGER grants_authz_version_delete ON grants;
DROP TRIGGER grants_authz_version_update ON grants;
DROP TRIGGER grants_authz_version_insert ON grants;
DROP TRIGGER operators_authz_version ON operators;
DROP FUNCTION roles_authz_version();
DROP FUNCTION grants_authz_version();
DROP FUNCTION operators_authz_version();
DROP TABLE authz_roles_version;
ALTER TABLE operators DROP COLUMN authz_version;
