package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/report"
	"github.com/opgate/opgate/review"
	"github.com/opgate/opgate/roles"
)

// registerReports adds the reviews and reports of API.md "Reviews and
// reports", and review schedules, when the services are wired.
func (s *Server) registerReports() {
	if s.cfg.Reviews == nil || s.cfg.Reports == nil {
		return
	}
	s.handle("POST", "/v1/reviews", bearer, roles.ReviewPerform, s.openReview)
	s.handle("GET", "/v1/reviews", bearer, "", s.listReviews)
	s.handle("GET", "/v1/reviews/{id}", bearer, "", s.getReview)
	s.handle("POST", "/v1/reviews/{id}/items/{item_id}", bearer, roles.ReviewPerform, s.decideItem)
	s.handle("POST", "/v1/reviews/{id}/close", bearer, roles.ReviewPerform, s.closeReview)
	s.handle("POST", "/v1/review-schedules", bearer, roles.ReviewPerform, s.addSchedule)
	s.handle("GET", "/v1/review-schedules", bearer, roles.ReviewPerform, s.listSchedules)
	s.handle("DELETE", "/v1/review-schedules/{id}", bearer, roles.ReviewPerform, s.removeSchedule)

	s.handle("GET", "/v1/reports/ledger", bearer, roles.ReportRead, s.ledgerReport)
	s.handle("GET", "/v1/reports/reviews/{id}", bearer, "", s.reviewReport)
	s.handle("GET", "/v1/reports/checklist", bearer, roles.ReportRead, s.checklistReport)
	s.handle("GET", "/v1/reports/dormant", bearer, roles.ReportRead, s.dormantReport)
	s.handle("GET", "/v1/reports/anomalies", bearer, roles.ReportRead, s.anomalyReport)
	s.handle("GET", "/v1/reports/disclosure", bearer, roles.ReportRead, s.disclosureReport)
}

type reviewItemDTO struct {
	ItemID       string            `json:"item_id"`
	GrantID      opgate.GrantID    `json:"grant_id"`
	OperatorID   opgate.OperatorID `json:"operator_id"`
	OperatorName string            `json:"operator_name"`
	RoleID       opgate.RoleID     `json:"role_id"`
	GrantedBy    *string           `json:"granted_by"`
	GrantedAt    Time              `json:"granted_at"`
	ValidUntil   Time              `json:"valid_until"`
	LastLoginAt  Time              `json:"last_login_at"`
	LastUsedAt   Time              `json:"last_used_at"`
	Hint         *string           `json:"hint"`
	Hints        []string          `json:"hints"`
	Decision     *string           `json:"decision"`
	Reason       *string           `json:"reason"`
	DecidedBy    *string           `json:"decided_by"`
	DecidedAt    Time              `json:"decided_at"`
}

type reviewDTO struct {
	ReviewID     string        `json:"review_id"`
	SiteID       opgate.SiteID `json:"site_id"`
	DueAt        Time          `json:"due_at"`
	Status       string        `json:"status"`
	OnUnreviewed string        `json:"on_unreviewed"`
	CreatedBy    *string       `json:"created_by"`
	CreatedAt    Time          `json:"created_at"`
	ClosedAt     Time          `json:"closed_at"`
	ScheduleID   *string       `json:"schedule_id"`
	// Items and Counts are left out of lists, and always there (maybe
	// empty) in a campaign's own answers.
	Items  *[]reviewItemDTO `json:"items,omitempty"`
	Counts map[string]int   `json:"counts,omitempty"`
}

func toItemDTO(it review.Item) reviewItemDTO {
	d := reviewItemDTO{ItemID: it.ID, GrantID: it.GrantID, OperatorID: it.OperatorID, OperatorName: it.OperatorName, RoleID: it.RoleID,
		GrantedBy: optional(string(it.GrantedBy)), GrantedAt: ts(it.GrantedAt), ValidUntil: ts(it.ValidUntil), LastLoginAt: ts(it.LastLoginAt),
		LastUsedAt: ts(it.LastUsedAt), Hints: nonNil(it.Hints), Decision: optional(string(it.Decision)), Reason: optional(it.Reason),
		DecidedBy: optional(string(it.DecidedBy)), DecidedAt: ts(it.DecidedAt)}
	if len(it.Hints) > 0 {
		d.Hint = &it.Hints[0]
	}
	return d
}

