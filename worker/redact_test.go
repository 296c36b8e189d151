package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/producer"
)

// requireNoCode fails if s holds code in any case, with or without spaces
// or dashes between its characters.
func requireNoCode(t *testing.T, s, code, where string) {
	t.Helper()
	flat := strings.NewReplacer(" ", "", "-", "").Replace(strings.ToLower(s))
	require.NotContains(t, flat, strings.ToLower(code), "%s: %q", where, s)
}

// A provider message that echoes the code in another case or grouped by
// spaces or dashes (issue 16, row 9) is scrubbed before it reaches the
// dead-letter reason (producer.Status, `otpq status --json`, the web UI)
// or the log.
func TestProviderEchoOfTheCodeRedactedInEveryForm(t *testing.T) {
	cases := []struct{ to, code, echo string }{
		{"+15550000101", "X7K9Q2", "X7K9Q2"},
		{"+15550000102", "X7K9Q2", "x7k9q2"},
		{"+15550000103", "X7K9Q2", "X7K-9Q2"},
		{"+15550000104", "X7K9Q2", "x7 k9 q2"},
		{"+15550000105", "123456", "123-456"},
		{"+15550000106", "123456", "12 34 56"},
		{"+15550000107", "AB12CD", "ab-12-cd"},
	}
	echo := map[string]string{}
	for _, c := range cases {
		echo[c.to] = c.echo
	}
	b, _, _ := setupScripted(t, func(w http.ResponseWriter, to string) {
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"code":3003,"message":"invalid content: your code is %s."}`, echo[to])
	})
	for _, c := range cases {
		id, err := b.producer.Send(context.Background(), producer.Request{To: c.to, Code: c.code, TemplateID: "login"})
		require.NoError(t, err)
		info := b.waitFinal(t, producer.QueueCritical, id)
		require.Equal(t, asynq.TaskStateArchived, info.State)
		st, err := b.producer.Status(context.Background(), id)
		require.NoError(t, err)
		require.Contains(t, st.LastError, "your code is [redacted].", c.echo)
		requireNoCode(t, st.LastError, c.code, "status")
	}
	logs := b.logs.String()
	require.Equal(t, len(cases), strings.Count(logs, "your code is [redacted]."), logs)
	for _, c := range cases {
		requireNoCode(t, logs, c.code, "log")
	}
}

// The receipt link carries a fingerprint of the code, not the code: the
// callback side scrubs the code's echoes with it.
func TestReceiptLinkCarriesCodeFingerprint(t *testing.T) {
	b, _, _ := setupScripted(t, func(w http.ResponseWriter, to string) {
		io.WriteString(w, `{"message_id":"m-42","send_channel":"sms"}`)
	})
	id, err := b.producer.Send(context.Background(), producer.Request{To: "+15550000201", Code: "X7K9Q2", TemplateID: "login"})
	require.NoError(t, err)
	b.waitFinal(t, producer.QueueCritical, id)
	raw, err := b.db.Client.Get(context.Background(), receipts.LinkKey(producer.QueueCritical, "m-42")).Result()
	require.NoError(t, err)
	requireNoCode(t, raw, "X7K9Q2", "link")
	l, err := receipts.DecodeLink(raw)
	require.NoError(t, err)
	require.NotEmpty(t, l.CodeFingerprint)
	require.Equal(t, "code [redacted] expired", redact.ByFingerprint("code x7k-9q2 expired", l.CodeFingerprint))
}
