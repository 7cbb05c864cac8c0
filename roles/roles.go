// Package roles owns the permission catalog (which duty operations exist and
// which of them are high risk), roles built from it, the separation-of-duty
// conflicts between roles, and the built-in roles seeded at bootstrap
// (R3.1, R3.3). It does not know who holds a role: grants belong to authz.
package roles

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/opgate/opgate"
)

// The permission catalog (API.md, Sites, terminals, roles).
const (
	ResidentRead           opgate.Permission = "resident.read"
	ResidentUpdate         opgate.Permission = "resident.update"
	ResidentReadRestricted opgate.Permission = "resident.read_restricted"
	ResidentBulkExport     opgate.Permission = "resident.bulk_export"
	CertificateIssue       opgate.Permission = "certificate.issue"
	CardIssue              opgate.Permission = "card.issue"
	OperatorManage         opgate.Permission = "operator.manage"
	GrantManage            opgate.Permission = "grant.manage"
	GrantApprove           opgate.Permission = "grant.approve"
	ReviewPerform          opgate.Permission = "review.perform"
	TerminalManage         opgate.Permission = "terminal.manage"
	SiteManage             opgate.Permission = "site.manage"
	RoleManage             opgate.Permission = "role.manage"
	PolicyManage           opgate.Permission = "policy.manage"
	AuditRead              opgate.Permission = "audit.read"
	ReportRead             opgate.Permission = "report.read"
	EmergencyStop          opgate.Permission = "emergency.stop"
)

// Entry describes one permission of the catalog.
type Entry struct {
	Permission  opgate.Permission
	Description string
	HighRisk    bool
}

var catalog = []Entry{
	{ResidentRead, "住民票・本人確認情報の照会 (read resident records)", false},
	{ResidentUpdate, "住民記録の更新 (update resident records)", false},
	{ResidentReadRestricted, "DV・ストーカー等支援措置対象者の記録の照会 (read records under victim support measures)", true},
	{ResidentBulkExport, "住民データの一括出力 (bulk export of resident data)", true},
	{CertificateIssue, "証明書の交付 (issue certificates)", false},
	{CardIssue, "カードの交付 (issue cards to residents)", false},
	{OperatorManage, "操作者IDの発行・異動・退職 (manage operator IDs)", false},
	{GrantManage, "操作権限の付与・取消 (grant and revoke roles)", false},
	{GrantApprove, "高リスク権限付与の承認 (approve high-risk grants)", false},
	{ReviewPerform, "操作権限の定期見直し (perform permission reviews)", false},
	{TerminalManage, "端末の登録・削除 (register terminals)", false},
	{SiteManage, "拠点の登録 (manage sites)", false},
	{RoleManage, "ロールの定義 (define roles)", true},
	{PolicyManage, "セキュリティポリシーの変更 (change the security policy)", true},
	{AuditRead, "操作履歴の閲覧 (read the audit history)", false},
	{ReportRead, "帳票の閲覧 (read reports)", false},
	{EmergencyStop, "緊急時のログイン停止・再開 (emergency stop and resume)", false},
}

// Catalog returns every permission, in a stable order.
func Catalog() []Entry { return slices.Clone(catalog) }

// Known reports whether p is in the catalog.
func Known(p opgate.Permission) bool {
	_, ok := lookup(p)
	return ok
}

// HighRisk reports whether p needs a second person's approval to be granted.
func HighRisk(p opgate.Permission) bool {
	e, ok := lookup(p)
	return ok && e.HighRisk
}

func lookup(p opgate.Permission) (Entry, bool) {
	for _, e := range catalog {
		if e.Permission == p {
			return e, true
		}
	}
	return Entry{}, false
}

// Role is a named set of permissions.
type Role struct {
	ID            opgate.RoleID
	Name          string
	Permissions   []opgate.Permission
	ConflictsWith []opgate.RoleID
	BuiltIn       bool
}

// HighRisk reports whether the role holds any high-risk permission.
func (r Role) HighRisk() bool {
	return slices.ContainsFunc(r.Permissions, HighRisk)
}

