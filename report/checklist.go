package report

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/policy"
)

// Facts are the counts the checklist is scored from, read from live data
// in one pass of small aggregate queries.
type Facts struct {
	ActiveOperators         int
	SharedSerials           int // active card serials held by more than one operator
	UnattributedGrants      int // live grants without granter or reason, or of an unknown role
	GrantsAwayFromHome      int // live grants at a site other than the operator's own (not "*")
	DormantOperators        int // active, no login for dormant_after_s
	PastValidity            int // active or suspended past valid_until
	ExpiredPasswords        int // active operators with an expired password
	AuditReaders            int // live grants of roles holding audit.read
	DepartedWithCards       int // retired or expired operators with an active card
	TransferredWithOldCards int // active cards enrolled before the holder's last transfer
	LiveSessionsBadCards    int // live sessions made with a card no longer active
	LoginsAfterLoss         int // successful logins with a card after it was reported lost or stolen
	CloneSuspectsActive     int // active cards flagged as possibly cloned
	OtherSiteRefusals       int // refusals at another site's terminal in the last 30 days
	HighRiskUnapproved      int // live high-risk grants approved by nobody, or by their granter
	BroadHolders            int // operators with more than MaxGrants live grants
	// LastReview is, per site with live grants, when its last review
	// closed (zero: never).
	LastReview map[opgate.SiteID]time.Time
	// LastAnomalyRead is when someone last produced the anomaly report.
	LastAnomalyRead time.Time
}

// MaxGrants is how many live grants one operator may hold before the
// checklist calls it broad (CL 18-1).
const MaxGrants = 3

// ChecklistItem is one scored item: 3 運用している, 2 整備している, 1 整備していない.
type ChecklistItem struct {
	Item     string `json:"item"`
	Title    string `json:"title"`
	Score    int    `json:"score"`
	Evidence string `json:"evidence"`
}

// ChecklistTable is the self-assessment's layout.
var ChecklistTable = Table{Name: "セキュリティチェックリスト", Columns: []Column{
	{"item", "項目 (item)"}, {"title", "調査項目 (title)"}, {"score", "回答 (score)"}, {"evidence", "根拠 (evidence)"},
}}

// Cells is the row in the spreadsheet.
func (c ChecklistItem) Cells() []string {
	return []string{c.Item, c.Title, strconv.Itoa(c.Score), c.Evidence}
}

// Checklist scores the items this system can evidence.
func (s *Service) Checklist(ctx context.Context) ([]ChecklistItem, error) {
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clk.Now()
	f, err := s.src.Facts(ctx, now, p)
	if err != nil {
		return nil, err
	}
	return Score(f, p, now), nil
}

// two scores an item from two conditions: both hold 3, one 2, none 1.
func two(item, title string, a, b bool, evidence string) ChecklistItem {
	score := 1
	if a {
		score++
	}
	if b {
		score++
	}
	return ChecklistItem{Item: item, Title: title, Score: score, Evidence: evidence}
}

func yes(b bool) string {
	if b {
		return "○"
	}
	return "×"
}

const day = 24 * time.Hour

