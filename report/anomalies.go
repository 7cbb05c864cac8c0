package report

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
)

func decisionData(e audit.Event) decision {
	var d decision
	_ = json.Unmarshal(e.Data, &d) // written by authz.Check: a missing field stays zero
	return d
}

// Anomaly kinds (R3.7, CL 16-5, 26-1/31-1).
const (
	OffHoursLogin    = "off_hours_login"
	FailureBurst     = "failure_burst"
	PossibleClone    = "possible_clone"
	OtherSiteRefusal = "other_site_refusal"
	RestrictedRead   = "restricted_read"
	DecisionVolume   = "decision_volume"
)

// VolumeFactor is how far above its site's median an operator's decisions
// in a day must be to be reported.
const VolumeFactor = 5

// AnomalyRow is one finding.
type AnomalyRow struct {
	Kind       string            `json:"kind"`
	At         T                 `json:"at"`
	OperatorID opgate.OperatorID `json:"operator_id"`
	SiteID     opgate.SiteID     `json:"site_id"`
	TerminalID opgate.TerminalID `json:"terminal_id"`
	Resource   string            `json:"resource"`
	Count      int               `json:"count"`
	Detail     string            `json:"detail"`
}

// AnomalyTable is the anomaly report's layout.
var AnomalyTable = Table{Name: "不審な操作", Columns: []Column{
	{"kind", "種別 (kind)"}, {"at", "日時 (time)"}, {"operator_id", "操作者ID (operator)"}, {"site_id", "拠点 (site)"},
	{"terminal_id", "端末 (terminal)"}, {"resource", "対象 (resource)"}, {"count", "件数 (count)"}, {"detail", "内容 (detail)"},
}}

// Cells is the row in the spreadsheet.
func (r AnomalyRow) Cells() []string {
	return []string{r.Kind, r.At.String(), string(r.OperatorID), string(r.SiteID), string(r.TerminalID), r.Resource, strconv.Itoa(r.Count), r.Detail}
}

