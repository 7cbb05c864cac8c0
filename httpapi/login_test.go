package httpapi_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/servertest"
)

// enroll runs the enrollment ceremony for code with card.
func enroll(t *testing.T, s *servertest.Server, card *authntest.Card, code string) map[string]any {
	t.Helper()
	begin := s.Must(200, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": code})
	var b struct {
		EnrollmentID string `json:"enrollment_id"`
	}
	begin.JSON(t, &b)
	cred := card.Create(begin.Body, servertest.Origin)
	return s.Must(201, "POST", "/v1/enroll/finish", "", map[string]any{"enrollment_id": b.EnrollmentID, "credential": json.RawMessage(cred)}).Map(t)
}

// cardLogin begins and finishes a card login, returning the finish answer.
func cardLogin(t *testing.T, s *servertest.Server, card *authntest.Card, terminal, operator string) servertest.Response {
	t.Helper()
	body := map[string]any{"terminal_id": terminal}
	if operator != "" {
		body["operator_id"] = operator
	}
	begin := s.Must(200, "POST", "/v1/login/card/begin", "", body)
	var b struct {
		LoginID string `json:"login_id"`
	}
	begin.JSON(t, &b)
	assertion := card.Get(begin.Body, servertest.Origin, card.UserHandle())
	return s.Do("POST", "/v1/login/card/finish", "", map[string]any{"login_id": b.LoginID, "credential": json.RawMessage(assertion)})
}

func TestCardEnrollAndLogin(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			card := authntest.NewCard(t)
			got := enroll(t, s, card, s.Boot.EnrollmentCode)
			if got["status"] != "active" {
				t.Fatalf("enrolled card: %v", got)
			}
			// The code is single-use.
			s.Must(401, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": s.Boot.EnrollmentCode})

			for _, named := range []string{string(s.Boot.OperatorID), ""} {
				r := cardLogin(t, s, card, "admin-console", named)
				if r.Status != 200 {
					t.Fatalf("login (operator %q): %d %s", named, r.Status, r.Body)
				}
				var l struct {
					AccessToken  string `json:"access_token"`
					OperatorID   string `json:"operator_id"`
					RefreshToken string `json:"refresh_token"`
				}
				r.JSON(t, &l)
				if l.OperatorID != string(s.Boot.OperatorID) {
					t.Fatalf("logged in as %q", l.OperatorID)
				}
				me := s.Must(200, "GET", "/v1/me", l.AccessToken, nil).Map(t)
				if amr := me["session"].(map[string]any)["amr"]; fmt.Sprint(amr) != "[hwk user]" {
					t.Fatalf("amr %v", amr)
				}
				// Refresh rotates; the old refresh token then ends the session.
				r1 := s.Must(200, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l.RefreshToken}).Map(t)
				s.Must(401, "POST", "/v1/session/refresh", "", map[string]any{"refresh_token": l.RefreshToken})
				s.Must(401, "GET", "/v1/me", r1["access_token"].(string), nil)
			}
			// A replayed assertion (counter not increased) is refused and
			// the card flagged.
			card.SetCounter(1)
			if r := cardLogin(t, s, card, "admin-console", ""); r.Status != 401 {
				t.Fatalf("replayed counter: %d %s", r.Status, r.Body)
			}
			op0 := s.Must(200, "GET", "/v1/operators/"+string(s.Boot.OperatorID), s.Admin, nil).Map(t)
			if c := op0["cards"].([]any)[0].(map[string]any); c["clone_suspected"] != true {
				t.Fatalf("card not flagged: %v", c)
			}
			card.SetCounter(1000)
			// An unregistered terminal is refused.
			if r := cardLogin(t, s, card, "nowhere", ""); r.Status != 403 {
				t.Fatalf("unknown terminal: %d %s", r.Status, r.Body)
			}
			// Lost card: every session made with it ends at once.
			r := cardLogin(t, s, card, "admin-console", "")
			var l struct {
				AccessToken string `json:"access_token"`
			}
			r.JSON(t, &l)
			op := s.Must(200, "GET", "/v1/operators/"+string(s.Boot.OperatorID), s.Admin, nil).Map(t)
			cardID := op["cards"].([]any)[0].(map[string]any)["card_id"].(string)
			s.Must(200, "POST", "/v1/operators/"+string(s.Boot.OperatorID)+"/cards/"+cardID+"/report-lost", s.Admin, map[string]any{"kind": "lost", "reason": "紛失届"})
			s.Must(401, "GET", "/v1/me", l.AccessToken, nil)
			if r := cardLogin(t, s, card, "admin-console", ""); r.Status != 401 {
				t.Fatalf("lost card logged in: %d %s", r.Status, r.Body)
			}
		})
	}
}

