package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opgate/opgate/internal/servertest"
)

// openapiMethods are the operation keys of an OpenAPI path item.
var openapiMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// pathParam finds the parameters of a path template.
var pathParam = regexp.MustCompile(`\{([^{}]+)\}`)

// specDoc is the parsed document: plain JSON values, so that every part of
// it can be walked and every $ref followed.
type specDoc map[string]any

func parseSpec(t *testing.T, b []byte) specDoc {
	t.Helper()
	var d specDoc
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	return d
}

func readSpec(t *testing.T) specDoc {
	t.Helper()
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	return parseSpec(t, b)
}

// operations lists every operation of the document as "METHOD path".
func (d specDoc) operations() map[string]map[string]any {
	out := map[string]map[string]any{}
	paths, _ := d["paths"].(map[string]any)
	for p, item := range paths {
		m, _ := item.(map[string]any)
		for _, meth := range openapiMethods {
			if o, ok := m[meth].(map[string]any); ok {
				out[strings.ToUpper(meth)+" "+p] = o
			}
		}
	}
	return out
}

// resolve follows a local $ref ("#/a/b") to the value it names.
func (d specDoc) resolve(ref string) (any, bool) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	var cur any = map[string]any(d)
	if frag == "" {
		return cur, true
	}
	if !strings.HasPrefix(frag, "/") {
		return nil, false
	}
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 0 || n >= len(v) {
				return nil, false
			}
			cur = v[n]
		default:
			return nil, false
		}
	}
	return cur, true
}

// deref returns the object v names: itself, or what its $ref names.
func (d specDoc) deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	for range 8 {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		target, _ := d.resolve(ref)
		m, _ = target.(map[string]any)
	}
	return m
}

// normalizePattern turns a net/http pattern path into an OpenAPI path
// template: "{name...}" becomes "{name}" and a trailing "{$}" goes.
func normalizePattern(p string) string {
	p = strings.TrimSuffix(p, "{$}")
	return strings.ReplaceAll(p, "...}", "}")
}

// TestOpenAPIMatchesRoutes holds the served document to the routes the
// server registers: a route added without its description, or a
// description of a route that does not exist, fails here.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	r := s.Must(200, "GET", "/openapi.json", "", nil)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	file, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, file) {
		t.Errorf("the served document differs from httpapi/openapi.json")
	}
	doc := parseSpec(t, r.Body)

	registered := map[string]bool{}
	for _, rt := range s.App.API.Routes() {
		key := strings.ToUpper(rt.Method) + " " + normalizePattern(rt.Path)
		if registered[key] {
			t.Errorf("route %s registered twice", key)
		}
		registered[key] = true
	}
	documented := map[string]bool{}
	for key := range doc.operations() {
		documented[key] = true
	}
	if len(registered) == 0 {
		t.Fatal("the server lists no routes")
	}

	var undocumented, unknown []string
	for key := range registered {
		if !documented[key] {
			undocumented = append(undocumented, key)
		}
	}
	for key := range documented {
		if !registered[key] {
			unknown = append(unknown, key)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unknown)
	for _, key := range undocumented {
		t.Errorf("route %s is registered but not in openapi.json", key)
	}
	for _, key := range unknown {
		t.Errorf("openapi.json describes %s, which is not a registered route", key)
	}
}

