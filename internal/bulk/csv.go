package bulk

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// csvScanner reads CSV records (RFC 4180: comma-separated, fields
// optionally quoted with "" for a quote, quoted fields may span lines,
// \r\n read as \n, empty lines skipped) without ever holding more than
// MaxLineBytes of one record: encoding/csv buffers a whole record, so a
// 100 MB cell or a quote left open over the rest of a file cost its size
// in memory. A record longer than the cap is still scanned to its end, to
// find where the next one starts, but not kept.
type csvScanner struct {
	br   *bufio.Reader
	line int // lines read so far

	buf    []byte // the current record's field bytes
	ends   []int  // end of each field in buf
	fields []string
}

// csvRecordError is a record that cannot be used: where it starts and why.
// Scanning goes on at the next record.
type csvRecordError struct {
	line   int
	reason string
}

func (e *csvRecordError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.reason) }

// errUnclosedQuote wraps the error of a quote still open at the end of the
// input: everything after it was read as one field, so no row after it can
// be trusted.
var errUnclosedQuote = errors.New("quote never closed")

// csv scanning states
const (
	fieldStart = iota // at the start of a field
	unquoted          // inside an unquoted field
	quoted            // inside a quoted field
	quoteSeen         // a quote inside a quoted field: closing, or the first of ""
	skipLine          // after a malformed field: skipping to the end of the line
)

// csvRecord is the scanning state of the record being read.
type csvRecord struct {
	state     int
	start     int    // line of the record's first byte; 0 before it
	quoteLine int    // line of the open quote
	size      int    // bytes of the record, including what was not kept
	tooLong   bool   // over MaxLineBytes: scanned to its end, not kept
	bad       string // why the record is malformed (state skipLine)
	badLine   int    // where it went wrong
}

// malformed starts skipping the rest of the record's line: why, on line.
func (rec *csvRecord) malformed(why string, line int) {
	rec.bad, rec.badLine, rec.state = why, line, skipLine
}

// read returns the next record's fields (valid until the next call) and
// the line it starts on. It returns a *csvRecordError for a malformed or
// too long record, an error wrapping errUnclosedQuote when the input ends
// inside a quoted field, and io.EOF after the last record.
func (s *csvScanner) read() ([]string, int, error) {
	s.buf, s.ends = s.buf[:0], s.ends[:0]
	rec := csvRecord{state: fieldStart}
	for {
		chunk, eof, err := s.nextChunk()
		if err != nil {
			return nil, 0, err
		}
		if rec.start == 0 && len(chunk) > 0 {
			if chunk[0] == '\n' && rec.state == fieldStart && len(s.ends) == 0 {
				s.line++ // an empty line: skipped
				if eof {
					return nil, 0, io.EOF
				}
				continue
			}
			rec.start = s.line + 1
		}
		if fields, done, err := s.scan(&rec, chunk); done {
			return fields, rec.start, err
		}
		if eof {
			return s.atEOF(&rec)
		}
	}
}

// nextChunk reads up to the next newline, or a buffer's worth, with \r\n
// read as \n (as in encoding/csv); eof: the input ends after it.
func (s *csvScanner) nextChunk() (chunk []byte, eof bool, err error) {
	chunk, err = s.br.ReadSlice('\n')
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !errors.Is(err, io.EOF) {
		return nil, false, fmt.Errorf("read: %w", err)
	}
	if n := len(chunk); n >= 2 && chunk[n-2] == '\r' && chunk[n-1] == '\n' {
		chunk = append(chunk[:n-2], '\n')
	}
	return chunk, errors.Is(err, io.EOF), nil
}

// scan feeds chunk to rec; done: the record ended in it, with its fields
// or its error.
func (s *csvScanner) scan(rec *csvRecord, chunk []byte) (fields []string, done bool, err error) {
	for i := 0; i < len(chunk); {
		// Runs of ordinary bytes are copied (or skipped) at once.
		if j := s.run(rec, chunk[i:]); j > 0 {
			i += j
			continue
		}
		c := chunk[i]
		i++
		if fields, done, err := s.step(rec, c); done {
			return fields, true, err
		}
	}
	return nil, false, nil
}

// run takes the run of ordinary bytes at the start of b (kept, or skipped
// after a malformed field) and returns its length.
func (s *csvScanner) run(rec *csvRecord, b []byte) int {
	stops := runStops[rec.state]
	if stops == "" {
		return 0
	}
	j := bytes.IndexAny(b, stops)
	if j < 0 {
		j = len(b)
	}
	if j > 0 && rec.state != skipLine {
		s.keep(rec, b[:j])
	}
	return j
}

