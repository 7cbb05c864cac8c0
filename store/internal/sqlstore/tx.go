package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/authz"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/roles"
	"github.com/opgate/opgate/store"
)

type tx struct {
	db *DB
	tx *sql.Tx
	// readOnly is set in View: PostgreSQL refuses row locks in a read-only
	// transaction, and a reader has nothing to serialise against anyway.
	readOnly bool

	// The chain head once this transaction holds its lock, so that several
	// events in one transaction lock it once.
	headLocked bool
	headSeq    int64
	headHash   []byte
	pending    []audit.Event // appended, sealed at commit
	pool       *sql.DB       // the pool the transaction came from

	// Group commit: the savepoint of the function running now, whether it
	// was taken, and its name; and the batch's first savepoint taken.
	savepoint string
	spTaken   bool
	lastSP    string
	firstSP   string
	// grouped: the transaction is a batch's, shared by its callers.
	grouped bool
	// The authz epoch this transaction read, while nothing it wrote since
	// could have moved it (Dialect.OneWriter).
	epoch   int64
	epochOK bool
}

// stmtCtx is the context a statement runs under. In a batch it is the
// caller's without its cancellation: a client that went away cancels its
// own statement in the driver, which on PostgreSQL (pgx closes the
// connection) and on SQLite (an interrupt rolls back the whole
// transaction) would end the transaction every caller in the batch
// shares. Once queued, a caller is answered whatever its context does.
func (t *tx) stmtCtx(ctx context.Context) context.Context {
	if t.grouped {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

var _ store.Tx = (*tx)(nil)

// prepared is this transaction's handle on the pool's prepared statement
// for query, or nil to run it unprepared.
func (t *tx) prepared(ctx context.Context, query string) *sql.Stmt {
	if !t.db.D.Prepare {
		return nil
	}
	st := t.db.stmt(t.pool, t.db.q(query))
	if st == nil {
		return nil
	}
	return t.tx.StmtContext(ctx, st)
}

// forUpdate is the clause that locks the rows a SELECT reads until the
// transaction ends, or "" in a read-only transaction.
func (t *tx) forUpdate() string {
	if t.readOnly {
		return ""
	}
	return t.db.D.ForUpdate
}

// skipLocked is the clause that claims rows no other transaction holds, or
// "" in a read-only transaction.
func (t *tx) skipLocked() string {
	if t.readOnly {
		return ""
	}
	return t.db.D.SkipLocked
}

func (t *tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = t.stmtCtx(ctx)
	t.epochOK = false
	if err := t.beforeStatement(); err != nil {
		return nil, t.db.translate(err)
	}
	if st := t.prepared(ctx, query); st != nil {
		r, err := st.ExecContext(ctx, args...)
		return r, t.db.translate(err)
	}
	r, err := t.tx.ExecContext(ctx, t.db.q(query), args...)
	return r, t.db.translate(err)
}

// execOne runs a statement that must change exactly one row.
func (t *tx) execOne(ctx context.Context, query string, args ...any) error {
	r, err := t.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return t.db.translate(err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (t *tx) row(ctx context.Context, query string, args ...any) *sql.Row {
	ctx = t.stmtCtx(ctx)
	t.mayWrite(query)
	// A failed savepoint leaves the transaction aborted: the query then
	// fails too, and its error reaches the caller through Scan.
	_ = t.beforeStatement()
	if st := t.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, t.db.q(query), args...)
}

func (t *tx) rows(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx = t.stmtCtx(ctx)
	t.mayWrite(query)
	if err := t.beforeStatement(); err != nil {
		return nil, t.db.translate(err)
	}
	if st := t.prepared(ctx, query); st != nil {
		r, err := st.QueryContext(ctx, args...)
		return r, t.db.translate(err)
	}
	r, err := t.tx.QueryContext(ctx, t.db.q(query), args...)
	return r, t.db.translate(err)
}

// where builds a conjunction of the conditions whose value is set.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, v any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, v)
}

func (w *where) addIf(ok bool, cond string, v any) {
	if ok {
		w.add(cond, v)
	}
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

type scanner interface{ Scan(...any) error }

func collect[T any](t *tx, r *sql.Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []T
	for r.Next() {
		v, err := scan(r)
		if err != nil {
			return nil, t.db.translate(err)
		}
		out = append(out, v)
	}
	return out, t.db.translate(r.Err())
}

// ---- sites and terminals

func (t *tx) CreateSite(ctx context.Context, s lifecycle.Site) error {
	_, err := t.exec(ctx, `INSERT INTO sites (site_id, name, municipality_code, created_at) VALUES (?, ?, ?, ?)`,
		s.ID, s.Name, s.MunicipalityCode, must(s.CreatedAt))
	return err
}

func scanSite(s scanner) (lifecycle.Site, error) {
	var v lifecycle.Site
	var created int64
	err := s.Scan(&v.ID, &v.Name, &v.MunicipalityCode, &created)
	v.CreatedAt = at(created)
	return v, err
}

func (t *tx) GetSite(ctx context.Context, id opgate.SiteID) (lifecycle.Site, error) {
	v, err := scanSite(t.row(ctx, `SELECT site_id, name, municipality_code, created_at FROM sites WHERE site_id = ?`, id))
	return v, t.db.translate(err)
}

func (t *tx) ListSites(ctx context.Context) ([]lifecycle.Site, error) {
	r, err := t.rows(ctx, `SELECT site_id, name, municipality_code, created_at FROM sites ORDER BY site_id`)
	return collect(t, r, err, scanSite)
}

func (t *tx) CreateTerminal(ctx context.Context, v lifecycle.Terminal) error {
	_, err := t.exec(ctx, `INSERT INTO terminals (terminal_id, site_id, name, created_at, removed_at) VALUES (?, ?, ?, ?, ?)`,
		v.ID, v.SiteID, v.Name, must(v.CreatedAt), micros(v.RemovedAt))
	return err
}

const terminalCols = `terminal_id, site_id, name, created_at, removed_at`

func scanTerminal(s scanner) (lifecycle.Terminal, error) {
	var v lifecycle.Terminal
	var created int64
	var removed sql.NullInt64
	err := s.Scan(&v.ID, &v.SiteID, &v.Name, &created, &removed)
	v.CreatedAt, v.RemovedAt = at(created), fromMicros(removed)
	return v, err
}

func (t *tx) GetTerminal(ctx context.Context, id opgate.TerminalID) (lifecycle.Terminal, error) {
	v, err := scanTerminal(t.row(ctx, `SELECT `+terminalCols+` FROM terminals WHERE terminal_id = ?`, id))
	return v, t.db.translate(err)
}

func (t *tx) ListTerminals(ctx context.Context, site opgate.SiteID) ([]lifecycle.Terminal, error) {
	var w where
	w.conds = append(w.conds, "removed_at IS NULL")
	w.addIf(site != "", "site_id = ?", site)
	r, err := t.rows(ctx, `SELECT `+terminalCols+` FROM terminals`+w.String()+` ORDER BY terminal_id`, w.args...)
	return collect(t, r, err, scanTerminal)
}

func (t *tx) RemoveTerminal(ctx context.Context, id opgate.TerminalID, when time.Time) error {
	return t.execOne(ctx, `UPDATE terminals SET removed_at = ? WHERE terminal_id = ? AND removed_at IS NULL`, must(when), id)
}

// ---- roles

func (t *tx) PutRole(ctx context.Context, r roles.Role) error {
	perms, _ := json.Marshal(nonNil(r.Permissions))
	conf, _ := json.Marshal(nonNil(r.ConflictsWith))
	res, err := t.exec(ctx, `UPDATE roles SET name = ?, permissions = ?, conflicts_with = ?, built_in = ? WHERE role_id = ?`,
		r.Name, string(perms), string(conf), r.BuiltIn, r.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = t.exec(ctx, `INSERT INTO roles (role_id, name, permissions, conflicts_with, built_in) VALUES (?, ?, ?, ?, ?)`,
		r.ID, r.Name, string(perms), string(conf), r.BuiltIn)
	return err
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func scanRole(s scanner) (roles.Role, error) {
	var r roles.Role
	var perms, conf string
	if err := s.Scan(&r.ID, &r.Name, &perms, &conf, &r.BuiltIn); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(perms), &r.Permissions); err != nil {
		return r, err
	}
	return r, json.Unmarshal([]byte(conf), &r.ConflictsWith)
}

func (t *tx) GetRole(ctx context.Context, id opgate.RoleID) (roles.Role, error) {
	return t.getRole(ctx, id, "")
}

// GetRoleForUpdate reads a role and locks it until the transaction ends:
// an edit judges the role's holders against the role as it stands.
func (t *tx) GetRoleForUpdate(ctx context.Context, id opgate.RoleID) (roles.Role, error) {
	return t.getRole(ctx, id, t.forUpdate())
}

// GetRoleForShare reads a role and keeps it from changing until the
// transaction ends: a grant judges the role it gives as it stands.
func (t *tx) GetRoleForShare(ctx context.Context, id opgate.RoleID) (roles.Role, error) {
	lock := ""
	if !t.readOnly {
		lock = t.db.D.ForShare
	}
	return t.getRole(ctx, id, lock)
}

func (t *tx) getRole(ctx context.Context, id opgate.RoleID, lock string) (roles.Role, error) {
	r, err := scanRole(t.row(ctx, `SELECT role_id, name, permissions, conflicts_with, built_in FROM roles WHERE role_id = ?`+lock, id))
	return r, t.db.translate(err)
}

const listRoles = `SELECT role_id, name, permissions, conflicts_with, built_in FROM roles ORDER BY role_id`

func (t *tx) ListRoles(ctx context.Context) ([]roles.Role, error) {
	r, err := t.rows(ctx, listRoles)
	return collect(t, r, err, scanRole)
}

// ---- operators

const operatorCols = `operator_id, staff_number, name, site_id, employment_type, status, valid_until, issued_at, issued_by, status_changed_at, last_login_at`

func scanOperator(s scanner) (lifecycle.Operator, error) {
	var o lifecycle.Operator
	var validUntil, lastLogin sql.NullInt64
	var issued, changed int64
	err := s.Scan(&o.ID, &o.StaffNumber, &o.Name, &o.SiteID, &o.EmploymentType, &o.Status, &validUntil, &issued, &o.IssuedBy, &changed, &lastLogin)
	o.ValidUntil, o.IssuedAt, o.StatusChanged, o.LastLoginAt = fromMicros(validUntil), at(issued), at(changed), fromMicros(lastLogin)
	return o, err
}

func (t *tx) CreateOperator(ctx context.Context, o lifecycle.Operator) error {
	_, err := t.exec(ctx, `INSERT INTO operators (`+operatorCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		o.ID, o.StaffNumber, o.Name, o.SiteID, o.EmploymentType, o.Status, micros(o.ValidUntil), must(o.IssuedAt), o.IssuedBy, must(o.StatusChanged), micros(o.LastLoginAt))
	return err
}

func (t *tx) GetOperator(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error) {
	o, err := scanOperator(t.row(ctx, `SELECT `+operatorCols+` FROM operators WHERE operator_id = ?`, id))
	return o, t.db.translate(err)
}

func (t *tx) GetOperatorForUpdate(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error) {
	o, err := scanOperator(t.row(ctx, `SELECT `+operatorCols+` FROM operators WHERE operator_id = ?`+t.forUpdate(), id))
	return o, t.db.translate(err)
}

func (t *tx) UpdateOperator(ctx context.Context, o lifecycle.Operator) error {
	return t.execOne(ctx, `UPDATE operators SET staff_number = ?, name = ?, site_id = ?, employment_type = ?, status = ?, valid_until = ?, status_changed_at = ?, last_login_at = ? WHERE operator_id = ?`,
		o.StaffNumber, o.Name, o.SiteID, o.EmploymentType, o.Status, micros(o.ValidUntil), must(o.StatusChanged), micros(o.LastLoginAt), o.ID)
}

func (t *tx) ListOperators(ctx context.Context, f lifecycle.OperatorFilter) ([]lifecycle.Operator, error) {
	var w where
	w.addIf(f.SiteID != "", "site_id = ?", f.SiteID)
	w.addIf(f.StaffNumber != "", "staff_number = ?", f.StaffNumber)
	if f.Query != "" {
		// IDs and staff numbers are ASCII: compared without case in both
		// engines. '!' escapes the query's own % and _.
		esc := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(f.Query)
		w.conds = append(w.conds, `(upper(operator_id) LIKE ? ESCAPE '!' OR upper(staff_number) LIKE ? ESCAPE '!' OR name LIKE ? ESCAPE '!')`)
		w.args = append(w.args, strings.ToUpper(esc)+"%", strings.ToUpper(esc)+"%", "%"+esc+"%")
	}
	w.addIf(f.After != "", "operator_id > ?", f.After)
	// Statuses as shown (lifecycle.DisplayStatus) at f.At: an ID past its
	// end is expired before the sweep records it, and "locked" is an
	// active operator whose lock is in force.
	current := "NOT (" + idEnded("") + ")"
	switch f.Status {
	case "":
	case lifecycle.Locked:
		w.add("status = ?", lifecycle.Active)
		w.add(current, must(f.At))
		w.add("operator_id IN (SELECT operator_id FROM login_locks WHERE permanent OR locked_until > ?)", must(f.At))
	case lifecycle.Active:
		w.add("status = ?", lifecycle.Active)
		w.add(current, must(f.At))
		w.add("operator_id NOT IN (SELECT operator_id FROM login_locks WHERE permanent OR locked_until > ?)", must(f.At))
	case lifecycle.Suspended:
		w.add("status = ?", lifecycle.Suspended)
		w.add(current, must(f.At))
	case lifecycle.Expired:
		w.add("(status = 'expired' OR "+idEnded("")+")", must(f.At))
	default:
		w.add("status = ?", f.Status)
	}
	w.args = append(w.args, limit(f.Limit))
	r, err := t.rows(ctx, `SELECT `+operatorCols+` FROM operators`+w.String()+` ORDER BY operator_id LIMIT ?`, w.args...)
	return collect(t, r, err, scanOperator)
}

// idEnded is the condition of an ID past its end at the bound instant,
// shown as expired though still stored active or suspended: the rule of
// lifecycle.DisplayStatus, for the operators table under alias (with its
// dot, or "").
func idEnded(alias string) string {
	return alias + "status IN ('active', 'suspended') AND " + alias + "valid_until IS NOT NULL AND " + alias + "valid_until <= ?"
}

func (t *tx) LocksOf(ctx context.Context, ids []opgate.OperatorID) (map[opgate.OperatorID]lifecycle.Lock, error) {
	out := make(map[opgate.OperatorID]lifecycle.Lock, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	in, args := inList(ids)
	r, err := t.rows(ctx, `SELECT operator_id, locked_until, permanent, locks_in_row FROM login_locks WHERE operator_id IN (`+in+`)`, args...)
	locks, err := collect(t, r, err, func(s scanner) (lifecycle.Lock, error) {
		var l lifecycle.Lock
		var until sql.NullInt64
		err := s.Scan(&l.OperatorID, &until, &l.Permanent, &l.LocksInRow)
		l.Until = fromMicros(until)
		return l, err
	})
	for _, l := range locks {
		out[l.OperatorID] = l
	}
	return out, err
}

func (t *tx) CountOperators(ctx context.Context) (int, error) {
	var n int
	err := t.row(ctx, `SELECT COUNT(*) FROM operators`).Scan(&n)
	return n, t.db.translate(err)
}

func (t *tx) GetLock(ctx context.Context, id opgate.OperatorID) (lifecycle.Lock, error) {
	l := lifecycle.Lock{OperatorID: id}
	var until sql.NullInt64
	var recent, pending string
	err := t.row(ctx, `SELECT recent, pending, locked_until, permanent, locks_in_row FROM login_locks WHERE operator_id = ?`+t.forUpdate(), id).
		Scan(&recent, &pending, &until, &l.Permanent, &l.LocksInRow)
	if err == sql.ErrNoRows {
		return l, nil // no failures yet
	}
	if err != nil {
		return l, t.db.translate(err)
	}
	l.Until = fromMicros(until)
	var rs []int64
	if err := json.Unmarshal([]byte(recent), &rs); err != nil {
		return l, err
	}
	for _, r := range rs {
		l.Recent = append(l.Recent, at(r))
	}
	var ps []reservationRow
	if err := json.Unmarshal([]byte(pending), &ps); err != nil {
		return l, err
	}
	for _, p := range ps {
		l.Pending = append(l.Pending, lifecycle.Reservation{ID: p.ID, Until: at(p.Until)})
	}
	return l, nil
}

type reservationRow struct {
	ID    string `json:"id"`
	Until int64  `json:"until"`
}

// PutLock writes the whole lock state. failures and window_start are kept
// beside the list for people reading the table.
func (t *tx) PutLock(ctx context.Context, l lifecycle.Lock) error {
	rs := make([]int64, 0, len(l.Recent))
	for _, r := range l.Recent {
		rs = append(rs, r.UnixMicro())
	}
	ps := make([]reservationRow, 0, len(l.Pending))
	for _, p := range l.Pending {
		ps = append(ps, reservationRow{p.ID, p.Until.UnixMicro()})
	}
	recent, _ := json.Marshal(rs)
	pending, _ := json.Marshal(ps)
	var start time.Time
	if len(l.Recent) > 0 {
		start = l.Recent[0]
	}
	res, err := t.exec(ctx, `UPDATE login_locks SET failures = ?, window_start = ?, recent = ?, pending = ?, locked_until = ?, permanent = ?, locks_in_row = ? WHERE operator_id = ?`,
		len(l.Recent), micros(start), string(recent), string(pending), micros(l.Until), l.Permanent, l.LocksInRow, l.OperatorID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = t.exec(ctx, `INSERT INTO login_locks (operator_id, failures, window_start, recent, pending, locked_until, permanent, locks_in_row) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		l.OperatorID, len(l.Recent), micros(start), string(recent), string(pending), micros(l.Until), l.Permanent, l.LocksInRow)
	return err
}

// ---- grants

const grantCols = `grant_id, operator_id, role_id, site_id, status, granted_by, approved_by, reason, created_at, valid_from, valid_until, ended_at, ended_by, end_reason`

func scanGrant(s scanner) (authz.Grant, error) {
	var g authz.Grant
	var created int64
	var from, until, ended sql.NullInt64
	err := s.Scan(&g.ID, &g.OperatorID, &g.RoleID, &g.SiteID, &g.Status, &g.GrantedBy, &g.ApprovedBy, &g.Reason, &created, &from, &until, &ended, &g.EndedBy, &g.EndReason)
	g.CreatedAt, g.ValidFrom, g.ValidUntil, g.EndedAt = at(created), fromMicros(from), fromMicros(until), fromMicros(ended)
	return g, err
}

func (t *tx) CreateGrant(ctx context.Context, g authz.Grant) error {
	_, err := t.exec(ctx, `INSERT INTO grants (`+grantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.OperatorID, g.RoleID, g.SiteID, g.Status, g.GrantedBy, g.ApprovedBy, g.Reason, must(g.CreatedAt), micros(g.ValidFrom), micros(g.ValidUntil), micros(g.EndedAt), g.EndedBy, g.EndReason)
	return err
}

func (t *tx) GetGrant(ctx context.Context, id opgate.GrantID) (authz.Grant, error) {
	g, err := scanGrant(t.row(ctx, `SELECT `+grantCols+` FROM grants WHERE grant_id = ?`+t.forUpdate(), id))
	return g, t.db.translate(err)
}

// UpdateGrant writes a grant back. An ended grant (revoked, expired) is
// never written again: a writer holding a copy read before it ended (an
// approval racing a transfer) gets ErrConflict instead of bringing it back.
func (t *tx) UpdateGrant(ctx context.Context, g authz.Grant) error {
	err := t.execOne(ctx, `UPDATE grants SET status = ?, approved_by = ?, valid_from = ?, valid_until = ?, ended_at = ?, ended_by = ?, end_reason = ?
		WHERE grant_id = ? AND status NOT IN ('revoked', 'expired')`,
		g.Status, g.ApprovedBy, micros(g.ValidFrom), micros(g.ValidUntil), micros(g.EndedAt), g.EndedBy, g.EndReason, g.ID)
	return t.endedOrMissing(ctx, err, `SELECT 1 FROM grants WHERE grant_id = ?`, g.ID)
}

// endedOrMissing tells an update that matched no row because the row has
// ended (ErrConflict) from one whose row does not exist (ErrNotFound).
func (t *tx) endedOrMissing(ctx context.Context, err error, exists string, id any) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	var one int
	switch qerr := t.row(ctx, exists, id).Scan(&one); {
	case errors.Is(qerr, sql.ErrNoRows):
		return store.ErrNotFound
	case qerr != nil:
		return t.db.translate(qerr)
	}
	return fmt.Errorf("%w: %v has ended", store.ErrConflict, id)
}

func (t *tx) ListGrants(ctx context.Context, f authz.GrantFilter) ([]authz.Grant, error) {
	var w where
	w.addIf(f.OperatorID != "", "operator_id = ?", f.OperatorID)
	w.addIf(f.RoleID != "", "role_id = ?", f.RoleID)
	w.addIf(f.SiteID != "", "site_id = ?", f.SiteID)
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.After != "", "grant_id > ?", f.After)
	w.args = append(w.args, limit(f.Limit))
	r, err := t.rows(ctx, `SELECT `+grantCols+` FROM grants`+w.String()+` ORDER BY grant_id LIMIT ?`, w.args...)
	return collect(t, r, err, scanGrant)
}

// ---- decision index

// mayWrite forgets the authz epoch read unless query only reads (an
// UPDATE … RETURNING goes through rows too).
func (t *tx) mayWrite(query string) {
	if !strings.HasPrefix(query, "SELECT ") {
		t.epochOK = false
	}
}

// AuthzEpoch reads the number that every change of authorization state
// moves, where one writer at a time makes it meaningful (SQLite): a batch
// of decisions reads it once, until one of its callers writes or is
// rolled back. Elsewhere it reports ok false, and decisions read their
// versions.
func (t *tx) AuthzEpoch(ctx context.Context) (epoch int64, ok bool, err error) {
	if !t.db.D.OneWriter {
		return 0, false, nil
	}
	if !t.epochOK {
		if err := t.row(ctx, `SELECT epoch FROM authz_epoch WHERE id = 1`).Scan(&t.epoch); err != nil {
			return 0, false, t.db.translate(err)
		}
		t.epochOK = true
	}
	return t.epoch, true, nil
}

// lockHead takes the chain head's lock for the rest of the transaction.
func (t *tx) lockHead(ctx context.Context) error {
	if t.headLocked {
		return nil
	}
	if err := t.row(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`+t.forUpdate()).Scan(&t.headSeq, &t.headHash); err != nil {
		return t.db.translate(err)
	}
	t.headLocked = true
	return nil
}

func (t *tx) AuthzVersions(ctx context.Context, op opgate.OperatorID) (authz.Versions, error) {
	var v authz.Versions
	if !t.readOnly && !t.db.D.OneWriter {
		// Where batches commit side by side (PostgreSQL), a decision reads
		// the versions under the chain head's lock: every change of
		// rights appends its event under that lock, so none can commit
		// between this read and this transaction's commit, and a decision
		// is never recorded after a change it did not see.
		if err := t.lockHead(ctx); err != nil {
			return v, err
		}
	}
	var opv sql.NullInt64
	err := t.row(ctx, `SELECT (SELECT version FROM authz_roles_version WHERE id = 1), (SELECT authz_version FROM operators WHERE operator_id = ?)`, op).
		Scan(&v.Roles, &opv)
	v.Found, v.Operator = opv.Valid, opv.Int64
	return v, t.db.translate(err)
}

func (t *tx) LoadAuthz(ctx context.Context) (authz.State, error) {
	var st authz.State
	if err := t.row(ctx, `SELECT version FROM authz_roles_version WHERE id = 1`).Scan(&st.RolesVersion); err != nil {
		return st, t.db.translate(err)
	}
	r, err := t.rows(ctx, `SELECT operator_id, status, valid_until, authz_version FROM operators`)
	if st.Operators, err = collect(t, r, err, func(s scanner) (authz.OperatorState, error) {
		var o authz.OperatorState
		var until sql.NullInt64
		err := s.Scan(&o.ID, &o.Status, &until, &o.Version)
		o.ValidUntil = fromMicros(until)
		return o, err
	}); err != nil {
		return st, err
	}
	r, err = t.rows(ctx, listRoles)
	if st.Roles, err = collect(t, r, err, scanRole); err != nil {
		return st, err
	}
	// Only what a decision reads of a grant; the index orders them.
	r, err = t.rows(ctx, `SELECT grant_id, operator_id, role_id, site_id, valid_from, valid_until FROM grants WHERE status = 'active'`)
	st.Grants, err = collect(t, r, err, func(s scanner) (authz.Grant, error) {
		g := authz.Grant{Status: authz.Active}
		var from, until sql.NullInt64
		err := s.Scan(&g.ID, &g.OperatorID, &g.RoleID, &g.SiteID, &from, &until)
		g.ValidFrom, g.ValidUntil = fromMicros(from), fromMicros(until)
		return g, err
	})
	return st, err
}

// ---- cards

const cardCols = `card_id, operator_id, serial, label, status, credential_id, public_key, sign_count, aaguid, flags, attestation, clone_suspected, enrolled_at, enrolled_by, status_changed_at`

func scanCard(s scanner) (authn.Card, error) {
	var c authn.Card
	var signCount int64
	var flags int
	var enrolled, changed int64
	err := s.Scan(&c.ID, &c.OperatorID, &c.Serial, &c.Label, &c.Status, &c.CredentialID, &c.PublicKey, &signCount, &c.AAGUID, &flags, &c.Attestation, &c.CloneSuspected, &enrolled, &c.EnrolledBy, &changed)
	c.SignCount, c.Flags, c.EnrolledAt, c.StatusChanged = uint32(signCount), uint8(flags), at(enrolled), at(changed)
	return c, err
}

func (t *tx) CreateCard(ctx context.Context, c authn.Card) error {
	_, err := t.exec(ctx, `INSERT INTO cards (`+cardCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.OperatorID, c.Serial, c.Label, c.Status, c.CredentialID, nonNil(c.PublicKey), int64(c.SignCount), nonNil(c.AAGUID), int(c.Flags), c.Attestation, c.CloneSuspected, must(c.EnrolledAt), c.EnrolledBy, must(c.StatusChanged))
	return err
}

func (t *tx) GetCard(ctx context.Context, id opgate.CardID) (authn.Card, error) {
	c, err := scanCard(t.row(ctx, `SELECT `+cardCols+` FROM cards WHERE card_id = ?`+t.forUpdate(), id))
	return c, t.db.translate(err)
}

func (t *tx) GetCardByCredential(ctx context.Context, credentialID []byte) (authn.Card, error) {
	c, err := scanCard(t.row(ctx, `SELECT `+cardCols+` FROM cards WHERE credential_id = ?`, credentialID))
	return c, t.db.translate(err)
}

// UpdateCard writes a card back. A card that left "active" (lost, stolen,
// collected, revoked) never returns to it: a writer holding a copy read
// before the change (a login writing its counter) gets ErrConflict.
func (t *tx) UpdateCard(ctx context.Context, c authn.Card) error {
	err := t.execOne(ctx, `UPDATE cards SET label = ?, status = ?, sign_count = ?, clone_suspected = ?, status_changed_at = ?
		WHERE card_id = ? AND (status = 'active' OR ? <> 'active')`,
		c.Label, c.Status, int64(c.SignCount), c.CloneSuspected, must(c.StatusChanged), c.ID, c.Status)
	return t.endedOrMissing(ctx, err, `SELECT 1 FROM cards WHERE card_id = ?`, c.ID)
}

func (t *tx) ListCards(ctx context.Context, op opgate.OperatorID) ([]authn.Card, error) {
	r, err := t.rows(ctx, `SELECT `+cardCols+` FROM cards WHERE operator_id = ? ORDER BY enrolled_at, card_id`, op)
	return collect(t, r, err, scanCard)
}

// ---- sessions

const sessionCols = `session_id, operator_id, site_id, terminal_id, card_id, amr, created_at, last_seen_at, expires_at, ended_at, end_reason, password_change_required, refresh_hash`

func scanSession(s scanner) (authn.Session, error) {
	var v authn.Session
	var amr string
	var created, seen, expires int64
	var ended sql.NullInt64
	if err := s.Scan(&v.ID, &v.OperatorID, &v.SiteID, &v.TerminalID, &v.CardID, &amr, &created, &seen, &expires, &ended, &v.EndReason, &v.PasswordChangeRequired, &v.RefreshHash); err != nil {
		return v, err
	}
	v.CreatedAt, v.LastSeenAt, v.ExpiresAt, v.EndedAt = at(created), at(seen), at(expires), fromMicros(ended)
	if amr != "" {
		v.AMR = strings.Split(amr, " ")
	}
	return v, nil
}

func (t *tx) CreateSession(ctx context.Context, s authn.Session) error {
	_, err := t.exec(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.OperatorID, s.SiteID, s.TerminalID, s.CardID, strings.Join(s.AMR, " "), must(s.CreatedAt), must(s.LastSeenAt), must(s.ExpiresAt), micros(s.EndedAt), s.EndReason, s.PasswordChangeRequired, nonNil(s.RefreshHash))
	return err
}

func (t *tx) GetSession(ctx context.Context, id opgate.SessionID) (authn.Session, error) {
	s, err := scanSession(t.row(ctx, `SELECT `+sessionCols+` FROM sessions WHERE session_id = ?`+t.forUpdate(), id))
	return s, t.db.translate(err)
}

// UpdateSession writes a session back. An ended session stays ended,
// with its first end: a writer that read the session before another ended
// it (a refresh racing a retirement, on PostgreSQL's READ COMMITTED) must
// not bring it back.
func (t *tx) UpdateSession(ctx context.Context, s authn.Session) error {
	return t.execOne(ctx, `UPDATE sessions SET last_seen_at = ?, ended_at = COALESCE(ended_at, ?),
		end_reason = CASE WHEN ended_at IS NULL THEN ? ELSE end_reason END, password_change_required = ?, refresh_hash = ? WHERE session_id = ?`,
		must(s.LastSeenAt), micros(s.EndedAt), s.EndReason, s.PasswordChangeRequired, nonNil(s.RefreshHash), s.ID)
}

func (t *tx) EndSessions(ctx context.Context, scope authn.SessionScope, when time.Time, reason string) ([]opgate.SessionID, error) {
	var w where
	w.conds = append(w.conds, "ended_at IS NULL")
	w.addIf(scope.OperatorID != "", "operator_id = ?", scope.OperatorID)
	w.addIf(scope.CardID != "", "card_id = ?", scope.CardID)
	w.addIf(scope.SiteID != "", "site_id = ?", scope.SiteID)
	// An empty scope ends nothing rather than everything; Except narrows
	// a scope, it does not make one.
	if len(w.conds) == 1 && !scope.All {
		return nil, nil
	}
	w.addIf(scope.Except != "", "session_id <> ?", scope.Except)
	// One statement both ends the sessions and reports them, so that a
	// session committed by another transaction in between cannot be ended
	// without being reported (the caller fans the IDs out to the cache).
	args := append([]any{must(when), reason}, w.args...)
	r, err := t.rows(ctx, `UPDATE sessions SET ended_at = ?, end_reason = ?`+w.String()+` RETURNING session_id`, args...)
	return collect(t, r, err, func(s scanner) (opgate.SessionID, error) {
		var id opgate.SessionID
		return id, s.Scan(&id)
	})
}

func (t *tx) EndedSessionsSince(ctx context.Context, since time.Time) ([]opgate.SessionID, error) {
	r, err := t.rows(ctx, `SELECT session_id FROM sessions WHERE ended_at >= ? ORDER BY ended_at`, must(since))
	return collect(t, r, err, func(s scanner) (opgate.SessionID, error) {
		var id opgate.SessionID
		return id, s.Scan(&id)
	})
}

// ---- scheduled changes

const changeCols = `change_id, operator_id, kind, to_site_id, reason, effective_at, created_by, created_at, status, done_at, error, from_site_id`

func scanChange(s scanner) (lifecycle.Change, error) {
	var c lifecycle.Change
	var eff, created int64
	var done sql.NullInt64
	err := s.Scan(&c.ID, &c.OperatorID, &c.Kind, &c.ToSiteID, &c.Reason, &eff, &c.CreatedBy, &created, &c.Status, &done, &c.Error, &c.FromSiteID)
	c.EffectiveAt, c.CreatedAt, c.DoneAt = at(eff), at(created), fromMicros(done)
	return c, err
}

func (t *tx) CreateChange(ctx context.Context, c lifecycle.Change) error {
	_, err := t.exec(ctx, `INSERT INTO scheduled_changes (`+changeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.OperatorID, c.Kind, c.ToSiteID, c.Reason, must(c.EffectiveAt), c.CreatedBy, must(c.CreatedAt), c.Status, micros(c.DoneAt), c.Error, c.FromSiteID)
	return err
}

func (t *tx) GetChange(ctx context.Context, id opgate.ChangeID) (lifecycle.Change, error) {
	c, err := scanChange(t.row(ctx, `SELECT `+changeCols+` FROM scheduled_changes WHERE change_id = ?`+t.forUpdate(), id))
	return c, t.db.translate(err)
}

func (t *tx) UpdateChange(ctx context.Context, c lifecycle.Change) error {
	return t.execOne(ctx, `UPDATE scheduled_changes SET status = ?, done_at = ?, error = ? WHERE change_id = ?`,
		c.Status, micros(c.DoneAt), c.Error, c.ID)
}

func (t *tx) ListChanges(ctx context.Context, f lifecycle.ChangeFilter) ([]lifecycle.Change, error) {
	var w where
	w.addIf(f.OperatorID != "", "operator_id = ?", f.OperatorID)
	if len(f.Sites) > 0 {
		in, args := inList(f.Sites)
		w.conds = append(w.conds, "(to_site_id IN ("+in+") OR operator_id IN (SELECT operator_id FROM operators WHERE site_id IN ("+in+")))")
		w.args = append(append(w.args, args...), args...)
	}
	w.addIf(f.Status != "", "status = ?", f.Status)
	w.addIf(f.After != "", "change_id > ?", f.After)
	w.args = append(w.args, limit(f.Limit))
	r, err := t.rows(ctx, `SELECT `+changeCols+` FROM scheduled_changes`+w.String()+` ORDER BY change_id LIMIT ?`, w.args...)
	return collect(t, r, err, scanChange)
}

func (t *tx) ClaimDueChanges(ctx context.Context, now time.Time, n int) ([]lifecycle.Change, error) {
	r, err := t.rows(ctx, `SELECT `+changeCols+` FROM scheduled_changes WHERE status = 'pending' AND effective_at <= ? ORDER BY effective_at, change_id LIMIT ?`+t.skipLocked(),
		must(now), limit(n))
	return collect(t, r, err, scanChange)
}

// ---- history

const eventCols = `seq, at, type, actor_id, operator_id, site_id, terminal_id, resource, reason, data, prev_hash, hash`

func scanEvent(s scanner) (audit.Event, error) {
	var e audit.Event
	var when int64
	var data string
	err := s.Scan(&e.Seq, &when, &e.Type, &e.ActorID, &e.OperatorID, &e.SiteID, &e.TerminalID, &e.Resource, &e.Reason, &data, &e.PrevHash, &e.Hash)
	e.At = at(when)
	if data != "" {
		e.Data = []byte(data)
	}
	return e, err
}

// AppendAudit adds e to the events this transaction commits. Events take
// their place in the chain when the transaction commits: the head row is
// locked, every pending event sealed after it and written in a few
// multi-row inserts, and the head moved, all just before COMMIT. The lock
// is therefore held for the commit alone, not for the whole transaction,
// so appends from every replica still form one total order while writers
// queue for as short a time as possible; a rolled-back change leaves no
// event behind. The returned event is e as given: Seq, PrevHash and Hash
// are assigned at commit.
func (t *tx) AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error) {
	if t.readOnly {
		return e, errors.New("sqlstore: AppendAudit in a read-only transaction")
	}
	t.pending = append(t.pending, e)
	return e, nil
}

// auditChunk bounds one multi-row insert: 12 parameters a row stay well
// under both engines' limits on bound parameters.
const auditChunk = 400

// flush seals and writes the pending events. It runs before commit, and
// before any read of the history inside the transaction.
func (t *tx) flush(ctx context.Context) error {
	if len(t.pending) == 0 {
		return nil
	}
	if err := t.lockHead(ctx); err != nil {
		return err
	}
	uses := grantUses(t.pending)
	for len(t.pending) > 0 {
		n := min(len(t.pending), auditChunk)
		var b strings.Builder
		b.WriteString(`INSERT INTO audit_events (` + eventCols + `) VALUES `)
		args := make([]any, 0, n*12)
		for i, e := range t.pending[:n] {
			e = audit.Seal(e, t.headSeq, t.headHash)
			t.headSeq, t.headHash = e.Seq, e.Hash
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, e.Seq, must(e.At), e.Type, e.ActorID, e.OperatorID, e.SiteID, e.TerminalID, e.Resource, e.Reason, string(e.Data), e.PrevHash, e.Hash)
		}
		// The text differs only by row count; rebinding caches at most
		// auditChunk variants.
		if _, err := t.exec(ctx, b.String(), args...); err != nil {
			return err
		}
		t.pending = t.pending[n:]
	}
	t.pending = nil
	if err := t.noteGrantUses(ctx, uses); err != nil {
		return err
	}
	_, err := t.exec(ctx, `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, t.headSeq, t.headHash)
	return err
}

func (t *tx) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Event, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	var w where
	w.addIf(f.OperatorID != "", "operator_id = ?", f.OperatorID)
	w.addIf(f.Type != "", "type = ?", f.Type)
	w.addIf(f.Resource != "", "resource = ?", f.Resource)
	w.addIf(f.SiteID != "", "site_id = ?", f.SiteID)
	w.addIf(!f.From.IsZero(), "at >= ?", must(f.From))
	w.addIf(!f.To.IsZero(), "at < ?", must(f.To))
	w.addIf(f.AfterSeq > 0, "seq > ?", f.AfterSeq)
	n := limit(f.Limit)
	if f.ActorID == "" {
		r, err := t.rows(ctx, `SELECT `+eventCols+` FROM audit_events`+w.String()+` ORDER BY seq LIMIT ?`, append(w.args, n)...)
		return collect(t, r, err, scanEvent)
	}
	// The actor index holds only what was done to someone else (migration
	// 00008); what a person did to themselves is found by the operator
	// index. Each half is cut at the page's length and the two merged.
	others, self := w, w
	others.conds = append(slices.Clip(w.conds), "actor_id = ?", "actor_id <> operator_id")
	others.args = append(slices.Clip(w.args), f.ActorID, n)
	self.conds = append(slices.Clip(w.conds), "operator_id = ?", "actor_id = operator_id")
	self.args = append(slices.Clip(w.args), f.ActorID, n)
	r, err := t.rows(ctx, `SELECT * FROM (SELECT `+eventCols+` FROM audit_events`+others.String()+` ORDER BY seq LIMIT ?) AS o
		UNION ALL SELECT * FROM (SELECT `+eventCols+` FROM audit_events`+self.String()+` ORDER BY seq LIMIT ?) AS s ORDER BY seq LIMIT ?`,
		append(append(others.args, self.args...), n)...)
	return collect(t, r, err, scanEvent)
}

// ---- policy

func (t *tx) GetPolicy(ctx context.Context) (policy.Policy, error) {
	var version int64
	var doc string
	err := t.row(ctx, `SELECT version, document FROM policies ORDER BY version DESC LIMIT 1`).Scan(&version, &doc)
	if err == sql.ErrNoRows {
		return policy.Default(), nil
	}
	if err != nil {
		return policy.Policy{}, t.db.translate(err)
	}
	p, err := policy.Decode([]byte(doc))
	p.Version = version
	return p, err
}

// PutPolicy stores p as the next version. Two concurrent changes cannot
// both become the same version: the primary key refuses the second.
func (t *tx) PutPolicy(ctx context.Context, p policy.Policy, when time.Time, by opgate.OperatorID) (policy.Policy, error) {
	var cur sql.NullInt64
	if err := t.row(ctx, `SELECT MAX(version) FROM policies`).Scan(&cur); err != nil {
		return p, t.db.translate(err)
	}
	p.Version = cur.Int64 + 1
	_, err := t.exec(ctx, `INSERT INTO policies (version, document, changed_at, changed_by) VALUES (?, ?, ?, ?)`,
		p.Version, string(policy.Encode(p)), must(when), by)
	return p, err
}

// ---- keys and meta

func (t *tx) ListSigningKeys(ctx context.Context) ([]authn.StoredKey, error) {
	r, err := t.rows(ctx, `SELECT kid, pem, created_at, not_after FROM signing_keys ORDER BY created_at, kid`)
	return collect(t, r, err, func(s scanner) (authn.StoredKey, error) {
		var k authn.StoredKey
		var created int64
		var notAfter sql.NullInt64
		err := s.Scan(&k.ID, &k.PEM, &created, &notAfter)
		k.CreatedAt, k.NotAfter = at(created), fromMicros(notAfter)
		return k, err
	})
}

func (t *tx) AddSigningKey(ctx context.Context, k authn.StoredKey) error {
	_, err := t.exec(ctx, `INSERT INTO signing_keys (kid, pem, created_at, not_after) VALUES (?, ?, ?, ?)`, k.ID, k.PEM, must(k.CreatedAt), micros(k.NotAfter))
	return err
}

func (t *tx) UpdateSigningKey(ctx context.Context, k authn.StoredKey) error {
	return t.execOne(ctx, `UPDATE signing_keys SET not_after = ? WHERE kid = ?`, micros(k.NotAfter), k.ID)
}

func (t *tx) PutMeta(ctx context.Context, key, value string) error {
	_, err := t.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, key, value)
	return err
}

func (t *tx) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := t.row(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	return v, t.db.translate(err)
}

func ids[T ~string](t *tx, r *sql.Rows, err error) ([]T, error) {
	return collect(t, r, err, func(s scanner) (T, error) {
		var id T
		return id, s.Scan(&id)
	})
}

func (t *tx) EndOperatorSessions(ctx context.Context, ops []opgate.OperatorID, when time.Time, reason string) ([]lifecycle.Ended, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	in, args := inList(ops)
	r, err := t.rows(ctx, `UPDATE sessions SET ended_at = ?, end_reason = ? WHERE operator_id IN (`+in+`) AND ended_at IS NULL RETURNING session_id, operator_id`,
		append([]any{must(when), reason}, args...)...)
	return ended(t, r, err)
}

// inList is "?, ?, …" for n values, and the values as arguments.
func inList[T ~string](vals []T) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", "), args
}

// ended reads (id, operator_id) rows and orders them for stable events.
func ended(t *tx, r *sql.Rows, err error) ([]lifecycle.Ended, error) {
	got, err := collect(t, r, err, func(s scanner) (lifecycle.Ended, error) {
		var e lifecycle.Ended
		return e, s.Scan(&e.ID, &e.OperatorID)
	})
	slices.SortFunc(got, func(a, b lifecycle.Ended) int {
		return strings.Compare(string(a.OperatorID)+"\x00"+a.ID, string(b.OperatorID)+"\x00"+b.ID)
	})
	return got, err
}

// EndGrants ends, in one statement for any number of operators, every
// pending or active grant and reports which: a grant committed by another
// transaction in between cannot be ended without being reported.
func (t *tx) EndGrants(ctx context.Context, ops []opgate.OperatorID, when time.Time, by opgate.OperatorID, reason string) ([]lifecycle.Ended, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	in, args := inList(ops)
	r, err := t.rows(ctx, `UPDATE grants SET status = 'revoked', ended_at = ?, ended_by = ?, end_reason = ? WHERE operator_id IN (`+in+`) AND status IN ('active', 'pending_approval') RETURNING grant_id, operator_id`,
		append([]any{must(when), by, reason}, args...)...)
	return ended(t, r, err)
}

func (t *tx) ExpireGrants(ctx context.Context, now time.Time, n int) ([]authz.Grant, error) {
	r, err := t.rows(ctx, `SELECT `+grantCols+` FROM grants WHERE status = 'active' AND valid_until IS NOT NULL AND valid_until <= ? ORDER BY valid_until, grant_id LIMIT ?`+t.skipLocked(), must(now), limit(n))
	gs, err := collect(t, r, err, scanGrant)
	if err != nil {
		return nil, err
	}
	for i := range gs {
		gs[i].Status, gs[i].EndedAt = authz.Expired, gs[i].ValidUntil
		if err := t.UpdateGrant(ctx, gs[i]); err != nil {
			return nil, err
		}
	}
	return gs, nil
}

func (t *tx) CollectCards(ctx context.Context, ops []opgate.OperatorID, when time.Time) ([]lifecycle.Ended, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	in, args := inList(ops)
	r, err := t.rows(ctx, `UPDATE cards SET status = 'collected', status_changed_at = ? WHERE operator_id IN (`+in+`) AND status = 'active' RETURNING card_id, operator_id`,
		append([]any{must(when)}, args...)...)
	return ended(t, r, err)
}

func (t *tx) GetOperatorsForUpdate(ctx context.Context, ids []opgate.OperatorID) ([]lifecycle.Operator, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	in, args := inList(ids)
	r, err := t.rows(ctx, `SELECT `+operatorCols+` FROM operators WHERE operator_id IN (`+in+`) ORDER BY operator_id`+t.forUpdate(), args...)
	return collect(t, r, err, scanOperator)
}

func (t *tx) MoveOperators(ctx context.Context, ids []opgate.OperatorID, site opgate.SiteID) error {
	if len(ids) == 0 {
		return nil
	}
	in, args := inList(ids)
	_, err := t.exec(ctx, `UPDATE operators SET site_id = ? WHERE operator_id IN (`+in+`)`, append([]any{site}, args...)...)
	return err
}

func (t *tx) SetOperatorStatus(ctx context.Context, ids []opgate.OperatorID, status lifecycle.Status, when time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	in, args := inList(ids)
	_, err := t.exec(ctx, `UPDATE operators SET status = ?, status_changed_at = ? WHERE operator_id IN (`+in+`)`, append([]any{status, must(when)}, args...)...)
	return err
}

func (t *tx) FinishChanges(ctx context.Context, ids []opgate.ChangeID, status lifecycle.ChangeStatus, when time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	in, args := inList(ids)
	_, err := t.exec(ctx, `UPDATE scheduled_changes SET status = ?, done_at = ? WHERE change_id IN (`+in+`)`, append([]any{status, must(when)}, args...)...)
	return err
}

func (t *tx) DueOperators(ctx context.Context, now time.Time, n int) ([]lifecycle.Operator, error) {
	r, err := t.rows(ctx, `SELECT `+operatorCols+` FROM operators WHERE status IN ('active', 'suspended') AND valid_until IS NOT NULL AND valid_until <= ? ORDER BY valid_until, operator_id LIMIT ?`+t.skipLocked(), must(now), limit(n))
	return collect(t, r, err, scanOperator)
}

// ---- credentials

func (t *tx) GetPassword(ctx context.Context, op opgate.OperatorID) (authn.PasswordRecord, error) {
	p := authn.PasswordRecord{OperatorID: op}
	var set, exp int64
	err := t.row(ctx, `SELECT hash, temporary, set_at, expires_at FROM passwords WHERE operator_id = ?`, op).Scan(&p.Hash, &p.Temporary, &set, &exp)
	p.SetAt, p.ExpiresAt = at(set), at(exp)
	return p, t.db.translate(err)
}

func (t *tx) PutPassword(ctx context.Context, p authn.PasswordRecord) error {
	var old string
	var oldSet int64
	err := t.row(ctx, `SELECT hash, set_at FROM passwords WHERE operator_id = ?`+t.forUpdate(), p.OperatorID).Scan(&old, &oldSet)
	switch {
	case err == sql.ErrNoRows:
		_, err = t.exec(ctx, `INSERT INTO passwords (operator_id, hash, temporary, set_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			p.OperatorID, p.Hash, p.Temporary, must(p.SetAt), must(p.ExpiresAt))
		return err
	case err != nil:
		return t.db.translate(err)
	}
	if _, err := t.exec(ctx, `INSERT INTO password_history (operator_id, set_at, hash) VALUES (?, ?, ?)`, p.OperatorID, oldSet, old); err != nil {
		return err
	}
	return t.execOne(ctx, `UPDATE passwords SET hash = ?, temporary = ?, set_at = ?, expires_at = ? WHERE operator_id = ?`,
		p.Hash, p.Temporary, must(p.SetAt), must(p.ExpiresAt), p.OperatorID)
}

func (t *tx) PasswordHistory(ctx context.Context, op opgate.OperatorID, n int) ([]string, error) {
	r, err := t.rows(ctx, `SELECT hash FROM password_history WHERE operator_id = ? ORDER BY set_at DESC LIMIT ?`, op, limit(n))
	return ids[string](t, r, err)
}

func (t *tx) CreateEnrollment(ctx context.Context, e authn.Enrollment) error {
	_, err := t.exec(ctx, `INSERT INTO enrollments (code_hash, operator_id, card_serial, label, created_by, created_at, expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		e.CodeHash, e.OperatorID, e.CardSerial, e.Label, e.CreatedBy, must(e.CreatedAt), must(e.ExpiresAt), micros(e.UsedAt))
	return err
}

func (t *tx) TakeEnrollment(ctx context.Context, codeHash []byte, when time.Time) (authn.Enrollment, error) {
	e := authn.Enrollment{CodeHash: codeHash}
	var created, exp int64
	err := t.row(ctx, `SELECT operator_id, card_serial, label, created_by, created_at, expires_at FROM enrollments WHERE code_hash = ? AND used_at IS NULL`+t.forUpdate(), codeHash).
		Scan(&e.OperatorID, &e.CardSerial, &e.Label, &e.CreatedBy, &created, &exp)
	if err != nil {
		return e, t.db.translate(err)
	}
	e.CreatedAt, e.ExpiresAt, e.UsedAt = at(created), at(exp), when
	// The guard on used_at makes the take single-use even where the
	// engine has no row locks: of two takers, one updates no row.
	return e, t.execOne(ctx, `UPDATE enrollments SET used_at = ? WHERE code_hash = ? AND used_at IS NULL`, must(when), codeHash)
}

// ---- emergency stops

// ListStops reads the stops in force. In a write transaction (a login
// about to start a session) the read shares the table with other logins
// and waits for a stop or resume being written, whose lockStops it
// conflicts with: a stop either sees the login's session and ends it, or
// the login sees the stop. Without that, on PostgreSQL a login could read
// "no stop", and commit its session after the stop had ended the sessions
// it found.
func (t *tx) ListStops(ctx context.Context) ([]authn.Stop, error) {
	share := ""
	if !t.readOnly {
		share = t.db.D.ForShare
	}
	r, err := t.rows(ctx, `SELECT scope, reason, stopped_by, stopped_at FROM emergency_stops ORDER BY scope`+share)
	return collect(t, r, err, func(s scanner) (authn.Stop, error) {
		var st authn.Stop
		var when int64
		err := s.Scan(&st.Scope, &st.Reason, &st.StoppedBy, &when)
		st.StoppedAt = at(when)
		return st, err
	})
}

// lockStops holds the stops table against logins in flight until the
// transaction ends (see ListStops).
func (t *tx) lockStops(ctx context.Context) error {
	if t.db.D.LockExclusive == nil {
		return nil
	}
	_, err := t.exec(ctx, t.db.D.LockExclusive("emergency_stops"))
	return err
}

func (t *tx) PutStop(ctx context.Context, st authn.Stop) error {
	if err := t.lockStops(ctx); err != nil {
		return err
	}
	_, err := t.exec(ctx, `INSERT INTO emergency_stops (scope, reason, stopped_by, stopped_at) VALUES (?, ?, ?, ?)`, st.Scope, st.Reason, st.StoppedBy, must(st.StoppedAt))
	return err
}

func (t *tx) DeleteStop(ctx context.Context, scope opgate.SiteID) error {
	if err := t.lockStops(ctx); err != nil {
		return err
	}
	return t.execOne(ctx, `DELETE FROM emergency_stops WHERE scope = ?`, scope)
}

// ---- service keys

func (t *tx) PutServiceKey(ctx context.Context, k authn.ServiceKey) error {
	_, err := t.exec(ctx, `INSERT INTO service_keys (name, key_hash, created_at, revoked_at) VALUES (?, ?, ?, ?)`, k.Name, k.Hash, must(k.CreatedAt), micros(k.RevokedAt))
	return err
}

func (t *tx) GetServiceKeyByHash(ctx context.Context, hash []byte) (authn.ServiceKey, error) {
	k := authn.ServiceKey{Hash: hash}
	var created int64
	var revoked sql.NullInt64
	err := t.row(ctx, `SELECT name, created_at, revoked_at FROM service_keys WHERE key_hash = ?`, hash).Scan(&k.Name, &created, &revoked)
	k.CreatedAt, k.RevokedAt = at(created), fromMicros(revoked)
	return k, t.db.translate(err)
}

// ---- approvals

const approvalCols = `approval_id, action, site_id, requested_by, reason, created_at, expires_at, status, approved_by, approved_at, used_at, used_by_decision`

func scanApproval(s scanner) (authz.Approval, error) {
	var a authz.Approval
	var created, expires int64
	var approved, used sql.NullInt64
	err := s.Scan(&a.ID, &a.Action, &a.SiteID, &a.RequestedBy, &a.Reason, &created, &expires, &a.Status, &a.ApprovedBy, &approved, &used, &a.UsedBy)
	a.CreatedAt, a.ExpiresAt, a.ApprovedAt, a.UsedAt = at(created), at(expires), fromMicros(approved), fromMicros(used)
	return a, err
}

func (t *tx) CreateApproval(ctx context.Context, a authz.Approval) error {
	_, err := t.exec(ctx, `INSERT INTO approvals (`+approvalCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.Action, a.SiteID, a.RequestedBy, a.Reason, must(a.CreatedAt), must(a.ExpiresAt), a.Status, a.ApprovedBy, micros(a.ApprovedAt), micros(a.UsedAt), a.UsedBy)
	return err
}

func (t *tx) GetApproval(ctx context.Context, id string) (authz.Approval, error) {
	a, err := scanApproval(t.row(ctx, `SELECT `+approvalCols+` FROM approvals WHERE approval_id = ?`+t.forUpdate(), id))
	return a, t.db.translate(err)
}

func (t *tx) ApproveApproval(ctx context.Context, id string, by opgate.OperatorID, when time.Time) error {
	return t.execOne(ctx, `UPDATE approvals SET status = 'approved', approved_by = ?, approved_at = ? WHERE approval_id = ? AND status = 'pending'`, by, must(when), id)
}

// UseApproval marks an approved, unexpired approval of op for action at
// site used by decision. The guards in the statement make the use single:
// of any number of concurrent uses, on any replica, one changes the row.
func (t *tx) UseApproval(ctx context.Context, id string, op opgate.OperatorID, action opgate.Permission, site opgate.SiteID, decision string, when time.Time) (bool, error) {
	r, err := t.exec(ctx, `UPDATE approvals SET status = 'used', used_at = ?, used_by_decision = ? WHERE approval_id = ? AND status = 'approved' AND requested_by = ? AND action = ? AND site_id = ? AND expires_at > ?`,
		must(when), decision, id, op, action, site, must(when))
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, t.db.translate(err)
}
