// Package bulk reads bulk send files (CSV or JSON Lines) row by row and
// enqueues them through the producer's batch API with pacing, progress and
// a summary. It streams: memory does not grow with the file.
//
// CSV: a header row names the columns, in any order: to, code, template
// (required), language, id (optional), and param.NAME for each template
// parameter NAME (an empty cell leaves the parameter out). Fields are
// trimmed of surrounding spaces.
//
// JSON Lines: one object per line with the fields to, code, template,
// language, params (an object of strings) and id; blank lines are skipped.
//
// Each row's deduplication key (its task ID) is its id, or else derived from
// its destination, template, language and params — never from the code,
// which a task ID would otherwise leak to anyone able to hash guesses. So
// the same file run twice enqueues nothing twice, and rows fixed after a
// rejection and re-run are enqueued once.
package bulk

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/otpq/otpq/internal/dest"
	"github.com/otpq/otpq/producer"
)

// Format of a bulk file.
type Format string

// Formats. FormatAuto picks one from the file name (.csv; .jsonl, .ndjson,
// .json) or else from the first byte ('{' means JSON Lines).
const (
	FormatAuto  Format = ""
	FormatCSV   Format = "csv"
	FormatJSONL Format = "jsonl"
)

// MaxLineBytes bounds one line of a file; a longer line is rejected.
const MaxLineBytes = 64 << 10

// ErrBadInput is wrapped by errors that make a whole file unusable (bad
// header, unknown format); rows are never read then.
var ErrBadInput = errors.New("unusable bulk input")

// Row is one valid row of a file.
type Row struct {
	// Line is the row's 1-based line number in the file.
	Line int
	// Request is the send.
	Request producer.Request
	// Key is the row's deduplication key: its id column, or derived.
	Key string
}

// Reject is a row that is not sent: where it is and what is wrong. It
// never holds the code.
type Reject struct {
	Line   int
	Field  string
	Reason string
}

// String is the line reported to the user: "line 12: invalid to: …".
func (r Reject) String() string {
	return fmt.Sprintf("line %d: invalid %s: %s", r.Line, r.Field, r.Reason)
}

// Reader reads the rows of a bulk file. Create it with NewReader.
type Reader struct {
	counter *countingReader
	br      *bufio.Reader
	format  Format
	prefix  string

	// CSV
	csv     *csvScanner
	columns []column
	nfields int

	// JSON Lines
	line int
}

type column struct {
	field string // to, code, template, language, id, param
	param string // for param.NAME
}

// NewReader starts reading r, whose name (a path, or "-") helps detect the
// format. For CSV it reads the header now; an unusable header returns an
// error wrapping ErrBadInput. idPrefix is prepended to every row's key
// ("" for none). Empty input is not an error: it has no rows.
func NewReader(r io.Reader, name string, format Format, idPrefix string) (*Reader, error) {
	cr := &countingReader{r: r}
	rd := &Reader{counter: cr, br: bufio.NewReaderSize(cr, 256<<10), prefix: idPrefix}
	switch format {
	case FormatCSV, FormatJSONL:
	case FormatAuto:
		format = detect(name, rd.br)
	default:
		return nil, fmt.Errorf("%w: format %q is not csv or jsonl", ErrBadInput, format)
	}
	rd.format = format
	if format == FormatCSV {
		if err := rd.readHeader(); err != nil {
			return nil, err
		}
	}
	return rd, nil
}

// Format is the format being read.
func (r *Reader) Format() Format { return r.format }

// Offset is how many bytes of the input were consumed so far.
// It is safe to call while another goroutine reads.
func (r *Reader) Offset() int64 { return r.counter.n.Load() }

