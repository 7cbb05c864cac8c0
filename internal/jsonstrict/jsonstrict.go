// Package jsonstrict refuses what encoding/json takes silently in a
// request body: a key given twice in one object (the last would win) and
// a key that matches a field only ignoring case ("REASON" for "reason").
// Either lets two readers of one body (a proxy that inspects it, and this
// server) see different requests.
package jsonstrict

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// KeyError names the key refused, by its dotted path, and why.
type KeyError struct {
	Path, Reason string
}

func (e *KeyError) Error() string { return "json: " + e.Path + ": " + e.Reason }

// Check walks body beside dst's type and returns a *KeyError for the
// first key given twice or matching a field only ignoring case. Values
// the type leaves to their own decoders (raw JSON, interfaces,
// Unmarshalers) are checked for repeated keys only. Malformed JSON is left
// to the decoder that follows, which says where.
func Check(body []byte, dst any) error {
	sc := scanner{b: body}
	err := sc.value(reflect.TypeOf(dst), "")
	if errors.Is(err, errMalformed) {
		return nil
	}
	return err
}

var errMalformed = errors.New("malformed")

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// jsonFields maps a struct type's JSON keys to their field types.
var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			m[name] = f.Type
		}
	}
	add(t)
	fieldCache.Store(t, m)
	return m
}

// scanner walks JSON bytes without building values: only keys are
// looked at. It is lenient: anything it cannot follow is errMalformed,
// left for the decoder to report.
type scanner struct {
	b     []byte
	i     int
	depth int
}

// maxDepth is encoding/json's own limit on nesting: deeper is refused
// by the decoder, and must not cost this walk a deep stack first.
const maxDepth = 10000

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads a string at s.i, unescaped only when it holds escapes.
func (s *scanner) str() (string, error) {
	start := s.i
	s.i++
	escaped := false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return string(raw[1 : len(raw)-1]), nil
			}
			var out string
			if json.Unmarshal(raw, &out) != nil {
				return "", errMalformed
			}
			return out, nil
		}
		s.i++
	}
	return "", errMalformed
}

// value reads one value as t (nil: any shape).
func (s *scanner) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer && !t.Implements(unmarshaler) {
		t = t.Elem()
	}
	if t != nil && (t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) || t.Kind() == reflect.Interface) {
		t = nil // its own decoder's business, or any shape
	}
	s.ws()
	if s.i >= len(s.b) {
		return errMalformed
	}
	if c := s.b[s.i]; c == '[' || c == '{' {
		if s.depth++; s.depth > maxDepth {
			return errMalformed
		}
		defer func() { s.depth-- }()
	}
	switch s.b[s.i] {
	case '"':
		_, err := s.str()
		return err
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			if err := s.value(elem, path); err != nil {
				return err
			}
			if done, err := s.after(']'); done || err != nil {
				return err
			}
		}
	case '{':
		return s.object(t, path)
	default:
		// A number, true, false or null.
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return nil
			}
			s.i++
		}
		return nil
	}
}

// after reads what follows a member: a comma (more to come) or close.
func (s *scanner) after(close byte) (done bool, err error) {
	s.ws()
	if s.i >= len(s.b) {
		return false, errMalformed
	}
	s.i++
	switch s.b[s.i-1] {
	case ',':
		return false, nil
	case close:
		return true, nil
	}
	return false, errMalformed
}

func (s *scanner) object(t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	// Few keys: a slice is cheapest. Many (a body of a megabyte can hold
	// a hundred thousand): a map, so the walk stays linear.
	var seen []string
	var seenMap map[string]bool
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errMalformed
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		name := key
		if path != "" {
			name = path + "." + key
		}
		// encoding/json reads bytes that are not UTF-8 as U+FFFD: two such
		// keys would be one to it.
		if !utf8.ValidString(key) {
			return &KeyError{strings.ToValidUTF8(name, "\uFFFD"), "not UTF-8"}
		}
		if seenMap != nil {
			if seenMap[key] {
				return &KeyError{name, "given twice"}
			}
			seenMap[key] = true
		} else if slices.Contains(seen, key) {
			return &KeyError{name, "given twice"}
		} else if seen = append(seen, key); len(seen) > 16 {
			seenMap = make(map[string]bool, 64)
			for _, k := range seen {
				seenMap[k] = true
			}
		}
		vt := elem
		if fields != nil {
			ft, exact := fields[key]
			if !exact {
				for k := range fields {
					if strings.EqualFold(k, key) {
						return &KeyError{name, "unknown field (names are case-sensitive)"}
					}
				}
			}
			vt = ft
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errMalformed
		}
		s.i++
		if err := s.value(vt, name); err != nil {
			return err
		}
		if done, err := s.after('}'); done || err != nil {
			return err
		}
	}
}