// Has reports whether the role gives p.
func (r Role) Has(p opgate.Permission) bool { return slices.Contains(r.Permissions, p) }

// Built-in role IDs.
const (
	CounterClerk  opgate.RoleID = "counter_clerk"
	CounterViewer opgate.RoleID = "counter_viewer"
	SectionChief  opgate.RoleID = "section_chief"
	SecurityAdmin opgate.RoleID = "security_admin"
	Auditor       opgate.RoleID = "auditor"
)

// BuiltIn returns the roles seeded at bootstrap. Administrators administer,
// they do not serve the counter: security_admin holds every permission but
// the resident and certificate duties.
func BuiltIn() []Role {
	var admin []opgate.Permission
	for _, e := range catalog {
		switch e.Permission {
		case ResidentRead, ResidentUpdate, ResidentReadRestricted, ResidentBulkExport, CertificateIssue, CardIssue:
		default:
			admin = append(admin, e.Permission)
		}
	}
	return []Role{
		{ID: CounterClerk, Name: "窓口担当 (counter clerk)", Permissions: []opgate.Permission{ResidentRead, ResidentUpdate, CertificateIssue}, BuiltIn: true},
		{ID: CounterViewer, Name: "照会担当 (counter viewer)", Permissions: []opgate.Permission{ResidentRead}, BuiltIn: true},
		{ID: SectionChief, Name: "拠点管理権限操作者 (section chief)", Permissions: []opgate.Permission{OperatorManage, GrantManage, ReviewPerform, TerminalManage, ReportRead}, BuiltIn: true},
		{ID: SecurityAdmin, Name: "セキュリティ管理者 (security administrator)", Permissions: admin, ConflictsWith: []opgate.RoleID{Auditor}, BuiltIn: true},
		{ID: Auditor, Name: "監査者 (auditor)", Permissions: []opgate.Permission{AuditRead, ReportRead}, ConflictsWith: []opgate.RoleID{SecurityAdmin}, BuiltIn: true},
	}
}

// AllSitesAllowed reports whether a role may be granted at every site ("*").
func AllSitesAllowed(id opgate.RoleID) bool { return id == SecurityAdmin || id == Auditor }

// Conflict reports whether holding a and b together breaks separation of
// duties, in either direction of conflicts_with.
func Conflict(a, b Role) bool {
	return slices.Contains(a.ConflictsWith, b.ID) || slices.Contains(b.ConflictsWith, a.ID)
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{1,62}$`)

// ValidID reports whether s is a caller-chosen ID of the contract's form.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// ErrInvalid is wrapped by every validation failure of a role.
var ErrInvalid = errors.New("roles: invalid role")

// FieldError names what is wrong with one field.
type FieldError struct{ Field, Message string }

// ValidationError lists every problem of a role at once.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string { return fmt.Sprintf("roles: invalid role: %v", e.Fields) }
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Validate checks a role against the catalog.
func Validate(r Role) error {
	var fe []FieldError
	if !ValidID(string(r.ID)) {
		fe = append(fe, FieldError{"role_id", "must match ^[a-z0-9][a-z0-9_-]{1,62}$"})
	}
	if r.Name == "" || len(r.Name) > 200 {
		fe = append(fe, FieldError{"name", "required, at most 200 bytes"})
	}
	if len(r.Permissions) == 0 {
		fe = append(fe, FieldError{"permissions", "at least one permission"})
	}
	for _, p := range r.Permissions {
		if !Known(p) {
			fe = append(fe, FieldError{"permissions", fmt.Sprintf("unknown permission %q", p)})
		}
	}
	for _, c := range r.ConflictsWith {
		if c == r.ID {
			fe = append(fe, FieldError{"conflicts_with", "a role cannot conflict with itself"})
		} else if !ValidID(string(c)) {
			fe = append(fe, FieldError{"conflicts_with", fmt.Sprintf("invalid role id %q", c)})
		}
	}
	if fe != nil {
		return &ValidationError{Fields: fe}
	}
	return nil
}