func detect(name string, br *bufio.Reader) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return FormatCSV
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL
	}
	for {
		b, err := br.Peek(1)
		if err != nil {
			return FormatCSV
		}
		if b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n' {
			// Look past leading white space without consuming it.
			buf, _ := br.Peek(min(br.Buffered()+1, 4096))
			trimmed := bytes.TrimLeft(buf, " \t\r\n")
			if len(trimmed) > 0 && trimmed[0] == '{' {
				return FormatJSONL
			}
			return FormatCSV
		}
		if b[0] == '{' {
			return FormatJSONL
		}
		return FormatCSV
	}
}

func (r *Reader) readHeader() error {
	r.csv = &csvScanner{br: r.br}
	header, _, err := r.csv.read()
	if errors.Is(err, io.EOF) {
		return nil // empty input: no rows
	}
	if err != nil {
		return fmt.Errorf("%w: CSV header: %v", ErrBadInput, err)
	}
	seen := map[string]bool{}
	r.columns = make([]column, len(header))
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		var c column
		switch lower := strings.ToLower(h); {
		case lower == "to" || lower == "code" || lower == "template" || lower == "language" || lower == "id":
			c.field = lower
		case strings.HasPrefix(lower, "param."):
			c.field, c.param = "param", h[len("param."):]
			if c.param == "" {
				return fmt.Errorf("%w: CSV header column %d: %q names no parameter (want param.NAME)", ErrBadInput, i+1, h)
			}
		default:
			return fmt.Errorf("%w: CSV header column %d: unknown column %q (want to, code, template, language, id, param.NAME)", ErrBadInput, i+1, h)
		}
		name := c.field + "." + c.param
		if seen[name] {
			return fmt.Errorf("%w: CSV header: column %q appears twice", ErrBadInput, h)
		}
		seen[name] = true
		r.columns[i] = c
	}
	for _, req := range []string{"to", "code", "template"} {
		if !seen[req+"."] {
			return fmt.Errorf("%w: CSV header has no %q column (header: to,code,template[,language][,id][,param.NAME…])", ErrBadInput, req)
		}
	}
	r.nfields = len(header)
	return nil
}

// Next returns the next row: a valid Row, or a Reject for a row that cannot
// be sent. It returns io.EOF after the last row, and another error only
// when the input cannot be read any further: a read error, or (wrapping
// ErrBadInput) a CSV quote left open to the end of the input, naming the
// line where it opened.
func (r *Reader) Next() (Row, *Reject, error) {
	if r.format == FormatCSV {
		return r.nextCSV()
	}
	return r.nextJSONL()
}

func (r *Reader) nextCSV() (Row, *Reject, error) {
	if r.columns == nil {
		return Row{}, nil, io.EOF
	}
	rec, line, err := r.csv.read()
	if err != nil {
		var re *csvRecordError
		if errors.As(err, &re) {
			return Row{}, &Reject{Line: re.line, Field: "row", Reason: re.reason}, nil
		}
		if errors.Is(err, errUnclosedQuote) {
			return Row{}, nil, fmt.Errorf("%w: %w", ErrBadInput, err)
		}
		return Row{}, nil, err
	}
	if len(rec) != r.nfields {
		return Row{}, &Reject{Line: line, Field: "row", Reason: fmt.Sprintf("%d fields, the header has %d", len(rec), r.nfields)}, nil
	}
	var req producer.Request
	var id string
	for i, c := range r.columns {
		v := strings.TrimSpace(rec[i])
		if c.field != "param" {
			setField(&req, &id, c.field, v)
		} else if v != "" {
			if req.Params == nil {
				req.Params = map[string]string{}
			}
			req.Params[c.param] = v
		}
	}
	return r.finish(line, req, id)
}

func (r *Reader) nextJSONL() (Row, *Reject, error) {
	for {
		data, tooLong, err := r.readLine()
		if err != nil {
			return Row{}, nil, err
		}
		r.line++
		if tooLong {
			return Row{}, &Reject{Line: r.line, Field: "row", Reason: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}, nil
		}
		data = bytes.TrimSpace(data)
		if len(data) == 0 {
			continue
		}
		req, id, rej := parseJSONRow(r.line, data)
		if rej != nil {
			return Row{}, rej, nil
		}
		return r.finish(r.line, req, id)
	}
}

