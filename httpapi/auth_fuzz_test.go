package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/authn/authntest"
	"github.com/opgate/opgate/internal/servertest"
)

// The card ceremonies' finish endpoints take a browser's credential JSON
// from anyone (DESIGN.md rule 13: every parser of outside input has a fuzz
// target). A fuzz input is a credential template: the markers below are
// replaced, before it is posted, with the base64url fields of a real
// answer the card made to this iteration's fresh challenge. So the seed
// that is the template of the real answer is accepted in every fuzz
// worker (each builds its own server, with its own challenges), and the
// fuzzer mutates around a credential that would otherwise succeed. The
// server must never fail (5xx), and must accept only an answer whose
// signed parts are exactly the card's.
const (
	markID     = "@ID@"     // id and rawId
	markClient = "@CLIENT@" // response.clientDataJSON
	markAuth   = "@AUTH@"   // response.authenticatorData
	markSig    = "@SIG@"    // response.signature
	markUser   = "@USER@"   // response.userHandle
	markAtt    = "@ATT@"    // response.attestationObject
	markPK     = "@PK@"     // response.publicKey
)

// credentialFields are a credential's base64url members by marker.
func credentialFields(t testing.TB, cred []byte) map[string]string {
	t.Helper()
	var c struct {
		RawID    string         `json:"rawId"`
		Response map[string]any `json:"response"`
	}
	if err := json.Unmarshal(cred, &c); err != nil {
		t.Fatalf("card answer: %v", err)
	}
	out := map[string]string{markID: c.RawID}
	for k, m := range map[string]string{"clientDataJSON": markClient, "authenticatorData": markAuth, "signature": markSig,
		"userHandle": markUser, "attestationObject": markAtt, "publicKey": markPK} {
		if v, ok := c.Response[k].(string); ok && v != "" {
			out[m] = v
		}
	}
	return out
}

// template turns a real answer into its template. Longer values go first
// so that no value is cut inside another.
func credentialTemplate(cred []byte, fields map[string]string) []byte {
	out := string(cred)
	for _, m := range []string{markAtt, markClient, markAuth, markPK, markSig, markID, markUser} {
		if v, ok := fields[m]; ok {
			out = strings.ReplaceAll(out, `"`+v+`"`, `"`+m+`"`)
		}
	}
	return []byte(out)
}

func fillTemplate(tmpl []byte, fields map[string]string) []byte {
	out := string(tmpl)
	for m, v := range fields {
		out = strings.ReplaceAll(out, m, v)
	}
	return []byte(out)
}

// sameSigned reports whether got carries exactly the signed (or attested)
// parts of real: for a login the credential ID, client data, authenticator
// data and signature; for an enrollment the credential ID, client data and
// attestation object. The other members (the enrollment's convenience
// copies of authenticatorData and publicKey, a login's userHandle, which
// an allow list makes optional) may differ.
func sameSigned(got, real []byte, enrollment bool) bool {
	var g, r authntest.Response
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(real, &r) != nil {
		return false
	}
	same := bytes.Equal(g.RawID, r.RawID) && bytes.Equal(g.Response.ClientDataJSON, r.Response.ClientDataJSON)
	if enrollment {
		return same && bytes.Equal(g.Response.AttestationObject, r.Response.AttestationObject)
	}
	return same && bytes.Equal(g.Response.AuthenticatorData, r.Response.AuthenticatorData) && bytes.Equal(g.Response.Signature, r.Response.Signature)
}

// brokenTemplates are seeds around a real answer's template.
func brokenTemplates(tmpl []byte) [][]byte {
	s := string(tmpl)
	swap := func(a, b string) string {
		return strings.NewReplacer(a, b, b, a).Replace(s)
	}
	var out []string
	for _, v := range []string{
		swap(markClient, markAuth),
		swap(markSig, markAuth),
		swap(markAtt, markClient),
		strings.Replace(s, markSig, "", 1),
		strings.Replace(s, markSig, markSig+"AA", 1),
		strings.Replace(s, markClient, "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0", 1), // {"type":"webauthn.get"}
		strings.Replace(s, markAuth, markAuth[:len(markAuth)-1], 1),
		strings.Replace(s, `"public-key"`, `"password"`, 1),
		strings.Replace(s, `"rawId":"`+markID+`"`, `"rawId":"AAAA"`, 1),
		strings.Replace(s, `"`+markUser+`"`, `"T1AtWlpaWlpaWlo"`, 1), // OP-ZZZZZZZZ
		strings.Replace(s, `"`+markUser+`"`, `null`, 1),
		strings.Replace(s, `"authenticatorData":"`+markAuth+`"`, `"authenticatorData":"AAAA"`, 1),
		strings.Replace(s, `"response":{`, `"response":{"response":{},`, 1),
		s[:len(s)/2],
		s + s,
		`{"id":"` + markID + `","rawId":"` + markID + `","type":"public-key","response":{}}`,
		`{"id":"` + markID + `","rawId":"` + markID + `","type":"public-key","response":{"clientDataJSON":"` + markClient + `"}}`,
	} {
		if v != s {
			out = append(out, v)
		}
	}
	out = append(out, "null", "{}", "[]", `"`+markSig+`"`, "0", strings.Repeat("[", 5000), `{"id":"\u0000","rawId":"AA==","type":"public-key"}`,
		"{\"id\":\"\xff\xfe\",\"type\":\"public-key\"}")
	b := make([][]byte, len(out))
	for i, v := range out {
		b[i] = []byte(v)
	}
	return b
}

