package report_test

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opgate/opgate/report"
)

type cells []string

func (c cells) Cells() []string { return append([]string(nil), c...) }

// FuzzCSVCell writes any cell text through the CSV writer and reads it
// back with encoding/csv: the text survives byte for byte, except that a
// cell a spreadsheet would run as a formula gains exactly one leading
// quote.
func FuzzCSVCell(f *testing.F) {
	for _, s := range []string{"", "=1+1", "+81", "-2", "@SUM(A1)", "\tx", "\rx", "住基 太郎", "a,b", "\"q\"", "line\nbreak", "'=already", "=HYPERLINK(\"http://x\")", "＝HYPERLINK(\"http://x\")", "＋81", "  =1", "\u3000＠x", "\n=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8Valid(s) {
			t.Skip()
		}
		var b bytes.Buffer
		w, err := report.NewWriter(&b, report.CSV, report.Table{Columns: []report.Column{{"a", "列"}, {"b", "B"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(cells{s, "x"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		body, ok := bytes.CutPrefix(b.Bytes(), []byte("\uFEFF"))
		if !ok {
			t.Fatal("no BOM")
		}
		r := csv.NewReader(bytes.NewReader(body))
		rows, err := r.ReadAll()
		if err != nil {
			t.Fatalf("read back %q: %v", body, err)
		}
		if len(rows) != 2 || len(rows[1]) != 2 {
			t.Fatalf("rows %q", rows)
		}
		got := rows[1][0]
		// encoding/csv drops carriage returns inside a quoted field when
		// it reads it back; everything else must survive.
		want := strings.ReplaceAll(report.Escape(s), "\r", "")
		if strings.ReplaceAll(got, "\r", "") != want {
			t.Fatalf("cell %q came back %q, want %q", s, got, want)
		}
		// Past leading spaces (which spreadsheets may trim), no cell opens
		// with a formula character, ASCII or full-width.
		if first := strings.TrimLeft(report.Escape(s), " \u3000\u00a0"); first != "" {
			if r, _ := utf8.DecodeRuneInString(first); strings.ContainsRune("=+-@\t\r\n＝＋－＠", r) {
				t.Fatalf("cell %q starts a formula: %q", s, got)
			}
		}
		if report.Escape(s) != s && report.Escape(s) != "'"+s {
			t.Fatalf("escape changed more than a leading quote: %q", report.Escape(s))
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// FuzzReportParams feeds the query parameters reports read: formats are
// one of three or an error, ranges are ordered or an error, never a panic.
func FuzzReportParams(f *testing.F) {
	f.Add("csv", "2027-04-01T00:00:00Z", "2027-04-02T00:00:00+09:00")
	f.Add(" XLSX ", "", "")
	f.Add("pdf", "yesterday", "9999-12-31T23:59:59Z")
	f.Add("", "0001-01-01T00:00:00Z", "2027-04-01T00:00:00Z")
	now := time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, format, from, to string) {
		fm, err := report.ParseFormat(format)
		if err == nil && fm != report.JSON && fm != report.CSV && fm != report.XLSX {
			t.Fatalf("format %q parsed as %q", format, fm)
		}
		a, b, err := report.ParseRange(from, to, now)
		if err != nil {
			return
		}
		if !a.IsZero() && !a.Before(b) {
			t.Fatalf("range %v..%v accepted", a, b)
		}
		if a.Location() != time.UTC || b.Location() != time.UTC {
			t.Fatalf("range not in UTC: %v %v", a, b)
		}
	})
}