// Score turns facts and policy into the checklist (seed 000, second
// table; titles as the checklist words them). Each item weighs two
// conditions this system can see — one of configuration, one of the
// data — so that 3 means both are in force and in use.
func Score(f Facts, p policy.Policy, now time.Time) []ChecklistItem {
	noPasswordOnly := !p.Allows(policy.MethodPassword)
	var out []ChecklistItem
	add := func(c ChecklistItem) { out = append(out, c) }

	add(two("10-2", "ユーザIDの所有者を明確にしている", noPasswordOnly, f.SharedSerials == 0,
		fmt.Sprintf("%s ICカードなしのパスワードのみのログインを認めない (login methods %v); %s 複数の操作者に有効なカード番号: %d件; 有効な操作者ID %d件",
			yes(noPasswordOnly), p.LoginMethods, yes(f.SharedSerials == 0), f.SharedSerials, f.ActiveOperators)))
	add(two("10-3", "ユーザIDに付与された権限が明確である", f.UnattributedGrants == 0, f.GrantsAwayFromHome == 0,
		fmt.Sprintf("%s 付与者・理由・ロールの不明な権限: %d件; %s 所属拠点以外での権限: %d件",
			yes(f.UnattributedGrants == 0), f.UnattributedGrants, yes(f.GrantsAwayFromHome == 0), f.GrantsAwayFromHome)))
	add(two("10-4", "不要なユーザIDは登録していない", f.DormantOperators == 0, f.PastValidity == 0,
		fmt.Sprintf("%s %d日以上未使用の有効なID: %d件; %s 有効期限を過ぎたID: %d件",
			yes(f.DormantOperators == 0), int(p.DormantAfter/day), f.DormantOperators, yes(f.PastValidity == 0), f.PastValidity)))
	maxAge90 := p.Password.MaxAge <= 90*day
	add(two("11-1", "OSのパスワードに有効期限を設定している", maxAge90, f.ExpiredPasswords == 0,
		fmt.Sprintf("%s パスワード有効期限 %d日 (90日以内); %s 期限切れのパスワードを持つ有効な操作者: %d件",
			yes(maxAge90), int(p.Password.MaxAge/day), yes(f.ExpiredPasswords == 0), f.ExpiredPasswords)))
	hist := p.Password.History >= 3
	add(two("11-3", "容易に推測されるパスワードを使用していない", p.Password.Denylist, hist,
		fmt.Sprintf("%s 推測されやすいパスワードの拒否リスト: %t; %s 直近%d個のパスワードの再利用禁止 (3以上)",
			yes(p.Password.Denylist), p.Password.Denylist, yes(hist), p.Password.History)))
	minLen := p.Password.MinLength >= 10
	mixed := p.Password.RequireLetter && p.Password.RequireDigit
	add(two("11-5", "OSのパスワードの最低桁数等の制限をしている", minLen, mixed,
		fmt.Sprintf("%s 最低桁数 %d (10以上); %s 英字と数字の混在: %t", yes(minLen), p.Password.MinLength, yes(mixed), mixed)))
	keepLogins := p.Retention.Logins >= 365*day
	add(two("12-1", "OSに対するログオン失敗履歴を記録している", keepLogins, f.AuditReaders > 0,
		fmt.Sprintf("ログオン失敗はすべて改ざん検知可能な履歴に記録; %s ログイン履歴の保存期間 %d日 (1年以上); %s 履歴を閲覧できる者: %d件",
			yes(keepLogins), int(p.Retention.Logins/day), yes(f.AuditReaders > 0), f.AuditReaders)))
	threshold := p.Lockout.Threshold <= 5
	escalates := p.Lockout.Duration >= 15*time.Minute && p.Lockout.PermanentAfter >= 1
	add(two("12-2", "複数回パスワード入力を間違えた場合、ロックアウトするように設定している", threshold, escalates,
		fmt.Sprintf("%s %d回の失敗でロック (5回以下); %s ロック時間 %d分 (15分以上), %d回のロックで管理者による解除まで継続",
			yes(threshold), p.Lockout.Threshold, yes(escalates), int(p.Lockout.Duration/time.Minute), p.Lockout.PermanentAfter)))
	add(two("16-1", "操作者識別カードを個人ごとに貸与し、人事異動に際しては回収している", f.DepartedWithCards == 0, f.TransferredWithOldCards == 0,
		fmt.Sprintf("%s 退職・失効した操作者の有効なカード: %d件; %s 異動前から有効なままのカード: %d件",
			yes(f.DepartedWithCards == 0), f.DepartedWithCards, yes(f.TransferredWithOldCards == 0), f.TransferredWithOldCards)))
	add(two("16-4", "操作者識別カードの紛失・盗難時は速やかに失効手続をとっている", f.LiveSessionsBadCards == 0, f.LoginsAfterLoss == 0,
		fmt.Sprintf("%s 失効したカードで継続中のセッション: %d件; %s 紛失・盗難届出後のカードによるログイン: %d件",
			yes(f.LiveSessionsBadCards == 0), f.LiveSessionsBadCards, yes(f.LoginsAfterLoss == 0), f.LoginsAfterLoss)))
	add(two("16-5", "操作者識別カードが適正に利用されているか検査を行っている", f.CloneSuspectsActive == 0, f.OtherSiteRefusals == 0,
		fmt.Sprintf("%s 複製の疑いがあり有効なままのカード: %d件; %s 直近30日の他拠点端末での拒否: %d件",
			yes(f.CloneSuspectsActive == 0), f.CloneSuspectsActive, yes(f.OtherSiteRefusals == 0), f.OtherSiteRefusals)))
	add(two("17-1", "操作者識別カードのパスワードに有効期限を設定している", noPasswordOnly, maxAge90,
		fmt.Sprintf("%s ログインにはカードが必須 (%v); %s パスワード有効期限 %d日 (90日以内)",
			yes(noPasswordOnly), p.LoginMethods, yes(maxAge90), int(p.Password.MaxAge/day))))
	add(two("17-5", "操作者識別カードのパスワードの最低桁数等の制限をしている", minLen, p.Password.Denylist,
		fmt.Sprintf("%s 最低桁数 %d (10以上); %s 拒否リスト: %t", yes(minLen), p.Password.MinLength, yes(p.Password.Denylist), p.Password.Denylist)))
	add(two("18-1", "利用者の業務に必要な最低限の権限を付与している", f.HighRiskUnapproved == 0, f.BroadHolders == 0,
		fmt.Sprintf("%s 別の者の承認のない高リスク権限: %d件; %s %d件を超える権限を持つ操作者: %d件",
			yes(f.HighRiskUnapproved == 0), f.HighRiskUnapproved, yes(f.BroadHolders == 0), MaxGrants, f.BroadHolders)))
	add(reviewItem(f, now))
	read := !f.LastAnomalyRead.IsZero() && now.Sub(f.LastAnomalyRead) <= 31*day
	last := "なし"
	if !f.LastAnomalyRead.IsZero() {
		last = f.LastAnomalyRead.UTC().Format(time.RFC3339)
	}
	add(two("19-1", "アプリケーションの操作履歴をチェックしている", f.AuditReaders > 0, read,
		fmt.Sprintf("%s 履歴を閲覧できる者: %d件; %s 直近31日の不審操作レポートの確認 (最終: %s)", yes(f.AuditReaders > 0), f.AuditReaders, yes(read), last)))
	seven := p.Retention.Decisions >= policy.Retention7Years
	year := p.Retention.Logins >= 365*day && p.Retention.Other >= 365*day
	add(two("19-2", "アプリケーションの操作履歴の保管期限を設定している", seven, year,
		fmt.Sprintf("%s 判定記録の保存期間 %d日 (7年以上); %s ログイン %d日・その他 %d日 (1年以上)",
			yes(seven), int(p.Retention.Decisions/day), yes(year), int(p.Retention.Logins/day), int(p.Retention.Other/day))))
	return out
}

