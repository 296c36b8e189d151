package receipts

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Refused callbacks sent in a loop (issue 16 row 13) are each counted in
// the metric but logged at most once per kind and interval: anyone can
// send one, and a line each would let them flood the log.
func TestRefusalsLoggedAtBoundedRate(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	for i := 0; i < 300; i++ {
		require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{HeaderCallbackID: "garbage"}))
	}
	good := NewCallbackID(testSecret, testUser, "n1", b.now.Now())
	require.Equal(t, http.StatusOK, b.post(t, "{}", map[string]string{HeaderCallbackID: good.String()}))
	for i := 0; i < 300; i++ {
		require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{HeaderCallbackID: good.String()}))
	}
	require.Equal(t, 300.0, b.requests("bad_signature"))
	require.Equal(t, 300.0, b.requests("replay"))
	logs := b.logs.String()
	require.Equal(t, 1, strings.Count(logs, "callback refused: bad_signature"), logs)
	require.Equal(t, 1, strings.Count(logs, "callback refused: replay"), logs)
}

// Receipts dropped at the held cap (issue 16 row 4) are logged at most once
// per interval too: a sender of receipts for unknown message_ids caused a
// WARN line per request once the cap was reached. The metric counts each
// dropped row.
func TestHeldDropsLoggedAtBoundedRate(t *testing.T) {
	b := setup(t, Credentials{})
	b.recv.cfg.MaxHeld = 5
	ts := b.now.Now().Unix()
	for i := range 100 {
		bd := body(row(fmt.Sprintf("junk-%d-a", i), "", "sent", ts, ""), row(fmt.Sprintf("junk-%d-b", i), "", "sent", ts, ""))
		require.Equal(t, http.StatusOK, b.post(t, bd, nil))
	}
	require.Equal(t, 195.0, counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "held_count"}))
	logs := b.logs.String()
	require.Equal(t, 1, strings.Count(logs, "receipts without a linked task dropped"), logs)
}
