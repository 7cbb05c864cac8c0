package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultIsValidAndRoundTrips(t *testing.T) {
	p := Default()
	if err := p.Validate(); err != nil {
		t.Fatalf("default policy invalid: %v", err)
	}
	got, err := Decode(Encode(p))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestDecodeKeepsDefaultsForMissingFields(t *testing.T) {
	got, err := Decode([]byte(`{"lockout":{"threshold":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Lockout.Threshold = 3
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"unknown field", `{"lockout":{"threshold":3,"extra":1}}`},
		{"wrong type", `{"lockout":{"threshold":"five"}}`},
		{"not an object", `[1,2]`},
		{"trailing data", `{} {}`},
		{"malformed", `{"lockout":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode([]byte(tc.doc)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%s) = %v, want ErrInvalid", tc.doc, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Policy)
		fields []string
	}{
		{"threshold zero", func(p *Policy) { p.Lockout.Threshold = 0 }, []string{"lockout.threshold"}},
		{"window not whole seconds", func(p *Policy) { p.Lockout.Window = 1500 * time.Millisecond }, []string{"lockout.window_s"}},
		{"one-second minimums allowed", func(p *Policy) {
			p.Lockout.Window, p.Lockout.Duration, p.Session.IdleTimeout, p.Session.AccessTokenTTL = time.Second, time.Second, time.Second, time.Second
		}, nil},
		{"idle beyond absolute", func(p *Policy) { p.Session.IdleTimeout = p.Session.AbsoluteTimeout + time.Second }, []string{"session.idle_timeout_s"}},
		{"token beyond session", func(p *Policy) { p.Session.AccessTokenTTL = p.Session.AbsoluteTimeout + time.Second }, []string{"session.access_token_ttl_s"}},
		{"unknown method", func(p *Policy) { p.LoginMethods = []string{"card", "sms"} }, []string{"login_methods"}},
		{"no method", func(p *Policy) { p.LoginMethods = nil }, []string{"login_methods"}},
		{"short minimum length", func(p *Policy) { p.Password.MinLength = 4 }, []string{"password.min_length"}},
		{"bad AAGUID", func(p *Policy) { p.Cards.AllowedAAGUIDs = []string{"not-an-aaguid"} }, []string{"cards.allowed_aaguids"}},
		{"good AAGUID", func(p *Policy) { p.Cards.AllowedAAGUIDs = []string{"2fc0579f-8113-47ea-b116-bb5a8db9202a"} }, nil},
		{"password operators", func(p *Policy) { p.PasswordOperators = []string{"OP-7Q2K9X4M"} }, nil},
		{"empty password operator", func(p *Policy) { p.PasswordOperators = []string{""} }, []string{"password_operators"}},
		{"password operator with a NUL", func(p *Policy) { p.PasswordOperators = []string{"OP-\x00X"} }, []string{"password_operators"}},
		{"password operator in lower case", func(p *Policy) { p.PasswordOperators = []string{"op-7q2k9x4m"} }, []string{"password_operators"}},
		{"everything wrong at once", func(p *Policy) { p.Lockout.Threshold, p.Password.History = 0, 99 }, []string{"lockout.threshold", "password.history"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Default()
			tc.change(&p)
			err := p.Validate()
			var got []string
			if ve, ok := errors.AsType[*ValidationError](err); ok {
				for _, f := range ve.Fields {
					got = append(got, f.Field)
				}
			} else if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Fatalf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDecode: the policy document is outside input (PUT /v1/policy).
func FuzzDecode(f *testing.F) {
	f.Add(Encode(Default()))
	f.Add([]byte(`{"lockout":{"threshold":3}}`))
	f.Add([]byte(`{"session":{"idle_timeout_s":9223372036854775807}}`))
	f.Add([]byte(`{"lockout":{"window_s":-1}}`))
	f.Add([]byte(`{"office_hours":{"start":"24:00","end":"08:3x","weekdays":[7,-1],"utc_offset_s":-50400}}`))
	f.Add([]byte(`{"retention_s":{"decisions":1,"logins":0,"other":9223372036854775807}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			return
		}
		// A valid document survives its own encoding unchanged.
		again, err := Decode(Encode(p))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		p.Version, again.Version = 0, 0
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("(-first +again):\n%s", diff)
		}
	})
}

func TestOfficeHours(t *testing.T) {
	h := Default().OfficeHours // 08:30-17:15 JST, Monday to Friday
	for _, tc := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"Monday 08:30 JST", time.Date(2027, 3, 28, 23, 30, 0, 0, time.UTC), true},
		{"Monday 08:29 JST", time.Date(2027, 3, 28, 23, 29, 0, 0, time.UTC), false},
		{"Monday 17:14 JST", time.Date(2027, 3, 29, 8, 14, 0, 0, time.UTC), true},
		{"Monday 17:15 JST", time.Date(2027, 3, 29, 8, 15, 0, 0, time.UTC), false},
		{"Saturday 10:00 JST", time.Date(2027, 4, 3, 1, 0, 0, 0, time.UTC), false},
		{"Sunday 23:30 UTC is Monday 08:30 JST", time.Date(2027, 3, 28, 23, 30, 0, 0, time.UTC), true},
	} {
		if got := h.Within(tc.at); got != tc.want {
			t.Errorf("%s: Within = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, doc := range []string{
		`{"office_hours":{"start":"17:00","end":"08:00","weekdays":[1],"utc_offset_s":0}}`,
		`{"office_hours":{"start":"8:30","end":"17:00","weekdays":[1],"utc_offset_s":0}}`,
		`{"office_hours":{"start":"08:30","end":"17:00","weekdays":[7],"utc_offset_s":0}}`,
		`{"office_hours":{"start":"08:30","end":"17:00","weekdays":[1],"utc_offset_s":90000}}`,
		`{"retention_s":{"decisions":0,"logins":1,"other":1}}`,
	} {
		p, err := Decode([]byte(doc))
		if err == nil {
			err = p.Validate()
		}
		if err == nil {
			t.Errorf("%s accepted", doc)
		}
	}
}

func TestAllowsPasswordLogin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		methods   []string
		operators []string
		op        string
		want      bool
	}{
		{"card only", []string{MethodCard}, nil, "OP-A", false},
		{"password for everyone", []string{MethodCard, MethodPassword}, nil, "OP-A", true},
		{"named operator", []string{MethodCard, MethodPassword}, []string{"OP-A"}, "OP-A", true},
		{"operator not named", []string{MethodCard, MethodPassword}, []string{"OP-A"}, "OP-B", false},
		{"named but method off", []string{MethodCard}, []string{"OP-A"}, "OP-A", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Default()
			p.LoginMethods, p.PasswordOperators = tc.methods, tc.operators
			if got := p.AllowsPasswordLogin(tc.op); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// The list round-trips, and an empty one is left out of the document.
	p := Default()
	p.PasswordOperators = []string{"OP-A"}
	got, err := Decode(Encode(p))
	if err != nil || !slices.Equal(got.PasswordOperators, p.PasswordOperators) {
		t.Errorf("round trip: %v %v", got.PasswordOperators, err)
	}
	if strings.Contains(string(Encode(Default())), "password_operators") {
		t.Errorf("an empty list appears in the default document")
	}
}
