package report

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Format is how a report is written.
type Format string

// Formats of every report (R5.4).
const (
	JSON Format = "json"
	CSV  Format = "csv"
	XLSX Format = "xlsx"
)

// ErrFormat is returned for a format nobody writes.
var ErrFormat = errors.New("report: format must be json, csv or xlsx")

// ParseFormat reads ?format= (empty is JSON). Case and surrounding spaces
// do not matter: spreadsheets and people type "CSV".
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case "":
		return JSON, nil
	case JSON, CSV, XLSX:
		return f, nil
	}
	return "", ErrFormat
}

// ContentType is the media type of the format (API.md).
func (f Format) ContentType() string {
	switch f {
	case CSV:
		return "text/csv; charset=utf-8"
	case XLSX:
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	}
	return "application/json"
}

// Column is one column of a report: its JSON key and its heading in the
// spreadsheet, Japanese first (R6.3).
type Column struct{ Key, Title string }

// Table names a report and its columns.
type Table struct {
	Name    string // sheet and file name
	Columns []Column
}

// Record is one row: its JSON form is the value itself, its cells are
// what CSV and XLSX show, one per column.
type Record interface{ Cells() []string }

// Writer writes one report, row by row, as rows arrive: nothing is held
// but the row being written (CSV, JSON) or excelize's own bounded buffer
// (XLSX).
type Writer interface {
	Write(r Record) error
	Close() error
}

// NewWriter starts a report on w. head holds top-level JSON fields written
// before the items (ignored by CSV and XLSX).
func NewWriter(w io.Writer, f Format, t Table, head map[string]any) (Writer, error) {
	switch f {
	case CSV:
		return newCSV(w, t)
	case XLSX:
		return newXLSX(w, t)
	case JSON, "":
		return newJSON(w, head)
	}
	return nil, ErrFormat
}

// Escape defuses a cell that a spreadsheet would read as a formula: one
// starting with = + - @, a tab, a carriage return or a line feed gets a
// leading single quote (OWASP, CSV injection). So do their full-width
// forms (＝ ＋ － ＠), which Japanese input produces as a matter of course
// and some spreadsheets fold to ASCII before reading a formula, and any
// of these behind leading spaces, which spreadsheets may trim. The quote
// shows; the formula never runs.
func Escape(s string) string {
	for _, r := range s {
		switch r {
		case '=', '+', '-', '@', '\t', '\r', '\n', '＝', '＋', '－', '＠':
			return "'" + s
		case ' ', '\u3000', '\u00a0':
			continue // look past leading spaces, ideographic ones too
		}
		return s
	}
	return s
}

type csvWriter struct {
	w *csv.Writer
	n int
}

// bom makes spreadsheet programs read the file as UTF-8, so that Japanese
// text opens as written.
const bom = "\uFEFF"

func newCSV(w io.Writer, t Table) (*csvWriter, error) {
	if _, err := io.WriteString(w, bom); err != nil {
		return nil, err
	}
	cw := &csvWriter{w: csv.NewWriter(w), n: len(t.Columns)}
	cw.w.UseCRLF = true
	head := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		head[i] = c.Title
	}
	return cw, cw.w.Write(head)
}

func (c *csvWriter) Write(r Record) error {
	cells := r.Cells()
	if len(cells) != c.n {
		return fmt.Errorf("report: %d cells for %d columns", len(cells), c.n)
	}
	for i, v := range cells {
		cells[i] = Escape(v)
	}
	return c.w.Write(cells)
}

func (c *csvWriter) Close() error {
	c.w.Flush()
	return c.w.Error()
}

type jsonWriter struct {
	w     io.Writer
	first bool
}

func newJSON(w io.Writer, head map[string]any) (*jsonWriter, error) {
	var b strings.Builder
	b.WriteString("{")
	for k, v := range head {
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteString(":")
		b.Write(vb)
		b.WriteString(",")
	}
	b.WriteString(`"items":[`)
	_, err := io.WriteString(w, b.String())
	return &jsonWriter{w: w, first: true}, err
}

func (j *jsonWriter) Write(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if !j.first {
		b = append([]byte{','}, b...)
	}
	j.first = false
	_, err = j.w.Write(append(b, '\n'))
	return err
}

func (j *jsonWriter) Close() error {
	_, err := io.WriteString(j.w, "]}\n")
	return err
}

// T is a time in a report: RFC 3339 UTC in JSON (null when unset), and
// the same text, or nothing, in a cell.
type T time.Time

// MarshalJSON writes RFC 3339 or null.
func (t T) MarshalJSON() ([]byte, error) {
	if time.Time(t).IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(time.Time(t).UTC().Format(time.RFC3339))
}

// String is the cell text.
func (t T) String() string {
	if time.Time(t).IsZero() {
		return ""
	}
	return time.Time(t).UTC().Format(time.RFC3339)
}

// Equal reports whether two report times are the same instant.
func (t T) Equal(u T) bool { return time.Time(t).Equal(time.Time(u)) }