func toReviewDTO(c review.Campaign, items []review.Item) reviewDTO {
	d := reviewDTO{ReviewID: c.ID, SiteID: c.SiteID, DueAt: ts(c.DueAt), Status: string(c.Status), OnUnreviewed: string(c.OnUnreviewed),
		CreatedBy: optional(string(c.CreatedBy)), CreatedAt: ts(c.CreatedAt), ClosedAt: ts(c.ClosedAt), ScheduleID: optional(c.ScheduleID)}
	if items != nil {
		dtos := make([]reviewItemDTO, len(items))
		d.Items = &dtos
		d.Counts = map[string]int{}
		for i, it := range items {
			dtos[i] = toItemDTO(it)
			k := string(it.Decision)
			if k == "" {
				k = "pending"
			}
			d.Counts[k]++
		}
	}
	return d
}

func (s *Server) openReview(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		SiteID       opgate.SiteID `json:"site_id"`
		DueAt        Time          `json:"due_at"`
		OnUnreviewed string        `json:"on_unreviewed"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.SiteID == "" || in.SiteID == opgate.AllSites || !roles.ValidID(string(in.SiteID)) {
		return invalid("site_id", "must be a site ID")
	}
	c, err := s.cfg.Reviews.Open(r.Context(), actorOf(r, p), review.OpenRequest{SiteID: in.SiteID, DueAt: in.DueAt.Time, OnUnreviewed: review.Unreviewed(in.OnUnreviewed)})
	if err != nil {
		return err
	}
	_, items, err := s.cfg.Reviews.Get(r.Context(), actorOf(r, p), c.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toReviewDTO(c, nonNil(items)))
}

func (s *Server) listReviews(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.ReviewPerform, roles.ReportRead); err != nil {
		return err
	}
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := review.Filter{SiteID: opgate.SiteID(q.Get("site_id")), Status: review.Status(q.Get("status")), After: after, Limit: limit + 1}
	if f.Status != "" && f.Status != review.Open && f.Status != review.Closed {
		return invalid("status", "one of open, closed")
	}
	cs, err := s.cfg.Reviews.List(r.Context(), actorOf(r, p), f)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, listOf(cs, limit, func(c review.Campaign) string { return c.ID }, func(c review.Campaign) reviewDTO { return toReviewDTO(c, nil) }))
}

func (s *Server) getReview(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.ReviewPerform, roles.ReportRead); err != nil {
		return err
	}
	c, items, err := s.cfg.Reviews.Get(r.Context(), actorOf(r, p), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toReviewDTO(c, nonNil(items)))
}

func (s *Server) decideItem(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		Decision string `json:"decision"`
		Reason   string `json:"reason"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	it, err := s.cfg.Reviews.Decide(r.Context(), actorOf(r, p), r.PathValue("id"), r.PathValue("item_id"), review.Decision(in.Decision), in.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toItemDTO(it))
}

func (s *Server) closeReview(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	// The body is empty; an oversized or malformed one is still refused.
	var in struct{}
	if err := decode(r, &in, true); err != nil {
		return err
	}
	c, items, err := s.cfg.Reviews.Close(r.Context(), actorOf(r, p), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, toReviewDTO(c, nonNil(items)))
}

type scheduleDTO struct {
	ScheduleID   string        `json:"schedule_id"`
	SiteID       opgate.SiteID `json:"site_id"`
	EveryMonths  int           `json:"every_months"`
	DueAfterS    int64         `json:"due_after_s"`
	OnUnreviewed string        `json:"on_unreviewed"`
	NextAt       Time          `json:"next_at"`
	CreatedBy    *string       `json:"created_by"`
	CreatedAt    Time          `json:"created_at"`
}

