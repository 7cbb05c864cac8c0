package httpapi_test

import (
	"testing"

	"github.com/opgate/opgate/internal/servertest"
)

// TestShortListsPage: the catalog, roles, sites and terminals page like
// every list: a walk with limit=2 sees every item once, in order.
func TestShortListsPage(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	for _, tc := range []struct{ path, key string }{
		{"/v1/permissions", "permission"}, {"/v1/roles", "role_id"}, {"/v1/sites", "site_id"}, {"/v1/terminals", "terminal_id"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			all := s.Must(200, "GET", tc.path+"?limit=1000", s.Admin, nil).Map(t)["items"].([]any)
			var walked []string
			cursor := ""
			for range 100 {
				q := tc.path + "?limit=2"
				if cursor != "" {
					q += "&cursor=" + cursor
				}
				pg := s.Must(200, "GET", q, s.Admin, nil).Map(t)
				for _, it := range pg["items"].([]any) {
					walked = append(walked, it.(map[string]any)[tc.key].(string))
				}
				next, _ := pg["next_cursor"].(string)
				if next == "" {
					break
				}
				cursor = next
			}
			if len(walked) != len(all) {
				t.Fatalf("walked %d of %d items: %v", len(walked), len(all), walked)
			}
			for i := 1; i < len(walked); i++ {
				if walked[i] <= walked[i-1] {
					t.Fatalf("out of order or repeated: %v", walked)
				}
			}
			s.Must(400, "GET", tc.path+"?limit=0", s.Admin, nil)
		})
	}
}