// jsonReject explains a JSON syntax error by position, never by value (the
// line holds a code).
func jsonReject(line int, err error) *Reject {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return &Reject{Line: line, Field: "row", Reason: fmt.Sprintf("not a JSON object (syntax error at byte %d)", syn.Offset)}
	}
	return &Reject{Line: line, Field: "row", Reason: "not a JSON object"}
}

// readLine returns the next line without its newline; tooLong when it
// exceeded MaxLineBytes (the rest of it is skipped). io.EOF after the last.
func (r *Reader) readLine() (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			if tooLong {
				return nil, true, nil
			}
			if buf == nil {
				return chunk[:len(chunk)-1], len(chunk)-1 > MaxLineBytes, nil
			}
			return append(buf, chunk[:len(chunk)-1]...), len(buf)+len(chunk) > MaxLineBytes, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if !tooLong {
				buf = append(buf, chunk...)
				if len(buf) > MaxLineBytes {
					tooLong, buf = true, nil
				}
			}
		case errors.Is(err, io.EOF):
			if len(chunk) == 0 && buf == nil && !tooLong {
				return nil, false, io.EOF
			}
			if tooLong {
				return nil, true, nil
			}
			return append(buf, chunk...), len(buf)+len(chunk) > MaxLineBytes, nil
		default:
			return nil, false, fmt.Errorf("read: %w", err)
		}
	}
}

// setField sets the field of a row named by its column or key.
func setField(req *producer.Request, id *string, field, v string) {
	switch field {
	case "to":
		req.To = v
	case "code":
		req.Code = v
	case "template":
		req.TemplateID = v
	case "language":
		req.Language = v
	case "id":
		*id = v
	}
}

// keyChar reports whether c may appear in a deduplication key: the
// characters producer.DedupKey accepts (letters, digits, . _ : / @ + = -).
func keyChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._:/@+=-", c)
}

// finish validates a parsed row and derives its key.
func (r *Reader) finish(line int, req producer.Request, id string) (Row, *Reject, error) {
	if err := req.Validate(); err != nil {
		var ve *producer.ValidationError
		if errors.As(err, &ve) {
			return Row{}, &Reject{Line: line, Field: ve.Field, Reason: ve.Reason}, nil
		}
		return Row{}, &Reject{Line: line, Field: "row", Reason: err.Error()}, nil
	}
	key := id
	if key == "" {
		key = DeriveKey(req)
	}
	key = r.prefix + key
	switch {
	case len(key) > producer.MaxDedupKeyLen:
		return Row{}, &Reject{Line: line, Field: "id", Reason: fmt.Sprintf("longer than %d bytes (with --id-prefix)", producer.MaxDedupKeyLen)}, nil
	case strings.IndexFunc(key, func(c rune) bool { return !keyChar(c) }) >= 0:
		return Row{}, &Reject{Line: line, Field: "id", Reason: "may hold only letters, digits and . _ : / @ + = -"}, nil
	}
	return Row{Line: line, Request: req, Key: key}, nil, nil
}

// DeriveKey is the deduplication key of a row without an id: "bulk:" and a
// hash of its destination (in its canonical form, dest.Canonical, so that
// VICTIM@example.com and victim@example.com are one send), template, language and params. The code is left
// out on purpose: task IDs are shown in logs and status output, and a hash
// of a 6-digit code is reversed by trying a million guesses.
func DeriveKey(req producer.Request) string {
	h := sha256.New()
	h.Write([]byte("otpq/bulk/v1\x00" + dest.Key(req.To) + "\x00" + req.TemplateID + "\x00" + req.Language + "\x00"))
	keys := make([]string, 0, len(req.Params))
	for k := range req.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte(strconv.Quote(k) + "=" + strconv.Quote(req.Params[k]) + "\x00"))
	}
	return "bulk:" + hex.EncodeToString(h.Sum(nil)[:20])
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