// TestOpenAPIDocumentIsValid checks the document's own consistency: the
// version, unique operation IDs, $refs that resolve, declared path
// parameters, known security schemes.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := readSpec(t)

	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Errorf("info needs title and version: %v", info)
	}
	paths, _ := doc["paths"].(map[string]any)
	if len(paths) == 0 {
		t.Fatal("no paths")
	}

	// Every $ref anywhere in the document resolves inside it.
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"]; ok {
				s, isStr := ref.(string)
				if !isStr || !strings.HasPrefix(s, "#") {
					t.Errorf("%s: $ref %v is not a local reference", where, ref)
				} else if _, ok := doc.resolve(s); !ok {
					t.Errorf("%s: $ref %q does not resolve", where, s)
				}
			}
			for k, e := range x {
				walk(where+"/"+k, e)
			}
		case []any:
			for i, e := range x {
				walk(where+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", map[string]any(doc))

	schemes, _ := doc.deref(doc["components"])["securitySchemes"].(map[string]any)
	ids := map[string]string{}
	for key, o := range doc.operations() {
		path := key[strings.Index(key, " ")+1:]
		if !strings.HasPrefix(path, "/") {
			t.Errorf("%s: path does not start with /", key)
		}
		id, _ := o["operationId"].(string)
		switch {
		case id == "":
			t.Errorf("%s: no operationId", key)
		case ids[id] != "":
			t.Errorf("%s: operationId %q already used by %s", key, id, ids[id])
		default:
			ids[id] = key
		}
		if s, _ := o["summary"].(string); s == "" {
			t.Errorf("%s: no summary", key)
		}
		if tags, _ := o["tags"].([]any); len(tags) == 0 {
			t.Errorf("%s: no tags", key)
		}

		responses, _ := o["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s: no responses", key)
		}
		for code := range responses {
			if n, err := strconv.Atoi(code); code != "default" && (err != nil || n < 100 || n > 599) {
				t.Errorf("%s: response key %q is not a status code", key, code)
			}
		}

		sec, ok := o["security"].([]any)
		if !ok {
			t.Errorf("%s: security not stated (use [] for a public route)", key)
		}
		for _, req := range sec {
			m, _ := req.(map[string]any)
			for name := range m {
				if _, ok := schemes[name]; !ok {
					t.Errorf("%s: security scheme %q is not in components.securitySchemes", key, name)
				}
			}
		}

		// Path parameters: every {name} of the template is declared, in
		// the path item or the operation, as required; nothing else is.
		item, _ := paths[path].(map[string]any)
		declared := map[string]bool{}
		for _, list := range []any{item["parameters"], o["parameters"]} {
			ps, _ := list.([]any)
			seen := map[string]bool{}
			for _, p := range ps {
				pm := doc.deref(p)
				name, _ := pm["name"].(string)
				in, _ := pm["in"].(string)
				if name == "" || in == "" {
					t.Errorf("%s: parameter without name or in: %v", key, p)
					continue
				}
				if seen[in+":"+name] {
					t.Errorf("%s: parameter %s (%s) declared twice", key, name, in)
				}
				seen[in+":"+name] = true
				if in != "path" {
					continue
				}
				if pm["required"] != true {
					t.Errorf("%s: path parameter %q is not required: true", key, name)
				}
				declared[name] = true
			}
		}
		inTemplate := map[string]bool{}
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			inTemplate[m[1]] = true
			if !declared[m[1]] {
				t.Errorf("%s: path parameter {%s} is not declared", key, m[1])
			}
		}
		for name := range declared {
			if !inTemplate[name] {
				t.Errorf("%s: path parameter %q is not in the path", key, name)
			}
		}
	}
}

