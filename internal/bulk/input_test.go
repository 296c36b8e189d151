package bulk

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/producer"
)

// readAll reads every row of content, returning valid rows and rejects
// ("line N: invalid FIELD: REASON") in order, and the final error (nil at
// a clean end).
func readAll(t *testing.T, content, name string) (rows []Row, rejects []string, err error) {
	t.Helper()
	r, err := NewReader(strings.NewReader(content), name, FormatAuto, "")
	if err != nil {
		return nil, nil, err
	}
	for {
		row, rej, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rows, rejects, nil
		}
		if err != nil {
			return rows, rejects, err
		}
		if rej != nil {
			require.NotContains(t, rej.String(), canary, "a reject never shows the code")
			rejects = append(rejects, rej.String())
			continue
		}
		rows = append(rows, row)
	}
}

// JSON Lines rows are read strictly: keys exactly as documented, once
// each; strings that encoding/json would silently change (invalid UTF-8,
// lone surrogate escapes) are refused naming the field (issue 9, item 4).
func TestJSONLStrict(t *testing.T) {
	good := `{"to":"+8618700000001","code":"` + canary + `","template":"login"}`
	for _, tc := range []struct{ row, want string }{
		{`{"to":"+8618700000001","code":"1","code":"` + canary + `","template":"login"}`, "invalid code: appears twice on the line"},
		{`{"TO":"+8618700000001","code":"` + canary + `","template":"login"}`, "invalid TO: unknown field (field names are lower case"},
		{`{"to":"+8618700000001","CODE":"` + canary + `","template":"login"}`, "invalid CODE: unknown field"},
		{`{"to":"+8618700000001","code":"` + canary + `","Template":"login"}`, "invalid Template: unknown field"},
		{`{"to":"+8618700000001","code":"9182\ud80073","template":"login"}`, `invalid code: holds a lone surrogate escape (\ud800)`},
		{`{"to":"+8618700000001","code":"9182\udc0073","template":"login"}`, `invalid code: holds a lone surrogate escape (\udc00)`},
		{`{"to":"+8618700000001","code":"9182\uD800\u0041","template":"login"}`, `invalid code: holds a lone surrogate escape (\uD800)`},
		{`{"to":"+8618700000001","code":"9182` + "\xff" + `73","template":"login"}`, "invalid code: not valid UTF-8"},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"log` + "\xff" + `in"}`, "invalid template: not valid UTF-8"},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"lo\u001b[31mgin\nX"}`, "invalid template: control character U+001B"},
		{`{"to":"vic\u200btim@example.com","code":"` + canary + `","template":"login"}`, "invalid to: invisible formatting character U+200B"},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"login","params":{"a":"1","a":"2"}}`, `invalid params: key "a" appears twice`},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"login","params":{"a":"\udfff"}}`, `invalid params: value of "a": holds a lone surrogate escape`},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"login","params":{"a":1}}`, "invalid params: must be a string map"},
		{`{"to":"+8618700000001","code":9,"template":"login"}`, "invalid code: must be a string"},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"login"} {}`, "invalid row: more than one JSON value"},
		{`{"to":"+8618700000001","code":"` + canary + `","template":"login"`, "invalid row: not a JSON object"},
		{`["to"]`, "invalid row: not a JSON object"},
	} {
		rows, rejects, err := readAll(t, good+"\n\n"+tc.row+"\n"+good+"\n", "x.jsonl")
		require.NoError(t, err, tc.row)
		require.Len(t, rows, 2, tc.row)
		require.Equal(t, []int{1, 4}, []int{rows[0].Line, rows[1].Line})
		require.Len(t, rejects, 1, tc.row)
		require.Contains(t, rejects[0], "line 3: "+tc.want, tc.row)
	}
	// Surrogate pairs, escapes and non-ASCII text are fine.
	rows, rejects, err := readAll(t, `{"to":"+8618700000001","code":"`+canary+`","template":"login","params":{"name":"\ud83d\ude00 Zoë \"\\u\" é"},"language":null}`, "x.jsonl")
	require.NoError(t, err)
	require.Empty(t, rejects)
	require.Equal(t, "\U0001F600 Zoë \"\\u\" é", rows[0].Request.Params["name"])
}

// A CSV cell is not replaced either: invalid UTF-8 is refused naming the
// column's field.
func TestCSVInvalidUTF8(t *testing.T) {
	_, rejects, err := readAll(t, "to,code,template,param.name\n+8618700000001,9182\xff73,login,x\n+8618700000001,"+canary+",log\xffin,x\n+8618700000001,"+canary+",login,B\xffob\n", "x.csv")
	require.NoError(t, err)
	require.Equal(t, []string{
		"line 2: invalid code: not valid UTF-8",
		"line 3: invalid template: not valid UTF-8",
		`line 4: invalid params: value of "name" is not valid UTF-8`,
	}, rejects)
}

// Bulk deduplication derives a row's key from the canonical destination:
// case variants and aliases of one address are one send.
func TestDeriveKeyCanonicalDestination(t *testing.T) {
	a := producer.Request{To: "victim@example.com", TemplateID: "login"}
	for _, to := range []string{"VICTIM@example.com", "victim@EXAMPLE.com", "Victim@Example.COM", "victim+1@example.com"} {
		b := a
		b.To = to
		require.Equal(t, DeriveKey(a), DeriveKey(b), to)
	}
	rows, _, err := readAll(t, "to,code,template\nvictim@example.com,1,login\nVICTIM@example.COM,2,login\n", "x.csv")
	require.NoError(t, err)
	require.Equal(t, rows[0].Key, rows[1].Key)
}

