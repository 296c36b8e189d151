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

// read returns the next record's fields (valid until the next call) and
// the line it starts on. It returns a *csvRecordError for a malformed or
// too long record, an error wrapping errUnclosedQuote when the input ends inside a quoted field, and io.EOF after the last
// record.
func (s *csvScanner) read() ([]string, int, error) {
	s.buf, s.ends = s.buf[:0], s.ends[:0]
	state := fieldStart
	start, quoteLine := 0, 0 // line of the record's first byte; line of the open quote
	size := 0                // bytes of the record, including what was not kept
	tooLong := false
	var bad string
	badLine := 0
	for {
		chunk, err := s.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("read: %w", err)
		}
		eof := errors.Is(err, io.EOF)
		// \r\n ends a line like \n, as in encoding/csv.
		if n := len(chunk); n >= 2 && chunk[n-2] == '\r' && chunk[n-1] == '\n' {
			chunk = append(chunk[:n-2], '\n')
		}
		if start == 0 && len(chunk) > 0 {
			if chunk[0] == '\n' && state == fieldStart && len(s.ends) == 0 {
				s.line++ // an empty line: skipped
				if eof {
					return nil, 0, io.EOF
				}
				continue
			}
			start = s.line + 1
		}
		for i := 0; i < len(chunk); {
			// Runs of ordinary bytes are copied (or skipped) at once.
			if stops := runStops[state]; stops != "" {
				j := bytes.IndexAny(chunk[i:], stops)
				if j < 0 {
					j = len(chunk) - i
				}
				if j > 0 {
					if state != skipLine {
						s.keep(chunk[i:i+j], &size, &tooLong)
					}
					i += j
					continue
				}
			}
			c := chunk[i]
			i++
			if size++; size > MaxLineBytes && !tooLong {
				tooLong, s.buf = true, s.buf[:0]
			}
			if c == '\n' {
				s.line++
			}
			switch state {
			case skipLine:
				if c == '\n' {
					return nil, start, s.badRecord(start, badLine, bad)
				}
				continue
			case quoted:
				if c == '"' {
					state = quoteSeen
					continue
				}
			case quoteSeen, fieldStart, unquoted:
				// A comma or newline outside quotes ends a field or the record.
				if c == ',' || c == '\n' {
					s.endField(tooLong)
					switch {
					case c == ',':
						state = fieldStart
						continue
					case tooLong:
						return nil, start, s.tooLong(start)
					}
					return s.record(), start, nil
				}
				switch {
				case state == quoteSeen && c == '"': // "" is a quote
					state = quoted
				case state == quoteSeen:
					bad, badLine, state = fmt.Sprintf(`extraneous or missing " in the quoted field opened on line %d`, quoteLine), s.line+1, skipLine
					continue
				case c == '"' && state == fieldStart:
					state, quoteLine = quoted, s.line+1
					continue
				case c == '"':
					bad, badLine, state = `bare " in a non-quoted field`, s.line+1, skipLine
					continue
				default:
					state = unquoted
				}
			}
			if !tooLong {
				s.buf = append(s.buf, c)
			}
		}
		if !eof {
			continue
		}
		// The input ends without a final newline.
		switch state {
		case quoted:
			return nil, start, fmt.Errorf("line %d: %w: the quote opened there runs to the end of the input, so no row after it was read",
				quoteLine, errUnclosedQuote)
		case skipLine:
			return nil, start, s.badRecord(start, badLine, bad)
		}
		if start == 0 {
			return nil, 0, io.EOF
		}
		s.line++ // the last line, unterminated
		s.endField(tooLong)
		if tooLong {
			return nil, start, s.tooLong(start)
		}
		return s.record(), start, nil
	}
}

// runStops are, per state, the bytes that end a run of ordinary bytes.
var runStops = [...]string{unquoted: ",\n\"", quoted: "\"\n", skipLine: "\n"}

// keep adds a run of field bytes to the record, up to the cap.
func (s *csvScanner) keep(run []byte, size *int, tooLong *bool) {
	if *size += len(run); *size > MaxLineBytes && !*tooLong {
		*tooLong, s.buf = true, s.buf[:0]
	}
	if !*tooLong {
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
