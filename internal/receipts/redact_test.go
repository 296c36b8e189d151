package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redact"
)

// codeEchoes are the forms in which a provider's error detail can echo a
// task's code (issue 16, row 9: only runs of 4+ digits were scrubbed, so
// alphanumeric and grouped codes reached the log, the receipt and status).
var codeEchoes = []struct{ code, echo string }{
	{"X7K9Q2", "X7K9Q2"},
	{"X7K9Q2", "x7k9q2"},
	{"X7K9Q2", "X7K-9Q2"},
	{"X7K9Q2", "x7k 9q2"},
	{"X7K9Q2", "X7K\u200b9Q2"},
	{"123456", "123-456"},
	{"123456", "12 34 56"},
	{"918273", "9 1 8 2 7 3"},
	{"AB12CD", "ab-12-cd"},
}

// requireNoCode fails if s holds code in any case, with or without spaces,
// dashes or escaped zero-width characters between its characters.
func requireNoCode(t *testing.T, s, code, where string) {
	t.Helper()
	flat := strings.ToLower(s)
	for _, sep := range []string{" ", "-", `\u200b`, "\u200b"} {
		flat = strings.ReplaceAll(flat, sep, "")
	}
	require.NotContains(t, flat, strings.ToLower(code), "%s: %q", where, s)
}

func (b bundle) linkCode(t *testing.T, taskID, mid, code string) {
	t.Helper()
	l := Link{TaskID: taskID, Queue: "critical", AcceptedAt: b.now.Now(), CodeFingerprint: redact.Fingerprint(code)}
	require.NoError(t, b.rdb.Set(context.Background(), LinkKey("critical", mid), l.Encode(), time.Hour).Err())
}

// requireScrubbed checks the stored receipt, everything Redis holds for it
// and the log for the code.
func (b bundle) requireScrubbed(t *testing.T, taskID, code string) *Receipt {
	t.Helper()
	r := b.load(t, "critical", taskID)
	require.NotNil(t, r)
	require.Equal(t, StatusDeliveredFailed, r.State)
	require.Contains(t, r.ErrorDetail, redact.Redacted)
	st, err := json.Marshal(r)
	require.NoError(t, err)
	requireNoCode(t, string(st), code, "receipt")
	h, err := b.rdb.HGetAll(context.Background(), ReceiptKey("critical", taskID)).Result()
	require.NoError(t, err)
	requireNoCode(t, fmt.Sprint(h), code, "receipt hash")
	require.Contains(t, b.logs.String(), `"task_id":"`+taskID+`"`, "the final receipt is logged")
	requireNoCode(t, b.logs.String(), code, "log")
	return r
}

func TestErrorDetailScrubbedOfTheTasksCode(t *testing.T) {
	b := setup(t, Credentials{})
	ts := b.now.Now().Unix()
	for i, c := range codeEchoes {
		id, mid := fmt.Sprintf("t%d", i), fmt.Sprintf("m%d", i)
		b.linkCode(t, id, mid, c.code)
		detail := fmt.Sprintf(`{"message":"Template echo: your code is %s. Handset unreachable"}`, c.echo)
		require.Equal(t, http.StatusOK, b.post(t, body(row(mid, "", "delivered_failed", ts, `"error_code":4001,"error_detail":`+detail)), nil))
		r := b.requireScrubbed(t, id, c.code)
		require.Equal(t, "Template echo: your code is [redacted]. Handset unreachable", r.ErrorDetail, c.echo)
	}
}

// A receipt that arrives before its link is held, then scrubbed with the
// link's fingerprint when it is attached.
func TestHeldErrorDetailScrubbedWhenAttached(t *testing.T) {
	b := setup(t, Credentials{})
	ts := b.now.Now().Unix()
	for i, c := range codeEchoes {
		mid := fmt.Sprintf("m%d", i)
		detail := fmt.Sprintf(`{"message":"code %s rejected"}`, c.echo)
		require.Equal(t, http.StatusOK, b.post(t, body(row(mid, "", "delivered_failed", ts, `"error_code":4001,"error_detail":`+detail)), nil))
		b.linkCode(t, fmt.Sprintf("t%d", i), mid, c.code)
	}
	n, err := b.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Equal(t, len(codeEchoes), n)
	for i, c := range codeEchoes {
		r := b.requireScrubbed(t, fmt.Sprintf("t%d", i), c.code)
		require.Equal(t, "code [redacted] rejected", r.ErrorDetail)
	}
}

// Without a fingerprint (a link of an older build) grouped digits are
// still scrubbed by the generic rule.
func TestErrorDetailGroupedDigitsScrubbedWithoutFingerprint(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	detail := `{"message":"code 123-456 or 12 34 56 for +65 9876 5432"}`
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", "delivered_failed", b.now.Now().Unix(), `"error_code":4001,"error_detail":`+detail)), nil))
	require.Equal(t, "code ###-### or ## ## ## for +## #### ####", b.load(t, "critical", "t1").ErrorDetail)
}

// A huge detail is held bounded, and cut without leaving a piece of a code
// at the cut.
func TestHeldDetailBounded(t *testing.T) {
	long := strings.Repeat("x", maxHeldDetail-4) + ". X7K9Q2 more text"
	got := heldText(long)
	require.Equal(t, strings.Repeat("x", maxHeldDetail-4)+".…", got)
	require.Equal(t, "a\uFFFDb", heldText("a\xffb"))
	require.LessOrEqual(t, len(heldText(strings.Repeat("word ", 1<<16))), maxHeldDetail+len("…"))
}