// post sends a raw JSON body with the fuzz target's own *testing.T (the
// server's helpers belong to the *testing.F that built it).
func fuzzPost(t *testing.T, s *servertest.Server, path, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", s.HTTP.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func fuzzPostJSON(t *testing.T, s *servertest.Server, path, token string, v any, want int) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	status, out := fuzzPost(t, s, path, token, b)
	if status != want {
		t.Fatalf("POST %s: %d, want %d: %s", path, status, want, out)
	}
	return out
}

// finishBody wraps a credential as the finish call's body; a credential
// that is not JSON makes a body that is not JSON either, which the server
// must refuse as such.
func finishBody(idField, id string, cred []byte) []byte {
	idJSON, _ := json.Marshal(id)
	return []byte(`{"` + idField + `":` + string(idJSON) + `,"credential":` + string(cred) + `}`)
}

// checkFinish holds an answer to the rules: never 5xx, success only for
// the card's own signed parts, and otherwise a contract refusal.
func checkFinish(t *testing.T, status int, body, posted, real []byte, success int) {
	t.Helper()
	switch {
	case status >= 500:
		t.Fatalf("status %d for %q: %s", status, posted, body)
	case status == success:
		if !sameSigned(posted, real, success == 201) {
			t.Fatalf("accepted a credential that is not the card's: %q", posted)
		}
	case status == 200 || status == 201:
		t.Fatalf("status %d (want %d for success) for %q", status, success, posted)
	case status == 400 || status == 401 || status == 413 || status == 423 || status == 429:
		var p struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(body, &p) != nil || p.Code == "" {
			t.Fatalf("status %d without a problem code: %s", status, body)
		}
	default:
		t.Fatalf("unexpected status %d: %s", status, body)
	}
}

// cardOwner lets a card made in a fuzz target's setup sign inside the fuzz
// function, where the *testing.F must not be used: Helper does nothing and
// Fatalf panics, which fails the iteration.
type cardOwner struct{ testing.TB }

func (cardOwner) Helper()                           {}
func (cardOwner) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

