package report

import (
	"strings"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/review"
)

// ReviewRow is one item of a review campaign, as the campaign report
// shows it (CL 18-2: the record of the review).
type ReviewRow struct {
	ItemID       string            `json:"item_id"`
	GrantID      opgate.GrantID    `json:"grant_id"`
	OperatorID   opgate.OperatorID `json:"operator_id"`
	OperatorName string            `json:"operator_name"`
	RoleID       opgate.RoleID     `json:"role_id"`
	GrantedBy    opgate.OperatorID `json:"granted_by"`
	GrantedAt    T                 `json:"granted_at"`
	ValidUntil   T                 `json:"valid_until"`
	LastLoginAt  T                 `json:"last_login_at"`
	LastUsedAt   T                 `json:"last_used_at"`
	Hints        []string          `json:"hints"`
	Decision     string            `json:"decision"`
	Reason       string            `json:"reason"`
	DecidedBy    opgate.OperatorID `json:"decided_by"`
	DecidedAt    T                 `json:"decided_at"`
}

// ReviewTable is the campaign report's layout.
var ReviewTable = Table{Name: "権限見直し", Columns: []Column{
	{"item_id", "項目 (item)"}, {"grant_id", "権限ID (grant)"}, {"operator_id", "操作者ID (operator)"}, {"operator_name", "氏名 (name)"},
	{"role_id", "ロール (role)"}, {"granted_by", "付与者 (granted by)"}, {"granted_at", "付与日 (granted)"}, {"valid_until", "期限 (until)"},
	{"last_login_at", "最終ログイン (last login)"}, {"last_used_at", "最終使用 (last use)"}, {"hints", "注意 (hints)"},
	{"decision", "判断 (decision)"}, {"reason", "理由 (reason)"}, {"decided_by", "判断者 (decided by)"}, {"decided_at", "判断日 (decided)"},
}}

// ReviewRowOf is the row of one item.
func ReviewRowOf(it review.Item) ReviewRow {
	return ReviewRow{ItemID: it.ID, GrantID: it.GrantID, OperatorID: it.OperatorID, OperatorName: it.OperatorName, RoleID: it.RoleID,
		GrantedBy: it.GrantedBy, GrantedAt: T(it.GrantedAt), ValidUntil: T(it.ValidUntil), LastLoginAt: T(it.LastLoginAt), LastUsedAt: T(it.LastUsedAt),
		Hints: it.Hints, Decision: string(it.Decision), Reason: it.Reason, DecidedBy: it.DecidedBy, DecidedAt: T(it.DecidedAt)}
}

// Cells is the row in the spreadsheet.
func (r ReviewRow) Cells() []string {
	return []string{r.ItemID, string(r.GrantID), string(r.OperatorID), r.OperatorName, string(r.RoleID), string(r.GrantedBy), r.GrantedAt.String(),
		r.ValidUntil.String(), r.LastLoginAt.String(), r.LastUsedAt.String(), strings.Join(r.Hints, " "), r.Decision, r.Reason, string(r.DecidedBy), r.DecidedAt.String()}
}