// Anomalies writes the findings of a period [from, to).
func (s *Service) Anomalies(ctx context.Context, from, to time.Time, w Writer) error {
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return err
	}
	oh := p.OfficeHours
	// Logins outside office hours.
	err = s.src.Events(ctx, EventQuery{Types: []audit.Type{audit.LoginSucceeded}, From: from, To: to}, func(e audit.Event) error {
		if oh.Within(e.At) {
			return nil
		}
		return w.Write(AnomalyRow{Kind: OffHoursLogin, At: T(e.At), OperatorID: e.OperatorID, SiteID: e.SiteID, TerminalID: e.TerminalID,
			Resource: e.Resource, Count: 1, Detail: "勤務時間外のログイン (login outside office hours, local " + e.At.Add(oh.UTCOffset).UTC().Format("Mon 15:04") + ")"})
	})
	if err != nil {
		return err
	}
	// Bursts of failures: the lockout threshold of failures by one
	// operator, or from one terminal, within the lockout window.
	windows := map[string][]time.Time{}
	reported := map[string]time.Time{}
	err = s.src.Events(ctx, EventQuery{Types: []audit.Type{audit.LoginFailed}, From: from, To: to}, func(e audit.Event) error {
		keys := []string{}
		if e.OperatorID != "" {
			keys = append(keys, "operator:"+string(e.OperatorID))
		}
		if e.TerminalID != "" {
			keys = append(keys, "terminal:"+string(e.TerminalID))
		}
		for _, k := range keys {
			ws := append(windows[k], e.At)
			for len(ws) > 0 && e.At.Sub(ws[0]) > p.Lockout.Window {
				ws = ws[1:]
			}
			windows[k] = ws
			if len(ws) >= p.Lockout.Threshold {
				if last, ok := reported[k]; ok && e.At.Sub(last) <= p.Lockout.Window {
					continue // one finding per burst
				}
				reported[k] = e.At
				row := AnomalyRow{Kind: FailureBurst, At: T(ws[0]), Resource: k, Count: len(ws),
					Detail: fmt.Sprintf("%d回のログイン失敗が%s以内 (%d failed logins within %s)", len(ws), p.Lockout.Window, len(ws), p.Lockout.Window)}
				if k[0] == 'o' {
					row.OperatorID, row.SiteID = e.OperatorID, e.SiteID
				} else {
					row.TerminalID = e.TerminalID
				}
				if err := w.Write(row); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Possibly cloned cards: flagged when a signature counter went back.
	clones, err := s.src.CloneSuspects(ctx)
	if err != nil {
		return err
	}
	for _, c := range clones {
		if err := w.Write(AnomalyRow{Kind: PossibleClone, At: T(c.ChangedAt), OperatorID: c.OperatorID, SiteID: c.SiteID, Resource: "card:" + string(c.CardID), Count: 1,
			Detail: "署名カウンタの逆行 (signature counter went back): serial " + c.Serial + ", status " + c.Status}); err != nil {
			return err
		}
	}
	// Refusals at another site's terminal: logins and decisions.
	err = s.src.Events(ctx, EventQuery{Types: []audit.Type{audit.LoginFailed, audit.AuthzDecided}, Reasons: []string{"terminal_other_site", "terminal_site_mismatch"},
		From: from, To: to}, func(e audit.Event) error {
		return w.Write(AnomalyRow{Kind: OtherSiteRefusal, At: T(e.At), OperatorID: e.OperatorID, SiteID: e.SiteID, TerminalID: e.TerminalID, Resource: e.Resource, Count: 1,
			Detail: "他拠点の端末での拒否 (refused at another site's terminal): " + e.Reason})
	})
	if err != nil {
		return err
	}
	// Reads of restricted records (DV/stalker support measures).
	err = s.src.Events(ctx, EventQuery{Types: []audit.Type{audit.AuthzDecided}, Restricted: true, From: from, To: to}, func(e audit.Event) error {
		d := decisionData(e)
		return w.Write(AnomalyRow{Kind: RestrictedRead, At: T(e.At), OperatorID: e.OperatorID, SiteID: e.SiteID, TerminalID: e.TerminalID, Resource: e.Resource, Count: 1,
			Detail: fmt.Sprintf("支援措置対象者の記録 (restricted record): %s allowed=%t purpose=%q", d.Action, d.Allowed, d.Purpose)})
	})
	if err != nil {
		return err
	}
	// Unusual volumes (R3.7): an operator's decisions in a day far above
	// the median of their site that day.
	counts, err := s.src.DecisionCounts(ctx, from, to, oh.UTCOffset)
	if err != nil {
		return err
	}
	for _, c := range Outliers(counts, VolumeFactor) {
		if err := w.Write(AnomalyRow{Kind: DecisionVolume, OperatorID: c.OperatorID, SiteID: c.SiteID, Resource: "day:" + c.Day, Count: c.N,
			Detail: fmt.Sprintf("%s: 拠点の中央値の%d倍超 (over %d× the site's median of %g)", c.Day, VolumeFactor, VolumeFactor, c.Median)}); err != nil {
			return err
		}
	}
	return nil
}

// Outlier is a day count above factor times its site's median that day.
type Outlier struct {
	DayCount
	Median float64
}

// Outliers finds the operators whose decisions in a day exceed factor
// times the median of everybody deciding at their site that day.
func Outliers(counts []DayCount, factor float64) []Outlier {
	type key struct {
		site opgate.SiteID
		day  string
	}
	groups := map[key][]DayCount{}
	var order []key
	for _, c := range counts {
		k := key{c.SiteID, c.Day}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], c)
	}
	var out []Outlier
	for _, k := range order {
		g := groups[k]
		ns := make([]int, len(g))
		for i, c := range g {
			ns[i] = c.N
		}
		slices.Sort(ns)
		var med float64
		if n := len(ns); n%2 == 1 {
			med = float64(ns[n/2])
		} else {
			med = float64(ns[n/2-1]+ns[n/2]) / 2
		}
		for _, c := range g {
			if float64(c.N) > factor*med {
				out = append(out, Outlier{c, med})
			}
		}
	}
	return out
}

// ---- dormant and expiring

// Expiring kinds.
const (
	DormantOperator   = "dormant_operator"
	OperatorExpiring  = "operator_expiring"
	GrantExpiring     = "grant_expiring"
	PasswordExpiring  = "password_expiring"
	ExpiringWithin    = 30 * 24 * time.Hour
	PasswordExpiryDue = 14 * 24 * time.Hour
)

// ExpiringQuery bounds the dormant and expiring report.
type ExpiringQuery struct {
	SiteID        opgate.SiteID // "" for every site
	DormantBefore time.Time     // last login (or issue) before this
	Now           time.Time
	Until         time.Time // operators and grants ending before this
	PasswordUntil time.Time // passwords expiring before this
}

// ExpiringRow is one dormant operator or one thing about to expire.
type ExpiringRow struct {
	Kind       string            `json:"kind"`
	OperatorID opgate.OperatorID `json:"operator_id"`
	Name       string            `json:"name"`
	SiteID     opgate.SiteID     `json:"site_id"`
	Status     string            `json:"status"`
	GrantID    opgate.GrantID    `json:"grant_id,omitempty"`
	RoleID     opgate.RoleID     `json:"role_id,omitempty"`
	At         T                 `json:"at"` // last login, or when it ends
}

// ExpiringTable is the dormant and expiring report's layout.
var ExpiringTable = Table{Name: "休眠・期限切れ予定", Columns: []Column{
	{"kind", "種別 (kind)"}, {"operator_id", "操作者ID (operator)"}, {"name", "氏名 (name)"}, {"site_id", "拠点 (site)"},
	{"status", "状態 (status)"}, {"grant_id", "権限ID (grant)"}, {"role_id", "ロール (role)"}, {"at", "日時 (time)"},
}}

// Cells is the row in the spreadsheet.
func (r ExpiringRow) Cells() []string {
	return []string{r.Kind, string(r.OperatorID), r.Name, string(r.SiteID), r.Status, string(r.GrantID), string(r.RoleID), r.At.String()}
}

// Dormant writes operators unused for the policy's dormancy period, and
// operators and grants ending within 30 days and passwords within 14
// (R1.6, CL 10-4).
func (s *Service) Dormant(ctx context.Context, site opgate.SiteID, w Writer) error {
	p, err := s.pol.Policy(ctx)
	if err != nil {
		return err
	}
	now := s.clk.Now()
	q := ExpiringQuery{SiteID: site, DormantBefore: now.Add(-p.DormantAfter), Now: now, Until: now.Add(ExpiringWithin), PasswordUntil: now.Add(PasswordExpiryDue)}
	return s.src.Expiring(ctx, q, func(r ExpiringRow) error { return w.Write(r) })
}
