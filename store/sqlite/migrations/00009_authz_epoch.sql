-- +goose Up
-- One number for the whole authorization state, moved by every change
-- of any operator's rights version or of the roles version (so by every
-- write those versions follow). SQLite has one writer: inside a write
-- transaction nobody else can move it, so a batch of decisions reads it
-- once, and a decision whose index entry was read at the same number
-- reads nothing more (sqlstore AuthzEpoch, authz fresh). It starts at 1:
-- an entry never tagged holds 0.
CREATE TABLE authz_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO authz_epoch VALUES (1, 1);
-- +goose StatementBegin
CREATE TRIGGER operators_authz_epoch AFTER UPDATE OF authz_version ON operators
BEGIN
    UPDATE authz_epoch SET epoch = epoch + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER roles_authz_epoch AFTER UPDATE OF version ON authz_roles_version
BEGIN
    UPDATE authz_epoch SET epoch = epoch + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- An operator's row removed by hand takes its version with it.
-- +goose StatementBegin
CREATE TRIGGER operators_delete_authz_epoch AFTER DELETE ON operators
BEGIN
    UPDATE authz_epoch SET epoch = epoch + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER operators_delete_authz_epoch;
DROP TRIGGER roles_authz_epoch;
DROP TRIGGER operators_authz_epoch;
DROP TABLE authz_epoch;