func TestTwentyConcurrentSubmissionsOneLogin(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	card := authntest.NewCard(t)
	enroll(t, s, card, s.Boot.EnrollmentCode)
	begin := s.Must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console"})
	var b struct {
		LoginID string `json:"login_id"`
	}
	begin.JSON(t, &b)
	assertion := card.Get(begin.Body, servertest.Origin, card.UserHandle())
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			r := s.Do("POST", "/v1/login/card/finish", "", map[string]any{"login_id": b.LoginID, "credential": json.RawMessage(assertion)})
			if r.Status == 200 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d logins from one assertion, want 1", ok.Load())
	}
}

func TestPasswordLoginAndLockout(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			allowPasswordLogins(t, s)
			op := string(s.Boot.OperatorID)
			login := func(pw string) servertest.Response {
				return s.Do("POST", "/v1/login/password", "", map[string]any{"operator_id": op, "password": pw, "terminal_id": "admin-console"})
			}
			// The temporary password logs in, but only to change it.
			r := login(s.Boot.TemporaryPassword)
			if r.Status != 200 {
				t.Fatalf("temporary password: %d %s", r.Status, r.Body)
			}
			var l struct {
				AccessToken            string `json:"access_token"`
				PasswordChangeRequired bool   `json:"password_change_required"`
			}
			r.JSON(t, &l)
			if !l.PasswordChangeRequired {
				t.Fatal("temporary password did not require a change")
			}
			s.Must(403, "GET", "/v1/operators", l.AccessToken, nil)
			weak := s.Must(422, "POST", "/v1/me/password", l.AccessToken, map[string]any{"current_password": s.Boot.TemporaryPassword, "new_password": "password1"}).Map(t)
			if weak["code"] != "password_policy" {
				t.Fatalf("weak password: %v", weak)
			}
			s.Must(204, "POST", "/v1/me/password", l.AccessToken, map[string]any{"current_password": s.Boot.TemporaryPassword, "new_password": "Kita-2027-madoguchi"})
			s.Must(200, "GET", "/v1/operators", l.AccessToken, nil)

			// Unknown operators answer exactly like a wrong password.
			unknown := s.Do("POST", "/v1/login/password", "", map[string]any{"operator_id": "OP-ZZZZZZZZ", "password": "x", "terminal_id": "admin-console"})
			wrong := login("wrong-password-1")
			if unknown.Status != 401 || wrong.Status != 401 || string(stripID(unknown.Body)) != string(stripID(wrong.Body)) {
				t.Fatalf("unknown %d %s vs wrong %d %s", unknown.Status, unknown.Body, wrong.Status, wrong.Body)
			}
			// Five failures in a row lock (the default threshold): one
			// above counted already.
			for i := 2; i <= 5; i++ {
				r := login(fmt.Sprintf("wrong-password-%d", i))
				want := 401
				if i == 5 {
					want = 423
				}
				if r.Status != want {
					t.Fatalf("failure %d: %d %s", i, r.Status, r.Body)
				}
			}
			locked := login("Kita-2027-madoguchi").Map(t)
			if locked["code"] != "account_locked" || locked["locked_until"] == nil {
				t.Fatalf("right password while locked: %v", locked)
			}
			s.Clock.Advance(31 * time.Minute)
			s.Must(200, "POST", "/v1/login/password", "", map[string]any{"operator_id": op, "password": "Kita-2027-madoguchi", "terminal_id": "admin-console"})
		})
	}
}

// stripID removes the request ID, which differs between any two answers.
func stripID(b []byte) []byte {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return b
	}
	delete(m, "request_id")
	out, _ := json.Marshal(m)
	return out
}