// reviewItem scores CL 18-2 from the last completed review (closed, with
// no escalated item left undecided) of each site that has live grants: 3
// when every one completed a review within a quarter (100 days), 2 when
// every one did within a year, else 1.
func reviewItem(f Facts, now time.Time) ChecklistItem {
	const title = "担当業務の変更に伴い、利用者に付与された権限の見直しを定期的に行っている"
	quarter, year, never := 0, 0, 0
	oldest := time.Duration(0)
	for _, t := range f.LastReview {
		switch {
		case t.IsZero():
			never++
		case now.Sub(t) <= 100*day:
			quarter++
		case now.Sub(t) <= 366*day:
			year++
		}
		if !t.IsZero() && now.Sub(t) > oldest {
			oldest = now.Sub(t)
		}
	}
	n := len(f.LastReview)
	score := 1
	switch {
	case quarter == n:
		score = 3
	case quarter+year == n:
		score = 2
	}
	return ChecklistItem{Item: "18-2", Title: title, Score: score,
		Evidence: fmt.Sprintf("権限のある拠点 %d: 100日以内に見直し完了 %d, 1年以内 %d, それ以前または未実施 %d (未実施 %d); 最も古い見直し %d日前",
			n, quarter, year, n-quarter-year, never, int(oldest/day))}
}