func toScheduleDTO(sc review.Schedule) scheduleDTO {
	return scheduleDTO{sc.ID, sc.SiteID, sc.EveryMonths, int64(sc.DueAfter / time.Second), string(sc.OnUnreviewed), ts(sc.NextAt),
		optional(string(sc.CreatedBy)), ts(sc.CreatedAt)}
}

func (s *Server) addSchedule(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	var in struct {
		SiteID       opgate.SiteID `json:"site_id"`
		EveryMonths  int           `json:"every_months"`
		DueAfterS    int64         `json:"due_after_s"`
		OnUnreviewed string        `json:"on_unreviewed"`
		FirstAt      Time          `json:"first_at"`
	}
	if err := decode(r, &in, false); err != nil {
		return err
	}
	if in.SiteID == "" || in.SiteID == opgate.AllSites || !roles.ValidID(string(in.SiteID)) {
		return invalid("site_id", "must be a site ID")
	}
	if in.DueAfterS < 0 || in.DueAfterS > 366*86400 {
		return invalid("due_after_s", "between 1 second and 366 days")
	}
	sc, err := s.cfg.Reviews.AddSchedule(r.Context(), actorOf(r, p), review.ScheduleRequest{SiteID: in.SiteID, EveryMonths: in.EveryMonths,
		DueAfter: time.Duration(in.DueAfterS) * time.Second, OnUnreviewed: review.Unreviewed(in.OnUnreviewed), FirstAt: in.FirstAt.Time})
	if err != nil {
		return err
	}
	return writeJSON(w, 201, toScheduleDTO(sc))
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	site := opgate.SiteID(r.URL.Query().Get("site_id"))
	scs, err := s.cfg.Reviews.Schedules(r.Context(), actorOf(r, p), site)
	if err != nil {
		return err
	}
	return pageOf(w, r, scs, func(sc review.Schedule) string { return sc.ID }, toScheduleDTO)
}

func (s *Server) removeSchedule(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.cfg.Reviews.RemoveSchedule(r.Context(), actorOf(r, p), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- reports

func reportActor(p authn.Principal) report.Actor {
	return report.Actor{ID: p.OperatorID, TerminalID: p.TerminalID}
}

// stream answers a report in the format asked for. Rows go from the
// store's cursor to the writer as they come; an error once the answer has
// begun can only cut the connection, so that a client never takes a
// truncated report for a whole one.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, f report.Format, t report.Table, file string, head map[string]any, fill func(report.Writer) error) error {
	w.Header().Set("Content-Type", f.ContentType())
	w.Header().Set("Cache-Control", "no-store")
	if f != report.JSON {
		w.Header().Set("Content-Disposition", `attachment; filename="`+file+`.`+string(f)+`"`)
	}
	rw, err := report.NewWriter(w, f, t, head)
	if err == nil {
		err = fill(rw)
		// Closed either way: the XLSX writer's temporary file goes with it.
		err = errors.Join(err, rw.Close())
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "report failed", "request_id", requestID(r.Context()), "report", file, "error", err.Error())
		panic(http.ErrAbortHandler)
	}
	return nil
}

func formatOf(r *http.Request) (report.Format, error) {
	f, err := report.ParseFormat(r.URL.Query().Get("format"))
	if err != nil {
		return f, invalid("format", "one of json, csv, xlsx")
	}
	return f, nil
}

func siteParam(r *http.Request) (opgate.SiteID, error) {
	site := opgate.SiteID(r.URL.Query().Get("site_id"))
	if site != "" && site != opgate.AllSites && !roles.ValidID(string(site)) {
		return "", invalid("site_id", "must be a site ID or *")
	}
	return site, nil
}

func (s *Server) ledgerReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	site, err := siteParam(r)
	if err != nil {
		return err
	}
	a := reportActor(p)
	if err := s.cfg.Reports.Allow(r.Context(), a, site); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Reports.Record(r.Context(), a, "ledger", site, "report:ledger", map[string]any{"format": string(f)}); err != nil {
		return err
	}
	return s.stream(w, r, f, report.LedgerTable, "ledger", map[string]any{"site_id": optional(string(site)), "generated_at": ts(s.clk.Now())},
		func(rw report.Writer) error { return s.cfg.Reports.Ledger(r.Context(), site, rw) })
}

