package jsonstrict_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opgate/opgate/internal/jsonstrict"
)

type inner struct {
	Site string `json:"site_id"`
}

type embedded struct {
	Reason string `json:"reason"`
}

type request struct {
	embedded
	Action   string            `json:"action"`
	Resource inner             `json:"resource"`
	Items    []inner           `json:"items"`
	Labels   map[string]string `json:"labels"`
	Raw      json.RawMessage   `json:"raw"`
	Any      any               `json:"any"`
	Skipped  string            `json:"-"`
	Plain    int
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, body, path string // path "": accepted
	}{
		{"exact keys", `{"action":"a","resource":{"site_id":"s"},"items":[{"site_id":"x"}],"labels":{"k":"v"},"raw":{"A":1,"a":2},"reason":"r","Plain":1}`, ""},
		{"unknown keys are the decoder's to refuse", `{"zz":1}`, ""},
		{"malformed is the decoder's to report", `{"action":`, ""},
		{"top-level case", `{"ACTION":"a"}`, "ACTION"},
		{"embedded field's case", `{"Reason":"r"}`, "Reason"},
		{"nested case", `{"resource":{"Site_ID":"s"}}`, "resource.Site_ID"},
		{"case in an array of objects", `{"items":[{"site_id":"a"},{"SITE_ID":"b"}]}`, "items.SITE_ID"},
		{"twice", `{"action":"a","action":"b"}`, "action"},
		{"twice in a map", `{"labels":{"k":"1","k":"2"}}`, "labels.k"},
		{"twice in raw JSON", `{"raw":{"a":1,"a":2}}`, "raw.a"},
		{"twice under any", `{"any":[{"x":1,"x":2}]}`, "any.x"},
		{"a field the decoder never fills, in another case", `{"PLAIN":1}`, "PLAIN"},
		{"twice among many", `{"labels":{` + manyKeys(100) + `,"k50":"again"}}`, "labels.k50"},
		{"keys that are not UTF-8", "{\"labels\":{\"a\xff\":\"1\",\"a\xfe\":\"2\"}}", "labels.a\uFFFD"},
		{"nesting past the decoder's limit is the decoder's", `{"any":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := jsonstrict.Check([]byte(tc.body), &request{})
			ke, _ := errors.AsType[*jsonstrict.KeyError](err)
			switch {
			case tc.path == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.path != "" && (ke == nil || ke.Path != tc.path):
				t.Fatalf("got %v, want a key error at %q", err, tc.path)
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return b.String()
}

// BenchmarkCheckManyKeys: a body of a megabyte holds about a hundred
// thousand keys; the walk over them stays linear (a slice searched per
// key took seconds), beside decoding the same body.
func BenchmarkCheckManyKeys(b *testing.B) {
	body := []byte(`{"labels":{` + manyKeys(100_000) + `}}`)
	b.Run("baseline-json-decode", func(b *testing.B) {
		for b.Loop() {
			var v request
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := jsonstrict.Check(body, &request{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzCheck: Check never panics, and what it accepts has no object with a
// key twice.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"action":"a","resource":{"site_id":"s"}}`, `{"a":1,"a":2}`, `[{"x":[1,{"y":2}]}]`, `{"ACTION":1}`, `{`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if jsonstrict.Check(body, &request{}) != nil || !json.Valid(body) {
			return
		}
		if dupKey(json.NewDecoder(bytes.NewReader(body))) {
			t.Fatalf("accepted a key given twice: %s", body)
		}
	})
}

// dupKey reports whether any object in the value dec reads repeats a key.
func dupKey(dec *json.Decoder) bool {
	tok, err := dec.Token()
	if err != nil {
		return false
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, _ := dec.Token()
			if seen[k.(string)] || dupKey(dec) {
				return true
			}
			seen[k.(string)] = true
		}
		_, _ = dec.Token()
	case json.Delim('['):
		for dec.More() {
			if dupKey(dec) {
				return true
			}
		}
		_, _ = dec.Token()
	}
	return false
}

// BenchmarkCheck measures the walk on a decision request's body beside
// the decoding every request pays anyway.
func BenchmarkCheck(b *testing.B) {
	body := []byte(`{"action":"resident.read","resource":{"type":"resident","id":"R-000012","site_id":"honcho","restricted":false},"purpose":"窓口での本人確認"}`)
	type check struct {
		Action   string `json:"action"`
		Resource struct {
			Type       string `json:"type"`
			ID         string `json:"id"`
			SiteID     string `json:"site_id"`
			Restricted bool   `json:"restricted"`
		} `json:"resource"`
		Purpose    string `json:"purpose"`
		ApprovalID string `json:"approval_id"`
	}
	b.Run("baseline-json-decode", func(b *testing.B) {
		for b.Loop() {
			var v check
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := jsonstrict.Check(body, &check{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
