package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// countingHandler counts the work a slog.Handler is asked to do: records
// handled and attribute sets bound in advance (slog.Logger.With).
type countingHandler struct {
	slog.Handler
	handled, bound *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.handled.Add(1)
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.bound.Add(1)
	return countingHandler{Handler: h.Handler.WithAttrs(as), handled: h.handled, bound: h.bound}
}

// TestDeliveryLogFormattedOnlyWhenWritten: a delivery logs its outcome at
// info; under a warn logger nothing of it is formatted (no attribute set
// bound, no record handled), and under an info logger the line carries
// every field, the destination masked.
func TestDeliveryLogFormattedOnlyWhenWritten(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelWarn, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			var handled, bound atomic.Int64
			logs := &logsink.Buffer{}
			h := countingHandler{Handler: slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}), handled: &handled, bound: &bound}
			b := setup(t, func(c *worker.Config) { c.Logger = slog.New(h) })
			before := handled.Load() // "worker started" and the like
			id := b.send(t, "+8618701235678")
			b.waitFinal(t, producer.QueueCritical, id)
			require.Zero(t, bound.Load(), "no attributes bound in advance")
			if level == slog.LevelWarn {
				require.Equal(t, before, handled.Load(), "a delivery writes no line at warn")
				return
			}
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(l, `"msg":"accepted"`) {
					require.NoError(t, json.Unmarshal([]byte(l), &line))
				}
			}
			require.NotNil(t, line, "accepted line in:\n%s", logs.String())
			require.Equal(t, id, line["task_id"])
			require.EqualValues(t, 1, line["attempt"])
			require.Equal(t, "+861*******678", line["to"])
			require.Equal(t, "login", line["template"])
			require.Contains(t, line, "latency_ms")
			require.Contains(t, line, "message_id")
		})
	}
}