func FuzzCardFinish(f *testing.F) {
	s := servertest.Start(f, servertest.Backends[0])
	g := newGate(f, s)
	op := string(s.Boot.OperatorID)
	// Fuzzed failures count against the operator: short windows and a
	// clock moved past them at each iteration keep the operator unlocked,
	// so that the real answer is always judged.
	setPolicy(g, func(p map[string]any) {
		l := section(p, "lockout")
		l["threshold"], l["window_s"], l["duration_s"] = 100, 1, 1
	})
	card := authntest.NewCard(cardOwner{f})
	if r := enrollWithCode(g, card, s.Boot.EnrollmentCode); r.Status != 201 {
		f.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	begin := g.must(200, "POST", "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op})
	real := card.Get(begin.Body, servertest.Origin, card.UserHandle())
	tmpl := credentialTemplate(real, credentialFields(f, real))
	if !bytes.Contains(tmpl, []byte(markSig)) || !bytes.Contains(tmpl, []byte(markClient)) {
		f.Fatalf("template lacks markers: %s", tmpl)
	}
	f.Add(tmpl)
	for _, b := range brokenTemplates(tmpl) {
		f.Add(b)
	}
	// Real answers, but to challenges already used or never asked.
	f.Add(real)
	card.SetFaults(authntest.FaultOtherKey)
	f.Add(card.Get(begin.Body, servertest.Origin, card.UserHandle()))
	card.SetFaults()

	f.Fuzz(func(t *testing.T, cred []byte) {
		s.Clock.Advance(2 * time.Second)
		var b struct {
			LoginID string `json:"login_id"`
		}
		opts := fuzzPostJSON(t, s, "/v1/login/card/begin", "", map[string]any{"terminal_id": "admin-console", "operator_id": op}, 200)
		if err := json.Unmarshal(opts, &b); err != nil {
			t.Fatal(err)
		}
		real := card.Get(opts, servertest.Origin, card.UserHandle())
		posted := fillTemplate(cred, credentialFields(t, real))
		status, body := fuzzPost(t, s, "/v1/login/card/finish", "", finishBody("login_id", b.LoginID, posted))
		checkFinish(t, status, body, posted, real, 200)
		if bytes.Equal(cred, tmpl) && status != 200 {
			t.Fatalf("the card's own answer was refused: %d %s", status, body)
		}
		if status == 200 {
			// The session is real.
			var l struct {
				AccessToken string `json:"access_token"`
				OperatorID  string `json:"operator_id"`
			}
			if err := json.Unmarshal(body, &l); err != nil || l.OperatorID != op || l.AccessToken == "" {
				t.Fatalf("login answer: %s", body)
			}
		}
	})
}

func FuzzEnrollFinish(f *testing.F) {
	s := servertest.Start(f, servertest.Backends[0])
	g := newGate(f, s)
	op := string(s.Boot.OperatorID)
	// A code per iteration: the admin's session must outlive the fuzzing.
	setPolicy(g, func(p map[string]any) {
		ss := section(p, "session")
		ss["idle_timeout_s"], ss["absolute_timeout_s"], ss["access_token_ttl_s"] = 86400, 604800, 86400
	})
	admin := s.Token(s.Boot.OperatorID, "honcho", "admin-console")
	newCode := func(t testing.TB, send func(path string, v any) []byte) string {
		var c struct {
			Code string `json:"enrollment_code"`
		}
		if err := json.Unmarshal(send("/v1/operators/"+op+"/cards/enrollments", map[string]any{"card_serial": "SN-FUZZ"}), &c); err != nil {
			t.Fatal(err)
		}
		return c.Code
	}
	code := newCode(f, func(path string, v any) []byte { return g.must(201, "POST", path, admin, v).Body })
	begin := g.must(200, "POST", "/v1/enroll/begin", "", map[string]any{"enrollment_code": code})
	card := authntest.NewCard(f)
	card.SetAttestation(authntest.AttestationPacked)
	real := card.Create(begin.Body, servertest.Origin)
	tmpl := credentialTemplate(real, credentialFields(f, real))
	if !bytes.Contains(tmpl, []byte(markAtt)) || !bytes.Contains(tmpl, []byte(markClient)) {
		f.Fatalf("template lacks markers: %s", tmpl)
	}
	f.Add(tmpl)
	for _, b := range brokenTemplates(tmpl) {
		f.Add(b)
	}
	f.Add(real)
	for _, fault := range []authntest.Fault{authntest.FaultSignature, authntest.FaultRPIDHash, authntest.FaultChallenge, authntest.FaultCeremonyType} {
		c := authntest.NewCard(f)
		c.SetAttestation(authntest.AttestationPacked)
		c.SetFaults(fault)
		f.Add(c.Create(begin.Body, servertest.Origin))
	}

	f.Fuzz(func(t *testing.T, cred []byte) {
		code := newCode(t, func(path string, v any) []byte { return fuzzPostJSON(t, s, path, admin, v, 201) })
		opts := fuzzPostJSON(t, s, "/v1/enroll/begin", "", map[string]any{"enrollment_code": code}, 200)
		var b struct {
			EnrollmentID string `json:"enrollment_id"`
		}
		if err := json.Unmarshal(opts, &b); err != nil {
			t.Fatal(err)
		}
		// A new card each time: an enrolled card is excluded afterwards.
		card := authntest.NewCard(t)
		card.SetAttestation(authntest.AttestationPacked)
		real := card.Create(opts, servertest.Origin)
		posted := fillTemplate(cred, credentialFields(t, real))
		status, body := fuzzPost(t, s, "/v1/enroll/finish", "", finishBody("enrollment_id", b.EnrollmentID, posted))
		checkFinish(t, status, body, posted, real, 201)
		if bytes.Equal(cred, tmpl) && status != 201 {
			t.Fatalf("the card's own answer was refused: %d %s", status, body)
		}
	})
}
