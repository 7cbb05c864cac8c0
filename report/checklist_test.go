package report_test

import (
	"testing"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/policy"
	"github.com/opgate/opgate/report"
)

var now = time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)

// good is data and policy under which every item scores 3.
func good() (report.Facts, policy.Policy) {
	return report.Facts{
		ActiveOperators: 10, AuditReaders: 1,
		LastReview:      map[opgate.SiteID]time.Time{"honcho": now.Add(-30 * 24 * time.Hour), "kita": now.Add(-60 * 24 * time.Hour)},
		LastAnomalyRead: now.Add(-24 * time.Hour),
	}, policy.Default()
}

// TestChecklistScores proves each item's 1, 2 and 3: from a state where
// every item scores 3, breaking one of its two conditions gives 2 and
// breaking both gives 1; no other item moves.
func TestChecklistScores(t *testing.T) {
	type change func(*report.Facts, *policy.Policy)
	day := 24 * time.Hour
	cases := []struct {
		item string
		a, b change
	}{
		{"10-2", func(f *report.Facts, p *policy.Policy) { p.LoginMethods = []string{"card", "password"} }, func(f *report.Facts, p *policy.Policy) { f.SharedSerials = 1 }},
		{"10-3", func(f *report.Facts, p *policy.Policy) { f.UnattributedGrants = 2 }, func(f *report.Facts, p *policy.Policy) { f.GrantsAwayFromHome = 1 }},
		{"10-4", func(f *report.Facts, p *policy.Policy) { f.DormantOperators = 3 }, func(f *report.Facts, p *policy.Policy) { f.PastValidity = 1 }},
		{"11-1", func(f *report.Facts, p *policy.Policy) { p.Password.MaxAge = 180 * day }, func(f *report.Facts, p *policy.Policy) { f.ExpiredPasswords = 1 }},
		{"11-3", func(f *report.Facts, p *policy.Policy) { p.Password.Denylist = false }, func(f *report.Facts, p *policy.Policy) { p.Password.History = 1 }},
		{"11-5", func(f *report.Facts, p *policy.Policy) { p.Password.MinLength = 8 }, func(f *report.Facts, p *policy.Policy) { p.Password.RequireDigit = false }},
		{"12-1", func(f *report.Facts, p *policy.Policy) { p.Retention.Logins = 30 * day }, func(f *report.Facts, p *policy.Policy) { f.AuditReaders = 0 }},
		{"12-2", func(f *report.Facts, p *policy.Policy) { p.Lockout.Threshold = 10 }, func(f *report.Facts, p *policy.Policy) { p.Lockout.PermanentAfter = 0 }},
		{"16-1", func(f *report.Facts, p *policy.Policy) { f.DepartedWithCards = 1 }, func(f *report.Facts, p *policy.Policy) { f.TransferredWithOldCards = 1 }},
		{"16-4", func(f *report.Facts, p *policy.Policy) { f.LiveSessionsBadCards = 1 }, func(f *report.Facts, p *policy.Policy) { f.LoginsAfterLoss = 1 }},
		{"16-5", func(f *report.Facts, p *policy.Policy) { f.CloneSuspectsActive = 1 }, func(f *report.Facts, p *policy.Policy) { f.OtherSiteRefusals = 4 }},
		{"17-1", func(f *report.Facts, p *policy.Policy) { p.LoginMethods = []string{"password"} }, func(f *report.Facts, p *policy.Policy) { p.Password.MaxAge = 365 * day }},
		{"17-5", func(f *report.Facts, p *policy.Policy) { p.Password.MinLength = 9 }, func(f *report.Facts, p *policy.Policy) { p.Password.Denylist = false }},
		{"18-1", func(f *report.Facts, p *policy.Policy) { f.HighRiskUnapproved = 1 }, func(f *report.Facts, p *policy.Policy) { f.BroadHolders = 2 }},
		{"19-1", func(f *report.Facts, p *policy.Policy) { f.AuditReaders = 0 }, func(f *report.Facts, p *policy.Policy) { f.LastAnomalyRead = now.Add(-40 * day) }},
		{"19-2", func(f *report.Facts, p *policy.Policy) { p.Retention.Decisions = 5 * 365 * day }, func(f *report.Facts, p *policy.Policy) { p.Retention.Other = 90 * day }},
	}
	scores := func(f report.Facts, p policy.Policy) map[string]int {
		out := map[string]int{}
		for _, it := range report.Score(f, p, now) {
			if it.Title == "" || it.Evidence == "" {
				t.Errorf("%s has no title or evidence", it.Item)
			}
			out[it.Item] = it.Score
		}
		return out
	}
	f0, p0 := good()
	base := scores(f0, p0)
	want := []string{"10-2", "10-3", "10-4", "11-1", "11-3", "11-5", "12-1", "12-2", "16-1", "16-4", "16-5", "17-1", "17-5", "18-1", "18-2", "19-1", "19-2"}
	for _, item := range want {
		if base[item] != 3 {
			t.Errorf("%s scores %d in the good state", item, base[item])
		}
	}
	if len(base) != len(want) {
		t.Errorf("%d items, want %d", len(base), len(want))
	}
	for _, tc := range cases {
		for name, cs := range map[string][]change{"3": nil, "2a": {tc.a}, "2b": {tc.b}, "1": {tc.a, tc.b}} {
			t.Run(tc.item+"/"+name, func(t *testing.T) {
				f, p := good()
				for _, c := range cs {
					c(&f, &p)
				}
				got := scores(f, p)
				if w := 3 - len(cs); got[tc.item] != w {
					t.Errorf("%s = %d, want %d", tc.item, got[tc.item], w)
				}
				for _, other := range want {
					if other != tc.item && got[other] != base[other] && !shared(tc.item, other) {
						t.Errorf("%s moved %s to %d", tc.item, other, got[other])
					}
				}
			})
		}
	}
	t.Run("18-2", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			last map[opgate.SiteID]time.Time
			want int
		}{
			{"every site within a quarter", map[opgate.SiteID]time.Time{"a": now.Add(-99 * day), "b": now.Add(-1 * day)}, 3},
			{"one site within a year only", map[opgate.SiteID]time.Time{"a": now.Add(-200 * day), "b": now.Add(-1 * day)}, 2},
			{"one site never", map[opgate.SiteID]time.Time{"a": {}, "b": now.Add(-1 * day)}, 1},
			{"one site over a year ago", map[opgate.SiteID]time.Time{"a": now.Add(-400 * day), "b": now.Add(-1 * day)}, 1},
		} {
			f, p := good()
			f.LastReview = tc.last
			if got := scores(f, p)["18-2"]; got != tc.want {
				t.Errorf("%s: 18-2 = %d, want %d", tc.name, got, tc.want)
			}
		}
	})
}

// shared lists items that read the same condition (one policy field or
// one count evidences both).
func shared(a, b string) bool {
	pairs := map[[2]string]bool{{"10-2", "17-1"}: true, {"11-1", "17-1"}: true, {"11-3", "17-5"}: true, {"11-5", "17-5"}: true, {"12-1", "19-1"}: true, {"12-1", "19-2"}: true}
	return pairs[[2]string{a, b}] || pairs[[2]string{b, a}]
}