// The CSV scanner reads well-formed files exactly as encoding/csv does.
func TestCSVScannerMatchesEncodingCSV(t *testing.T) {
	for _, in := range []string{
		"a,b,c\n1,2,3\n",
		"a,b,c\r\n1,2,3\r\n",
		"a,b\n\n\n1,2",
		"a,b\n\"x,y\",\"say \"\"hi\"\"\"\n",
		"a,b\n\"multi\nline\",2\n\"\",\"\"\n",
		"a,b\n\"multi\r\nline\",2\n",
		"a,,\n,,\n",
		"a,b\n ,\t\n",
		"\ufeffto,code\nx,y\n",
	} {
		want, err := csv.NewReader(strings.NewReader(in)).ReadAll()
		require.NoError(t, err, in)
		s := &csvScanner{br: bufio.NewReader(strings.NewReader(in))}
		var got [][]string
		var lines []int
		cr := csv.NewReader(strings.NewReader(in))
		for {
			rec, line, err := s.read()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, in)
			got = append(got, append([]string(nil), rec...))
			lines = append(lines, line)
			_, err = cr.Read()
			require.NoError(t, err)
			wantLine, _ := cr.FieldPos(0)
			require.Equal(t, wantLine, line, "%q: start line of record %d", in, len(got))
		}
		require.Equal(t, want, got, "%q", in)
	}
}

// Malformed quotes are rejected with the lines they took, never silently
// merged into one row; the rows around them are read.
func TestCSVMalformedQuotes(t *testing.T) {
	ok := "+8618700000001," + canary + ",login\n"
	_, rejects, err := readAll(t, "to,code,template\n"+ok+"+8618700000002,x\"y,login\n"+ok, "x.csv")
	require.NoError(t, err)
	require.Equal(t, []string{`line 3: invalid row: malformed CSV: bare " in a non-quoted field`}, rejects)

	rows, rejects, err := readAll(t, "to,code,template\n"+ok+"+8618700000002,\"open\n"+ok+ok+"\"x\"y,z\n"+ok, "x.csv")
	require.NoError(t, err)
	require.Equal(t, []string{`line 3: invalid row: malformed CSV: extraneous or missing " in the quoted field opened on line 3 (line 6); lines 3-6 skipped as one record`}, rejects)
	require.Equal(t, []int{2, 7}, []int{rows[0].Line, rows[1].Line})
}

// A quote left open to the end of the input stops the run with the line
// where it opened; the rows before it are read, none after it is counted
// (issue 9, item 6).
func TestCSVUnclosedQuote(t *testing.T) {
	var b strings.Builder
	b.WriteString("to,code,template\n+8618700000001," + canary + ",login\n+8618700000002,\"" + canary + ",login\n")
	for range 1000 {
		b.WriteString("+8618700000003," + canary + ",login\n")
	}
	r, err := NewReader(strings.NewReader(b.String()), "x.csv", FormatAuto, "")
	require.NoError(t, err)
	s := &fakeSender{}
	sum, err := Run(context.Background(), Config{Reader: r, Sender: s})
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "line 3: quote never closed")
	require.NotContains(t, err.Error(), canary)
	require.Equal(t, int64(1), sum.Rows, "only the row before the quote is counted")
	require.Equal(t, 1, s.n)
}

// endless yields a CSV header then one row whose code cell is n bytes
// long (opened with a quote when quote is set), then a valid row; it never
// holds more than a small buffer.
type endless struct {
	head, tail string
	n          int
	off        int
}

func (e *endless) Read(p []byte) (int, error) {
	total := len(e.head) + e.n + len(e.tail)
	if e.off >= total {
		return 0, io.EOF
	}
	w := 0
	for w < len(p) && e.off < total {
		switch {
		case e.off < len(e.head):
			c := copy(p[w:], e.head[e.off:])
			w, e.off = w+c, e.off+c
		case e.off < len(e.head)+e.n:
			c := copy(p[w:], nines[:min(len(nines), len(e.head)+e.n-e.off)])
			w, e.off = w+c, e.off+c
		default:
			c := copy(p[w:], e.tail[e.off-len(e.head)-e.n:])
			w, e.off = w+c, e.off+c
		}
	}
	return w, nil
}

var nines = []byte(strings.Repeat("9", 32<<10))

// A huge cell is rejected with its line and is never held in memory: the
// reader allocates a bounded amount whatever the cell's size (issue 9,
// item 6; encoding/csv allocated several times the cell).
func TestCSVHugeCellBoundedMemory(t *testing.T) {
	const cell = 16 << 20
	for name, in := range map[string]*endless{
		"unquoted": {head: "to,code,template\n+8618700000001,", n: cell, tail: ",login\n+8618700000002," + canary + ",login\n"},
		"quoted":   {head: "to,code,template\n+8618700000001,\"", n: cell, tail: "\",login\n+8618700000002," + canary + ",login\n"},
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r, err := NewReader(in, "x.csv", FormatCSV, "")
			require.NoError(t, err)
			_, rej, err := r.Next()
			require.NoError(t, err)
			require.Equal(t, &Reject{Line: 2, Field: "row", Reason: fmt.Sprintf("record longer than %d bytes", MaxLineBytes)}, rej)
			row, rej, err := r.Next()
			require.NoError(t, err)
			require.Nil(t, rej)
			require.Equal(t, 3, row.Line)
			_, _, err = r.Next()
			require.ErrorIs(t, err, io.EOF)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d MB cell: %d KB allocated", cell>>20, allocated>>10)
			require.Less(t, allocated, uint64(cell/4), "memory must not grow with the cell")
		})
	}
}
