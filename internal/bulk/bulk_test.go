package bulk

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/otpq/otpq/producer"
)

const canary = "CANARY-8080"

func TestDeriveKeyIgnoresTheCode(t *testing.T) {
	a := producer.Request{To: "+8618700000001", Code: "111111", TemplateID: "login", Params: map[string]string{"a": "1", "b": "2"}}
	b := a
	b.Code = "222222"
	b.Params = map[string]string{"b": "2", "a": "1"}
	require.Equal(t, DeriveKey(a), DeriveKey(b), "same destination, template and params: the same send")
	c := a
	c.TemplateID = "signup"
	require.NotEqual(t, DeriveKey(a), DeriveKey(c))
	d := a
	d.Params = map[string]string{"a": "1=b", "": "2"}
	require.NotEqual(t, DeriveKey(a), DeriveKey(d), "param boundaries are unambiguous")
	// The same code in another language is another message. Fails with the
	// language left out of the key: checked.
	e := a
	e.Language = "en"
	require.NotEqual(t, DeriveKey(a), DeriveKey(e), "the language is part of the send")
	e2 := e
	e2.Language = "ja"
	require.NotEqual(t, DeriveKey(e), DeriveKey(e2))
	require.Regexp(t, `^bulk:[0-9a-f]{40}$`, DeriveKey(a))
}

func TestDetectFormat(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          Format
	}{
		{"x.csv", `{"to":1}`, FormatCSV},
		{"x.ndjson", "to,code", FormatJSONL},
		{"-", "  \n{\"to\":\"x\"}", FormatJSONL},
		{"-", "to,code,template\n", FormatCSV},
	} {
		r, err := NewReader(strings.NewReader(tc.content), tc.name, FormatAuto, "")
		if err != nil {
			require.Equal(t, FormatCSV, tc.want, "only CSV reads a header")
			continue
		}
		require.Equal(t, tc.want, r.Format(), tc.name)
	}
}

func TestLongJSONLineIsRejectedAndReadingGoesOn(t *testing.T) {
	long := `{"to":"` + strings.Repeat("9", MaxLineBytes) + `"}`
	ok := `{"to":"+8618700000001","code":"` + canary + `","template":"t"}`
	r, err := NewReader(strings.NewReader(long+"\n"+ok+"\n"), "-", FormatJSONL, "")
	require.NoError(t, err)
	_, rej, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, &Reject{Line: 1, Field: "row", Reason: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}, rej)
	row, rej, err := r.Next()
	require.NoError(t, err)
	require.Nil(t, rej)
	require.Equal(t, 2, row.Line)
	_, _, err = r.Next()
	require.ErrorIs(t, err, io.EOF)
}

// fakeSender accepts everything and records how many rows it saw.
type fakeSender struct {
	mu sync.Mutex
	n  int
}

func (f *fakeSender) SendItems(_ context.Context, items []producer.BatchItem, _ ...producer.Option) []producer.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n += len(items)
	res := make([]producer.Result, len(items))
	for i := range res {
		res[i].ID = fmt.Sprint(f.n + i)
	}
	return res
}

func rows(n int) string {
	var b strings.Builder
	b.WriteString("to,code,template\n")
	for i := range n {
		fmt.Fprintf(&b, "+86187%08d,%s,login\n", i, canary)
	}
	return b.String()
}

func TestRunPacesToRate(t *testing.T) {
	r, err := NewReader(strings.NewReader(rows(100)), "x.csv", FormatAuto, "")
	require.NoError(t, err)
	s := &fakeSender{}
	sum, err := Run(context.Background(), Config{Reader: r, Sender: s, Rate: 200})
	require.NoError(t, err)
	require.Equal(t, int64(100), sum.Accepted)
	require.Equal(t, 100, s.n)
	// A burst of 20 rows, then 80 at 200 rows/s.
	require.GreaterOrEqual(t, sum.Elapsed, 350*time.Millisecond)
}

// The pace is the asked rate exactly (TestRunPacesToRate's timing gives
// only a lower bound): the limiter allows Rate rows per second, with a
// burst and chunks of a tenth of a second's rows. Fails with the bulk
// paced at half the asked rate: checked.
func TestPaceIsTheAskedRate(t *testing.T) {
	for _, c := range []struct {
		rate        float64
		burst, size int
	}{{200, 20, 20}, {5, 1, 1}, {1e6, 100000, ChunkSize}} {
		b := (&run{cfg: Config{Rate: c.rate}}).newBatcher(nil)
		require.Equal(t, rate.Limit(c.rate), b.limiter.Limit(), "rate %g", c.rate)
		require.Equal(t, c.burst, b.limiter.Burst(), "rate %g", c.rate)
		require.Equal(t, c.size, b.size, "rate %g", c.rate)
	}
	require.Nil(t, (&run{}).newBatcher(nil).limiter, "rate 0: no limit")
}

func TestProgressLinesShowCountsNotRows(t *testing.T) {
	content := rows(3000)
	r, err := NewReader(strings.NewReader(content), "x.csv", FormatAuto, "")
	require.NoError(t, err)
	var progress bytes.Buffer
	sum, err := Run(context.Background(), Config{
		Reader: r, Sender: &fakeSender{}, Size: int64(len(content)), Rate: 10000,
		Progress: &progress, ProgressEvery: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	require.Equal(t, int64(3000), sum.Accepted)
	out := progress.String()
	require.Contains(t, out, "bulk: ")
	require.Contains(t, out, "rows/s ETA ")
	require.Regexp(t, `bulk: \d+% \d+ rows \(\d+ accepted, 0 duplicates, 0 rejected\)`, out)
	require.NotContains(t, out, canary)
	require.NotContains(t, out, "+86187")
}

// BenchmarkReader is parsing and validation alone, rows per op.
func BenchmarkReader(b *testing.B) {
	content := rows(10000)
	b.SetBytes(int64(len(content)) / 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i += 10000 {
		r, err := NewReader(strings.NewReader(content), "x.csv", FormatAuto, "")
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, rej, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil || rej != nil {
				b.Fatal(err, rej)
			}
		}
	}
}

// TestSummaryPlurals: "1 row", "1 duplicate", not "1 rows".
func TestSummaryPlurals(t *testing.T) {
	s := Summary{Rows: 1, Accepted: 0, Duplicates: 1, Elapsed: time.Second}.String()
	require.True(t, strings.HasPrefix(s, "1 row: 0 accepted, 1 duplicate (already queued), "), s)
	s = Summary{Rows: 2, Duplicates: 0, Elapsed: time.Second}.String()
	require.True(t, strings.HasPrefix(s, "2 rows: 0 accepted, 0 duplicates (already queued), "), s)
	require.Equal(t, "1 row", Count(1, "row"))
	require.Equal(t, "0 rows", Count(0, "row"))
}