// TestOpenAPIResponsesMatchSchemas calls a few routes and holds each
// answer to the schema the document gives for its status: every property
// sent is declared, every required one is sent, and values have the
// documented JSON types (objects and arrays are followed a few levels down).
func TestOpenAPIResponsesMatchSchemas(t *testing.T) {
	s := servertest.Start(t, servertest.Backends[0])
	doc := readSpec(t)
	admin := s.Admin

	cases := []struct {
		method, path, route, token string
		body                       any
		want                       int
	}{
		{"GET", "/healthz", "/healthz", admin, nil, 200},
		{"GET", "/v1/sites", "/v1/sites", admin, nil, 200},
		{"GET", "/v1/roles", "/v1/roles", admin, nil, 200},
		{"GET", "/v1/permissions", "/v1/permissions", admin, nil, 200},
		{"GET", "/v1/policy", "/v1/policy", admin, nil, 200},
		{"GET", "/v1/audit/verify", "/v1/audit/verify", admin, nil, 200},
		{"GET", "/v1/me", "/v1/me", admin, nil, 200},
		{"GET", "/v1/operators/" + string(s.Boot.OperatorID), "/v1/operators/{id}", admin, nil, 200},
		{"GET", "/v1/audit/events?limit=2", "/v1/audit/events", admin, nil, 200},
		{"GET", "/v1/reports/checklist", "/v1/reports/checklist", admin, nil, 200},
		{"GET", "/v1/reports/ledger", "/v1/reports/ledger", admin, nil, 200},
		{"GET", "/v1/reports/dormant", "/v1/reports/dormant", admin, nil, 200},
		{"GET", "/v1/reviews", "/v1/reviews", admin, nil, 200},
		{"GET", "/v1/review-schedules", "/v1/review-schedules", admin, nil, 200},
		{"POST", "/v1/reviews", "/v1/reviews", admin, map[string]any{"site_id": "honcho", "due_at": "2099-01-01T00:00:00Z"}, 201},
		// Problems are held to the Problem schema the same way.
		{"GET", "/v1/sites", "/v1/sites", "", nil, 401},
		{"POST", "/v1/sites", "/v1/sites", admin, map[string]any{"site_id": "kita", "name": "北支所", "municipality_code": "132152", "extra": 1}, 400},
		{"GET", "/v1/operators?limit=0", "/v1/operators", admin, nil, 400},
		{"GET", "/v1/operators/OP-NOSUCH00", "/v1/operators/{id}", admin, nil, 404},
		// Login, refresh, introspection and enrollment, as far as they go
		// without a card.
		{"POST", "/v1/login/password", "/v1/login/password", "", map[string]any{"operator_id": string(s.Boot.OperatorID),
			"password": "not-the-password-1", "terminal_id": "admin-console"}, 401},
		{"POST", "/v1/session/refresh", "/v1/session/refresh", "", map[string]any{"refresh_token": "S-garbage.garbage"}, 401},
		{"POST", "/v1/introspect", "/v1/introspect", admin, map[string]any{"token": "garbage"}, 200},
		{"POST", "/v1/introspect", "/v1/introspect", admin, map[string]any{"token": admin}, 200},
		{"POST", "/v1/enroll/begin", "/v1/enroll/begin", "", map[string]any{"enrollment_code": "0000-0000-0000"}, 401},
		{"POST", "/v1/enroll/begin", "/v1/enroll/begin", "", map[string]any{"enrollment_code": s.Boot.EnrollmentCode}, 200},
	}
	ops := doc.operations()
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := s.Do(c.method, c.path, c.token, c.body)
			if r.Status != c.want {
				t.Fatalf("status %d, want %d: %s", r.Status, c.want, r.Body)
			}
			o, ok := ops[c.method+" "+c.route]
			if !ok {
				t.Fatalf("%s %s is not in openapi.json", c.method, c.route)
			}
			responses, _ := o["responses"].(map[string]any)
			resp, ok := responses[strconv.Itoa(r.Status)]
			if !ok {
				t.Fatalf("status %d is not documented for %s %s", r.Status, c.method, c.route)
			}
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil {
				t.Fatalf("Content-Type %q: %v", r.Header.Get("Content-Type"), err)
			}
			content, _ := doc.deref(resp)["content"].(map[string]any)
			media, ok := content[mt].(map[string]any)
			if !ok {
				t.Fatalf("media type %s is not documented for status %d", mt, r.Status)
			}
			schema := doc.deref(media["schema"])
			if props, _ := schema["properties"].(map[string]any); len(props) == 0 {
				t.Fatalf("the documented schema has no properties: %v", media["schema"])
			}
			var body any
			dec := json.NewDecoder(bytes.NewReader(r.Body))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, r.Body)
			}
			if _, ok := body.(map[string]any); !ok {
				t.Fatalf("body is not an object: %s", r.Body)
			}
			for _, e := range conform(doc, "$", body, schema, 4) {
				t.Error(e)
			}
			// RFC 7662: an inactive token is told nothing more about.
			if m, _ := body.(map[string]any); c.route == "/v1/introspect" && m["active"] == false && len(m) != 1 {
				t.Errorf("an inactive token's introspection says more than active: %s", r.Body)
			}
		})
	}
}

// conform checks v against schema and returns what does not match: JSON
// types (with "null" in a type list), enums, date-time strings, and for
// objects that every property is declared and every required one present.
// Objects and arrays are followed depth levels down.
func conform(doc specDoc, where string, v any, schema map[string]any, depth int) []string {
	schema = doc.deref(schema)
	if schema == nil {
		return nil
	}
	var errs []string
	if types := schemaTypes(schema); len(types) > 0 && !slices.Contains(types, jsonType(v)) &&
		!(jsonType(v) == "integer" && slices.Contains(types, "number")) {
		return []string{fmt.Sprintf("%s: %s, documented as %v", where, jsonType(v), types)}
	}
	if enum, ok := schema["enum"].([]any); ok && v != nil {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			errs = append(errs, fmt.Sprintf("%s: %v is not one of %v", where, v, enum))
		}
	}
	if str, ok := v.(string); ok && schema["format"] == "date-time" {
		if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q is not an RFC 3339 time", where, str))
		}
	}
	if depth == 0 {
		return errs
	}
	switch x := v.(type) {
	case map[string]any:
		props, hasProps := schema["properties"].(map[string]any)
		if !hasProps {
			return errs // a free-form object
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := props[k].(map[string]any)
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: property %q is not documented", where, k))
				continue
			}
			errs = append(errs, conform(doc, where+"."+k, x[k], ps, depth-1)...)
		}
		req, _ := schema["required"].([]any)
		for _, k := range req {
			if _, ok := x[k.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required property %q is missing", where, k))
			}
		}
	case []any:
		items, ok := schema["items"].(map[string]any)
		if !ok {
			return errs
		}
		for i, e := range x {
			errs = append(errs, conform(doc, where+"["+strconv.Itoa(i)+"]", e, items, depth-1)...)
		}
	}
	return errs
}

func schemaTypes(schema map[string]any) []string {
	switch t := schema["type"].(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
