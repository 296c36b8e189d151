package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/producer"
)

// The dev terminal's watch prints an accepted send, then its receipt's
// verdict each time it changes: accepted → pending (EngageLab's "sent") →
// delivered (final), each once, and nothing more once the receipt is
// final. The test drives the watch's looks one by one and posts each
// callback between two looks, so the non-final state is always seen (the
// dev fake's own receipts usually arrive before dev's first look, and
// TestDevShowsEveryOutcome then sees only the final line).
func TestWatchReceiptPendingThenFinal(t *testing.T) {
	b := setup(t)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET"}) // posts no callbacks
	srv := httptest.NewServer(fake)
	defer srv.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL
	_, stop := b.startWorker(t, "--concurrency", "1", "--http-addr", "")
	defer stop()

	const to = "+8613800000021"
	sent := b.run(t, context.Background(), "send", "--to", to, "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, sent.code, sent.stderr)
	id := strings.TrimSpace(sent.stdout)
	p, err := producer.New(producer.Config{RedisURL: b.db.URL()})
	require.NoError(t, err)
	defer p.Close()
	st, err := waitFinal(context.Background(), p, id, 15*time.Second)
	require.NoError(t, err)
	require.Equal(t, producer.StateCompleted, st.State)
	msgID := st.MessageID
	require.NotEmpty(t, msgID)
	stop()

	recv, err := receipts.NewReceiver(receipts.Config{Redis: b.db.Client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	post := func(status string) { // as EngageLab bills it: on "sent"
		t.Helper()
		billing := ""
		if status == "sent" {
			billing = `,"billing":{"cost":0.005,"currency":"USD"}`
		}
		body := fmt.Sprintf(`{"total":1,"rows":[{"message_id":%q,"to":%q,"server":"otp","channel":"sms","itime":%d,"status":{"message_status":%q,"status_data":{"msg_time":%d,"message_id":%q,"current_send_channel":"sms"},"error_code":0%s}}]}`,
			msgID, to, time.Now().Unix(), status, time.Now().Unix(), msgID, billing)
		rec := httptest.NewRecorder()
		recv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, receipts.Path, strings.NewReader(body)))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}

	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
	defer ins.Close()
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	var out logsink.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchOutcomesAt(ctx, ins, p, &out, nil, tick)
	}()
	// look returns the lines printed once a whole look has run after the
	// call: the first tick is taken when the look before it is over, the
	// second when the look the first one started is over.
	look := func() []string {
		tick <- time.Time{}
		tick <- time.Time{}
		return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	}
	line := func(verdict string) *regexp.Regexp {
		return regexp.MustCompile(`^  task ` + regexp.QuoteMeta(id) + ` → ` + verdict + `, message_id ` + msgID + `  \(otpq status ` + regexp.QuoteMeta(id) + `\)$`)
	}

	lines := look()
	require.Len(t, lines, 1, out.String())
	require.Regexp(t, line(`accepted · sms`), lines[0], "no receipt yet: the worker's word")
	require.Equal(t, lines, look(), "nothing new while nothing changes")

	post("sent")
	lines = look()
	require.Len(t, lines, 2, out.String())
	require.Regexp(t, line(`pending · sms · 0\.005 USD`), lines[1], "a non-final receipt: pending")
	require.Equal(t, lines, look(), "the same pending verdict is printed once")

	post("delivered")
	lines = look()
	require.Len(t, lines, 3, out.String())
	require.Regexp(t, line(`delivered · sms · \d+(\.\d)? s after acceptance · 0\.005 USD`), lines[2], "the final receipt")
	post("delivered") // a duplicate callback changes nothing shown
	require.Equal(t, lines, look(), "a final receipt ends the watch of its task")

	cancel()
	<-done
	require.NotContains(t, out.String(), canaryCode)
}