// step feeds one byte to rec; done: the record ended with it.
func (s *csvScanner) step(rec *csvRecord, c byte) (fields []string, done bool, err error) {
	if rec.size++; rec.size > MaxLineBytes && !rec.tooLong {
		rec.tooLong, s.buf = true, s.buf[:0]
	}
	if c == '\n' {
		s.line++
	}
	switch rec.state {
	case skipLine:
		if c == '\n' {
			return nil, true, s.badRecord(rec.start, rec.badLine, rec.bad)
		}
		return nil, false, nil
	case quoted:
		if c == '"' {
			rec.state = quoteSeen
			return nil, false, nil
		}
	case quoteSeen, fieldStart, unquoted:
		// A comma or newline outside quotes ends a field or the record.
		if c == ',' || c == '\n' {
			return s.endOfField(rec, c)
		}
		if !s.fieldByte(rec, c) {
			return nil, false, nil
		}
	}
	if !rec.tooLong {
		s.buf = append(s.buf, c)
	}
	return nil, false, nil
}

// endOfField ends a field at c, a comma or a newline outside quotes; done:
// the newline ended the record.
func (s *csvScanner) endOfField(rec *csvRecord, c byte) (fields []string, done bool, err error) {
	s.endField(rec.tooLong)
	switch {
	case c == ',':
		rec.state = fieldStart
		return nil, false, nil
	case rec.tooLong:
		return nil, true, s.tooLong(rec.start)
	}
	return s.record(), true, nil
}

// fieldByte moves rec on at c (neither a comma nor a newline) outside a
// quoted field's content, and reports whether c belongs to the field.
func (s *csvScanner) fieldByte(rec *csvRecord, c byte) bool {
	switch {
	case rec.state == quoteSeen && c == '"': // "" is a quote
		rec.state = quoted
		return true
	case rec.state == quoteSeen:
		rec.malformed(fmt.Sprintf(`extraneous or missing " in the quoted field opened on line %d`, rec.quoteLine), s.line+1)
		return false
	case c == '"' && rec.state == fieldStart:
		rec.state, rec.quoteLine = quoted, s.line+1
		return false
	case c == '"':
		rec.malformed(`bare " in a non-quoted field`, s.line+1)
		return false
	}
	rec.state = unquoted
	return true
}

// atEOF ends rec where the input ends without a final newline.
func (s *csvScanner) atEOF(rec *csvRecord) ([]string, int, error) {
	switch rec.state {
	case quoted:
		return nil, rec.start, fmt.Errorf("line %d: %w: the quote opened there runs to the end of the input, so no row after it was read",
			rec.quoteLine, errUnclosedQuote)
	case skipLine:
		return nil, rec.start, s.badRecord(rec.start, rec.badLine, rec.bad)
	}
	if rec.start == 0 {
		return nil, 0, io.EOF
	}
	s.line++ // the last line, unterminated
	s.endField(rec.tooLong)
	if rec.tooLong {
		return nil, rec.start, s.tooLong(rec.start)
	}
	return s.record(), rec.start, nil
}

// runStops are, per state, the bytes that end a run of ordinary bytes.
var runStops = [...]string{unquoted: ",\n\"", quoted: "\"\n", skipLine: "\n"}

// keep adds a run of field bytes to the record, up to the cap.
func (s *csvScanner) keep(rec *csvRecord, run []byte) {
	if rec.size += len(run); rec.size > MaxLineBytes && !rec.tooLong {
		rec.tooLong, s.buf = true, s.buf[:0]
	}
	if !rec.tooLong {
		s.buf = append(s.buf, run...)
	}
}

func (s *csvScanner) endField(tooLong bool) {
	if !tooLong {
		s.ends = append(s.ends, len(s.buf))
	}
}

// record splits the kept bytes into fields, one string allocation per record.
func (s *csvScanner) record() []string {
	all := string(s.buf)
	s.fields = s.fields[:0]
	prev := 0
	for _, end := range s.ends {
		s.fields = append(s.fields, all[prev:end])
		prev = end
	}
	return s.fields
}

func (s *csvScanner) tooLong(start int) error {
	return &csvRecordError{line: start, reason: fmt.Sprintf("record longer than %d bytes%s", MaxLineBytes, s.span(start))}
}

func (s *csvScanner) badRecord(start, badLine int, reason string) error {
	if badLine != start {
		reason += fmt.Sprintf(" (line %d)", badLine)
	}
	return &csvRecordError{line: start, reason: "malformed CSV: " + reason + s.span(start)}
}

// span names the lines a record took when it took more than one, so that
// rows swallowed by a quote are never silently counted as one.
func (s *csvScanner) span(start int) string {
	if s.line > start {
		return fmt.Sprintf("; lines %d-%d skipped as one record", start, s.line)
	}
	return ""
}
