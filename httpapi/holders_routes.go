package httpapi

import (
	"net/http"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/authn"
	"github.com/opgate/opgate/roles"
)

// holdersReport answers "who could use permission P at site S at instant
// D" from the grants' dates and the roles as the history defines them at
// D: the question an audit of a disclosure, or a review, asks. It needs
// report.read at the site (or at every site).
func (s *Server) holdersReport(w http.ResponseWriter, r *http.Request, p authn.Principal) error {
	q := r.URL.Query()
	perm := opgate.Permission(q.Get("permission"))
	site := opgate.SiteID(q.Get("site_id"))
	var fe []fieldError
	if !roles.Known(perm) {
		fe = append(fe, fieldError{"permission", "a permission of the catalog"})
	}
	if !roles.ValidID(string(site)) {
		fe = append(fe, fieldError{"site_id", "required, a site ID"})
	}
	at := s.clk.Now()
	if v := q.Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			fe = append(fe, fieldError{"at", "an RFC 3339 time"})
		}
		at = t.UTC()
	}
	if fe != nil {
		return &badRequest{fields: fe}
	}
	if err := s.cfg.Authz.Require(r.Context(), p.OperatorID, roles.ReportRead, site); err != nil {
		return err
	}
	hs, err := s.cfg.Authz.HoldersAt(r.Context(), perm, site, at)
	if err != nil {
		return err
	}
	type holderDTO struct {
		OperatorID opgate.OperatorID `json:"operator_id"`
		GrantID    opgate.GrantID    `json:"grant_id"`
		RoleID     opgate.RoleID     `json:"role_id"`
		SiteID     opgate.SiteID     `json:"site_id"`
	}
	items := make([]holderDTO, 0, len(hs))
	for _, h := range hs {
		items = append(items, holderDTO{h.OperatorID, h.GrantID, h.RoleID, h.SiteID})
	}
	return writeJSON(w, 200, map[string]any{"permission": perm, "site_id": site, "at": ts(at), "items": items})
}
