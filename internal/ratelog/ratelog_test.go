package ratelog_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/ratelog"
)

// lines decodes the JSON log lines written so far.
func lines(t *testing.T, buf *logsink.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// setup returns a Limiter writing JSON lines to a buffer.
func setup(every time.Duration) (*ratelog.Limiter, *logsink.Buffer, time.Duration) {
	buf := &logsink.Buffer{}
	return ratelog.New(slog.New(slog.NewJSONHandler(buf, nil)), every), buf, every
}

// A burst of 10,000 refusals from many goroutines writes one line at once
// and, when the interval is over, one line with the count of the others;
// another kind of line is not held back by the first.
func TestBurstWritesOneLinePerIntervalWithCount(t *testing.T) {
	// Long enough an interval for the burst to fit in it on a busy machine.
	l, buf, every := setup(2 * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				l.Warn("login refused", slog.String("client", "198.51.100.7"))
			}
		}()
	}
	wg.Wait()
	l.Warn("callback refused")
	got := lines(t, buf)
	require.Len(t, got, 2, "a burst wrote more than one line per kind: %v", got)
	require.Equal(t, "login refused", got[0]["msg"])
	require.Equal(t, "198.51.100.7", got[0]["client"])
	require.NotContains(t, got[0], "suppressed")
	require.Equal(t, "callback refused", got[1]["msg"])

	require.Eventually(t, func() bool { return len(lines(t, buf)) == 3 }, 10*every, every/10,
		"the count of the suppressed lines was never written")
	sum := lines(t, buf)[2]
	require.Equal(t, "login refused", sum["msg"])
	require.Equal(t, "WARN", sum["level"])
	require.EqualValues(t, 9999, sum["suppressed"])

	// Still at most one line per interval: the summary started a new one.
	l.Warn("login refused")
	require.Len(t, lines(t, buf), 3)
	require.Eventually(t, func() bool { return len(lines(t, buf)) == 4 }, 10*every, every/10)
	require.EqualValues(t, 1, lines(t, buf)[3]["suppressed"])
}

// A line after a quiet interval is written at once; no count when nothing
// was suppressed, and no summary line follows.
func TestQuietIntervalWritesAtOnce(t *testing.T) {
	l, buf, every := setup(300 * time.Millisecond)
	l.Warn("login refused")
	time.Sleep(every + every/2)
	l.Warn("login refused")
	got := lines(t, buf)
	require.Len(t, got, 2)
	require.NotContains(t, got[1], "suppressed")
	time.Sleep(2 * every)
	require.Len(t, lines(t, buf), 2, "a summary line was written with nothing suppressed")
}