// TestLockedShownInLists: a locked operator is listed as locked, with the
// lock's end, under status=locked and not under status=active.
func TestLockedShownInLists(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			allowPasswordLogins(t, s)
			id := s.Must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": "6001", "name": "窓口", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
			s.Must(200, "POST", "/v1/operators/"+id+"/password/reset", s.Admin, nil)
			for range 5 {
				s.Do("POST", "/v1/login/password", "", map[string]any{"operator_id": id, "password": "wrong-password-9", "terminal_id": "admin-console"})
			}
			find := func(status string) map[string]any {
				for _, it := range s.Must(200, "GET", "/v1/operators?status="+status, s.Admin, nil).Map(t)["items"].([]any) {
					if m := it.(map[string]any); m["operator_id"] == id {
						return m
					}
				}
				return nil
			}
			if o := find("locked"); o == nil || o["status"] != "locked" || o["locked_until"] == nil {
				t.Fatalf("status=locked: %v", o)
			}
			if o := find("active"); o != nil {
				t.Fatalf("a locked operator listed as active: %v", o)
			}
			if o := find(""); o == nil || o["status"] != "locked" {
				t.Fatalf("unfiltered: %v", o)
			}
		})
	}
}

// TestClonedCounterRaceOneLogin: ten logins begun separately whose answers
// all carry the same counter (a cloned card, or a replay) are finished at
// once; the signatures are checked against the counter read before any of
// them committed, so only the judgment under the operator's lock can tell
// that all but one did not increase it.
func TestClonedCounterRaceOneLogin(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			card := authntest.NewCard(t)
			enroll(t, s, card, s.Boot.EnrollmentCode)
			card.SetCounter(50)
			card.FreezeCounter(true)
			var finishes []map[string]any
			for range 10 {
				begin := s.Must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console"})
				var b struct {
					LoginID string `json:"login_id"`
				}
				begin.JSON(t, &b)
				assertion := card.Get(begin.Body, servertest.Origin, card.UserHandle())
				finishes = append(finishes, map[string]any{"login_id": b.LoginID, "credential": json.RawMessage(assertion)})
			}
			if ok, refused := finishAtOnce(t, s.Do, finishes); ok != 1 || refused != 9 {
				t.Fatalf("%d logins and %d refusals with one counter value, want 1 and 9", ok, refused)
			}
			op := s.Must(200, "GET", "/v1/operators/"+string(s.Boot.OperatorID), s.Admin, nil).Map(t)
			if c := op["cards"].([]any)[0].(map[string]any); c["clone_suspected"] != true {
				t.Fatalf("card not flagged: %v", c)
			}
		})
	}
}