func (s *Server) reviewReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	if err := s.anyOf(r.Context(), p, roles.ReviewPerform, roles.ReportRead); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	c, items, err := s.cfg.Reviews.Get(r.Context(), actorOf(r, p), r.PathValue("id"))
	if err != nil {
		return err
	}
	head := map[string]any{"review_id": c.ID, "site_id": c.SiteID, "status": c.Status, "due_at": ts(c.DueAt), "closed_at": ts(c.ClosedAt)}
	return s.stream(w, r, f, report.ReviewTable, "review-"+c.ID, head, func(rw report.Writer) error {
		for _, it := range items {
			if err := rw.Write(report.ReviewRowOf(it)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Server) checklistReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	// Permission before the request's content (API.md, Conventions).
	if err := s.cfg.Reports.Allow(r.Context(), reportActor(p), opgate.AllSites); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	items, err := s.cfg.Reports.Checklist(r.Context())
	if err != nil {
		return err
	}
	return s.stream(w, r, f, report.ChecklistTable, "checklist", map[string]any{"generated_at": ts(s.clk.Now())}, func(rw report.Writer) error {
		for _, it := range items {
			if err := rw.Write(it); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Server) dormantReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	site, err := siteParam(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Reports.Allow(r.Context(), reportActor(p), site); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	return s.stream(w, r, f, report.ExpiringTable, "dormant", map[string]any{"generated_at": ts(s.clk.Now())},
		func(rw report.Writer) error { return s.cfg.Reports.Dormant(r.Context(), site, rw) })
}

func rangeOf(r *http.Request, now time.Time) (time.Time, time.Time, error) {
	q := r.URL.Query()
	return report.ParseRange(q.Get("from"), q.Get("to"), now)
}

func (s *Server) anomalyReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	a := reportActor(p)
	if err := s.cfg.Reports.Allow(r.Context(), a, opgate.AllSites); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	from, to, err := rangeOf(r, s.clk.Now())
	if err != nil {
		return err
	}
	if r.URL.Query().Get("from") == "" {
		from = to.Add(-30 * 24 * time.Hour) // a month when not told
	}
	if err := s.cfg.Reports.Record(r.Context(), a, "anomalies", "", "report:anomalies",
		map[string]any{"from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339)}); err != nil {
		return err
	}
	return s.stream(w, r, f, report.AnomalyTable, "anomalies", map[string]any{"from": ts(from), "to": ts(to)},
		func(rw report.Writer) error { return s.cfg.Reports.Anomalies(r.Context(), from, to, rw) })
}

func (s *Server) disclosureReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	a := reportActor(p)
	if err := s.cfg.Reports.Allow(r.Context(), a, opgate.AllSites); err != nil {
		return err
	}
	f, err := formatOf(r)
	if err != nil {
		return err
	}
	from, to, err := rangeOf(r, s.clk.Now())
	if err != nil {
		return err
	}
	q := report.DisclosureQuery{ResourceType: r.URL.Query().Get("resource_type"), ResourceID: r.URL.Query().Get("resource_id"), From: from, To: to.Add(time.Microsecond)}
	if err := report.ValidateDisclosure(q); err != nil {
		return err
	}
	// Who asked for a resident's disclosure is itself history.
	if err := s.cfg.Reports.Record(r.Context(), a, "disclosure", "", "report:disclosure",
		map[string]any{"resource": q.ResourceType + ":" + q.ResourceID}); err != nil {
		return err
	}
	head := map[string]any{"resource_type": q.ResourceType, "resource_id": q.ResourceID, "from": ts(from), "to": ts(to)}
	return s.stream(w, r, f, report.DisclosureTable, "disclosure", head,
		func(rw report.Writer) error { return s.cfg.Reports.Disclosure(r.Context(), q, rw) })
}
