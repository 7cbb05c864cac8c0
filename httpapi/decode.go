package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opgate/opgate/internal/jsonstrict"
)

// decode reads one JSON object into dst, refusing unknown fields, wrong
// types, trailing data and bodies over the limit. An empty body is allowed
// only when every field is optional.
func decode(r *http.Request, dst any, optional bool) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errTooLarge
		}
		return invalid("body", "could not be read")
	}
	// A bare null decodes into nothing and would stand for an empty body.
	if trimmed := bytes.TrimSpace(body); len(trimmed) == 0 || string(trimmed) == "null" {
		if optional {
			return nil
		}
		return invalid("body", "a JSON object is required")
	}
	if err := jsonstrict.Check(body, dst); err != nil {
		ke, _ := errors.AsType[*jsonstrict.KeyError](err)
		return invalid(truncate(ke.Path, 64), ke.Reason)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return invalid("body", "one JSON object only")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("body", "one JSON object only")
	}
	if field, ok := nulField(reflect.ValueOf(dst), "body"); ok {
		return invalid(field, "must not contain NUL characters")
	}
	return nil
}

// nulField names the first string of a decoded request that holds a NUL
// character: PostgreSQL refuses NUL in text (an internal error) and SQLite
// would keep it, so no field may carry one. Raw documents ([]byte) are
// their own decoders' business.
func nulField(v reflect.Value, name string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return nulField(v.Elem(), name)
		}
	case reflect.String:
		return name, strings.ContainsRune(v.String(), 0)
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			for i := range v.Len() {
				if f, ok := nulField(v.Index(i), name); ok {
					return f, true
				}
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if f, ok := nulField(it.Key(), name); ok {
				return f, true
			}
			if f, ok := nulField(it.Value(), name); ok {
				return f, true
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			n, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if n == "" {
				n = name
			}
			if f, ok := nulField(v.Field(i), n); ok {
				return f, true
			}
		}
	}
	return "", false
}

func jsonError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return invalid("body", fmt.Sprintf("malformed JSON at byte %d", se.Offset))
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := te.Field
		if field == "" {
			field = "body"
		}
		return invalid(field, "must be "+jsonKind(te.Type.String()))
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		// The name comes from the body: named, but never at length.
		return invalid(truncate(strings.Trim(name, `"`), 64), "unknown field")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return invalid("body", "malformed JSON: unexpected end")
	}
	return invalid("body", "malformed JSON")
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number"
	case goType == "string", strings.HasSuffix(goType, "ID"):
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.Contains(goType, "Time"):
		return "an RFC 3339 time string"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "struct"), strings.HasPrefix(goType, "httpapi."):
		return "an object"
	}
	return "a " + goType
}

// Time is an RFC 3339 instant on the wire; null or absent is the zero time.
type Time struct{ time.Time }

// UnmarshalJSON accepts RFC 3339 strings and null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string", Type: timeType}
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || v.Year() < 1970 || v.Year() > 9999 {
		// A type error, so that the decoder names the field; the value
		// itself is never echoed.
		return &json.UnmarshalTypeError{Value: "string", Type: timeType}
	}
	t.Time = v.UTC().Truncate(time.Microsecond)
	return nil
}

var timeType = reflect.TypeFor[Time]()

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// MarshalJSON writes RFC 3339 UTC or null.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

func ts(t time.Time) Time { return Time{t} }

// page reads ?limit= and ?cursor=.
func page(r *http.Request) (limit int, after string, err error) {
	limit = 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > 1000 {
			return 0, "", invalid("limit", "an integer from 1 to 1000")
		}
		limit = n
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		b, derr := base64.RawURLEncoding.DecodeString(c)
		// A cursor is the last key of a page: text a store holds, never
		// bytes PostgreSQL refuses outright (NUL, invalid UTF-8).
		if derr != nil || len(b) == 0 || len(b) > 128 || !cleanText(string(b)) {
			return 0, "", invalid("cursor", "not a cursor this server gave")
		}
		after = string(b)
	}
	return limit, after, nil
}

func cursor(last string) *string {
	c := base64.RawURLEncoding.EncodeToString([]byte(last))
	return &c
}

// list is the contract's list envelope.
type list[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// listOf builds a page: one more item than asked was fetched to know
// whether a next page exists.
func listOf[S any, T any](items []S, limit int, key func(S) string, conv func(S) T) list[T] {
	out := list[T]{Items: make([]T, 0, min(len(items), limit))}
	for i, it := range items {
		if i == limit {
			out.NextCursor = cursor(key(items[i-1]))
			break
		}
		out.Items = append(out.Items, conv(it))
	}
	return out
}

// pageOf answers a short list read whole (sites, terminals, roles, the
// catalog) with the same paging as every other list: items after the
// cursor, in key order, at most limit of them.
func pageOf[S any, T any](w http.ResponseWriter, r *http.Request, items []S, key func(S) string, conv func(S) T) error {
	limit, after, err := page(r)
	if err != nil {
		return err
	}
	items = slices.Clone(items)
	slices.SortFunc(items, func(a, b S) int { return strings.Compare(key(a), key(b)) })
	start := sort.Search(len(items), func(i int) bool { return key(items[i]) > after })
	return writeJSON(w, 200, listOf(items[start:], limit, key, conv))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}