// finishAtOnce sends every card finish at the same moment and counts the
// logins and the judged refusals (401, or 423 once they lock the
// operator at the threshold); any other answer fails the test.
func finishAtOnce(t *testing.T, do func(method, path, token string, body any) servertest.Response, finishes []map[string]any) (ok, refused int32) {
	var okN, refusedN atomic.Int32
	var wg sync.WaitGroup
	for _, f := range finishes {
		wg.Go(func() {
			switch r := do("POST", "/v1/login/card/finish", "", f); r.Status {
			case 200:
				okN.Add(1)
			case 401, 423:
				refusedN.Add(1)
			default:
				t.Errorf("finish: %d %s", r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	return okN.Load(), refusedN.Load()
}

// TestEnrollmentLapsesWithItsOperator: an enrollment begun before a
// retirement, or before a transfer away from the chief who issued it,
// gives no card; an undisturbed one does.
func TestEnrollmentLapsesWithItsOperator(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			admin := s.Admin
			s.Must(201, "POST", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152"})
			issue := func(staff, role string) string {
				op := s.Must(201, "POST", "/v1/operators", admin, map[string]any{"staff_number": staff, "name": "職員 " + staff, "site_id": "honcho", "employment_type": "regular"}).Map(t)
				id := op["operator_id"].(string)
				if role != "" {
					s.Must(201, "POST", "/v1/operators/"+id+"/grants", admin, map[string]any{"role_id": role, "site_id": "honcho", "reason": "配属"})
				}
				return id
			}
			chief := s.Token(opID(issue("8100", "section_chief")), "honcho", "admin-console")
			// begin starts an enrollment by issuer and begins the ceremony.
			begin := func(issuer, op string) (*authntest.Card, string, []byte) {
				code := s.Must(201, "POST", "/v1/operators/"+op+"/cards/enrollments", issuer, map[string]any{"card_serial": "SN-" + op}).Map(t)["enrollment_code"].(string)
				r := s.Must(200, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": code})
				var bg struct {
					EnrollmentID string `json:"enrollment_id"`
				}
				r.JSON(t, &bg)
				card := authntest.NewCard(t)
				return card, bg.EnrollmentID, card.Create(r.Body, servertest.Origin)
			}
			finish := func(id string, cred []byte) servertest.Response {
				return s.Do("POST", "/v1/enroll/finish", "", map[string]any{"enrollment_id": id, "credential": json.RawMessage(cred)})
			}
			activeCards := func(op string) int {
				n := 0
				for _, c := range s.Must(200, "GET", "/v1/operators/"+op, admin, nil).Map(t)["cards"].([]any) {
					if c.(map[string]any)["status"] == "active" {
						n++
					}
				}
				return n
			}

			retired := issue("8101", "counter_clerk")
			_, id, cred := begin(admin, retired)
			s.Must(200, "POST", "/v1/operators/"+retired+"/retire", admin, map[string]any{"reason": "退職"})
			if r := finish(id, cred); r.Status != 401 {
				t.Errorf("enrollment finished after a retirement: %d %s", r.Status, r.Body)
			}

			moved := issue("8102", "counter_clerk")
			_, id, cred = begin(chief, moved)
			s.Must(200, "POST", "/v1/operators/"+moved+"/transfer", admin, map[string]any{"to_site_id": "kita", "reason": "異動"})
			if r := finish(id, cred); r.Status != 401 || activeCards(moved) != 0 {
				t.Errorf("an enrollment of the old site's chief finished after a transfer: %d %s", r.Status, r.Body)
			}

			kept := issue("8103", "counter_clerk")
			_, id, cred = begin(chief, kept)
			if r := finish(id, cred); r.Status != 201 || activeCards(kept) != 1 {
				t.Errorf("an undisturbed enrollment: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestLostCardRacingLogins: a card reported lost while logins with it are
// in flight, on two replicas, ends up lost with no live session made with
// it, whichever commits first.
func TestLostCardRacingLogins(t *testing.T) {
	for _, b := range servertest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := servertest.Start(t, b)
			other := servertest.Join(t, s.Shared(), s.Clock)
			for i := range 8 {
				op := s.Must(201, "POST", "/v1/operators", s.Admin, map[string]any{"staff_number": fmt.Sprintf("96%02d", i), "name": "窓口 職員", "site_id": "honcho", "employment_type": "regular"}).Map(t)["operator_id"].(string)
				s.Must(201, "POST", "/v1/operators/"+op+"/grants", s.Admin, map[string]any{"role_id": "counter_clerk", "site_id": "honcho", "reason": "配属"})
				code := s.Must(201, "POST", "/v1/operators/"+op+"/cards/enrollments", s.Admin, map[string]any{"card_serial": fmt.Sprintf("SN-96%02d", i)}).Map(t)["enrollment_code"].(string)
				card := authntest.NewCard(t)
				cardID := enroll(t, s, card, code)["card_id"].(string)
				var tokens []string
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(func() {
						if r := cardLogin(t, other, card, "admin-console", ""); r.Status == 200 {
							var l struct {
								AccessToken string `json:"access_token"`
							}
							r.JSON(t, &l)
							mu.Lock()
							tokens = append(tokens, l.AccessToken)
							mu.Unlock()
						}
					})
				}
				wg.Go(func() {
					s.Must(200, "POST", "/v1/operators/"+op+"/cards/"+cardID+"/report-lost", s.Admin, map[string]any{"kind": "lost", "reason": "紛失届"})
				})
				wg.Wait()
				for _, c := range s.Must(200, "GET", "/v1/operators/"+op, s.Admin, nil).Map(t)["cards"].([]any) {
					if m := c.(map[string]any); m["card_id"] == cardID && m["status"] != "lost" {
						t.Fatalf("round %d: the card is %v after it was reported lost", i, m["status"])
					}
				}
				for _, tok := range tokens {
					if r := s.Do("GET", "/v1/me", tok, nil); r.Status != 401 {
						t.Fatalf("round %d: a session of the lost card is alive", i)
					}
				}
			}
		})
	}
}

// allowPasswordLogins lets every operator log in with a password alone.
func allowPasswordLogins(t *testing.T, s *servertest.Server) {
	t.Helper()
	pol := s.Must(200, "GET", "/v1/policy", s.Admin, nil).Map(t)
	pol["login_methods"] = []string{"card", "password"}
	delete(pol, "version")
	s.Must(200, "PUT", "/v1/policy", s.Admin, pol)
}
