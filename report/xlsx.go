package report

import (
	"fmt"
	"io"

	"github.com/xuri/excelize/v2"
)

// xlsxWriter writes through excelize's StreamWriter, which keeps a bounded
// buffer in memory and spills the rest to a temporary file, so that a
// ledger of any size streams (excelize enters the project here only).
type xlsxWriter struct {
	out  io.Writer
	f    *excelize.File
	sw   *excelize.StreamWriter
	n    int
	row  int
	vals []any
}

func newXLSX(w io.Writer, t Table) (*xlsxWriter, error) {
	f := excelize.NewFile()
	sheet := t.Name
	if sheet == "" {
		sheet = "report"
	}
	if len([]rune(sheet)) > 31 {
		sheet = string([]rune(sheet)[:31])
	}
	if err := f.SetSheetName("Sheet1", sheet); err != nil {
		_ = f.Close()
		return nil, err
	}
	sw, err := f.NewStreamWriter(sheet)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	x := &xlsxWriter{out: w, f: f, sw: sw, n: len(t.Columns), vals: make([]any, len(t.Columns))}
	for i, c := range t.Columns {
		x.vals[i] = c.Title
	}
	if err := x.next(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return x, nil
}

func (x *xlsxWriter) next() error {
	x.row++
	cell, err := excelize.CoordinatesToCellName(1, x.row)
	if err != nil {
		return err
	}
	return x.sw.SetRow(cell, x.vals)
}

// Write adds a row. Cells are strings, escaped like CSV cells: a cell is
// never a formula in the file, but people copy sheets into CSV.
func (x *xlsxWriter) Write(r Record) error {
	cells := r.Cells()
	if len(cells) != x.n {
		return fmt.Errorf("report: %d cells for %d columns", len(cells), x.n)
	}
	for i, v := range cells {
		x.vals[i] = Escape(v)
	}
	return x.next()
}

func (x *xlsxWriter) Close() error {
	defer x.f.Close()
	if err := x.sw.Flush(); err != nil {
		return err
	}
	_, err := x.f.WriteTo(x.out)
	return err
}
