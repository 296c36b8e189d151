package receipts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redistest"
)

// The worked example of ../shared/engagelab-otp-callbacks.md, computed with
// Python and openssl dgst.
func TestSignFixedVector(t *testing.T) {
	require.Equal(t, "404794bf3409ad56077e11dac58f0f1d19e5a3b898b669360fb888a5efe4e729",
		Sign("my_secret", "1701234567", "abc123", "my_user"))
	id, err := ParseCallbackID("timestamp=1701234567;nonce=abc123;username=my_user;signature=404794bf3409ad56077e11dac58f0f1d19e5a3b898b669360fb888a5efe4e729")
	require.NoError(t, err)
	c := Credentials{Username: "my_user", Secret: "my_secret"}
	_, err = c.verify(id.String(), "")
	require.NoError(t, err)
}

func TestCanonicalSpellings(t *testing.T) {
	for raw, want := range map[string]string{
		"sent_fail": StatusSentFailed, "sent_failed": StatusSentFailed,
		"delivered_fail": StatusDeliveredFailed, "delivered_failed": StatusDeliveredFailed,
		"delivered": StatusDelivered, "target_invalid": StatusTargetInvalid,
	} {
		got, known := Canonical(raw)
		require.True(t, known, raw)
		require.Equal(t, want, got, raw)
		require.True(t, IsFinal(raw), raw)
	}
	got, known := Canonical("delivered_timeout")
	require.False(t, known)
	require.Equal(t, "delivered_timeout", got)
	require.False(t, IsFinal("sent"))
}

func TestCleanText(t *testing.T) {
	require.Equal(t, `Invalid phone number +##########\nx\x00`, cleanText("Invalid phone number +6598765432\nx\x00", 200))
	require.Equal(t, "code 12 is s***@example.com", cleanText("code 12 is someone@example.com", 200))
	require.Equal(t, "engagelab ####", cleanText("engagelab 4001", 200))
	require.Equal(t, `a\u202eb\u200bc`, cleanText("a\u202eb\u200bc", 200), "bidi and zero-width characters are escaped")
	long := cleanText(strings.Repeat("é", 300), 200)
	require.LessOrEqual(t, len(long), 200+len("…"))
	require.True(t, strings.HasSuffix(long, "…"))
}

type bundle struct {
	rdb  *redis.Client
	recv *Receiver
	reg  *prometheus.Registry
	srv  *httptest.Server
	now  *clock
	logs *bytes.Buffer
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const (
	testUser   = "my_user"
	testSecret = "my_secret"
)

func setup(t *testing.T, creds Credentials) bundle {
	t.Helper()
	db := redistest.New(t)
	reg := prometheus.NewRegistry()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	var logs bytes.Buffer
	var mu sync.Mutex
	recv, err := NewReceiver(Config{
		Redis: db.Client, Credentials: creds, Registerer: reg, Now: clk.Now,
		Logger: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil)),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	return bundle{rdb: db.Client, recv: recv, reg: reg, srv: srv, now: clk, logs: &logs}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// post sends body with a fresh signed header (when signed) and returns the status.
func (b bundle) post(t *testing.T, body string, hdr map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+Path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

var nonceSeq int
var nonceMu sync.Mutex

func (b bundle) signed() map[string]string {
	nonceMu.Lock()
	nonceSeq++
	n := fmt.Sprintf("n%d-%d", time.Now().UnixNano(), nonceSeq)
	nonceMu.Unlock()
	return map[string]string{HeaderCallbackID: NewCallbackID(testSecret, testUser, n, b.now.Now()).String()}
}

func (b bundle) link(t *testing.T, queue, taskID, mid, to string, at time.Time) {
	t.Helper()
	l := Link{TaskID: taskID, Queue: queue, To: to, AcceptedAt: at}
	require.NoError(t, b.rdb.Set(context.Background(), LinkKey(queue, mid), l.Encode(), time.Hour).Err())
}

func (b bundle) requests(result string) float64 {
	return counter(b.reg, "otpq_callback_requests_total", map[string]string{"result": result})
}

func counter(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func row(mid, to, status string, itime int64, extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Sprintf(`{"message_id":%q,"to":%q,"server":"sms","channel":"sms","itime":%d,"status":{"message_status":%q,"status_data":{"msg_time":%d,"message_id":%q,"current_send_channel":"sms"}%s}}`,
		mid, to, itime, status, itime, mid, extra)
}

func body(rows ...string) string {
	return fmt.Sprintf(`{"total":%d,"rows":[%s]}`, len(rows), strings.Join(rows, ","))
}

func (b bundle) load(t *testing.T, queue, id string) *Receipt {
	t.Helper()
	r, err := Load(context.Background(), b.rdb, queue, id)
	require.NoError(t, err)
	return r
}

func TestURLCheckAnswers200(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	for _, body := range []string{"", "{}", `{"total":0,"rows":[]}`, "  \n"} {
		require.Equal(t, http.StatusOK, b.post(t, body, b.signed()), "%q", body)
	}
	require.Equal(t, 4.0, b.requests("check"))
}

func TestBadSignatureRefusedAndCounted(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	good := NewCallbackID(testSecret, testUser, "n1", b.now.Now())
	wrongSecret := NewCallbackID("other", testUser, "n2", b.now.Now())
	wrongUser := NewCallbackID(testSecret, "someone", "n3", b.now.Now())
	tampered := good
	tampered.Nonce = "n4" // signature no longer covers it
	for name, h := range map[string]string{
		"none": "", "garbage": "hello", "wrong secret": wrongSecret.String(),
		"wrong user": wrongUser.String(), "tampered": tampered.String(),
		"no signature": "timestamp=1;nonce=2;username=my_user",
	} {
		hdr := map[string]string{}
		if h != "" {
			hdr[HeaderCallbackID] = h
		}
		require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", hdr), name)
	}
	require.Equal(t, 6.0, b.requests("bad_signature"))
	require.Equal(t, http.StatusOK, b.post(t, "{}", map[string]string{HeaderCallbackID: good.String()}))
}

func TestAuthorizationHeaderChecked(t *testing.T) {
	b := setup(t, Credentials{Authorization: "Bearer s3cret"})
	require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", nil))
	require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{"Authorization": "Bearer wrong"}))
	require.Equal(t, http.StatusOK, b.post(t, "{}", map[string]string{"Authorization": "Bearer s3cret"}))
	require.Equal(t, 2.0, b.requests("unauthorized"))
}

func TestReplayRefused(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	old := NewCallbackID(testSecret, testUser, "old", b.now.Now().Add(-6*time.Minute))
	future := NewCallbackID(testSecret, testUser, "future", b.now.Now().Add(6*time.Minute))
	require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{HeaderCallbackID: old.String()}))
	require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{HeaderCallbackID: future.String()}))
	edge := NewCallbackID(testSecret, testUser, "edge", b.now.Now().Add(-4*time.Minute))
	require.Equal(t, http.StatusOK, b.post(t, "{}", map[string]string{HeaderCallbackID: edge.String()}))
	// Same nonce again, even re-signed with a fresh timestamp: refused,
	// and by a second receiver on the same Redis too (all workers agree).
	again := NewCallbackID(testSecret, testUser, "edge", b.now.Now())
	require.Equal(t, http.StatusUnauthorized, b.post(t, "{}", map[string]string{HeaderCallbackID: again.String()}))
	other, err := NewReceiver(Config{Redis: b.rdb, Credentials: Credentials{Username: testUser, Secret: testSecret}, Now: b.now.Now})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader("{}"))
	req.Header.Set(HeaderCallbackID, again.String())
	other.ServeHTTP(rec, req)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Equal(t, 3.0, b.requests("replay"))
}

func TestMalformedAndOversizedBodies(t *testing.T) {
	b := setup(t, Credentials{})
	require.Equal(t, http.StatusBadRequest, b.post(t, `{"total":1,"rows":[`, nil))
	require.Equal(t, http.StatusBadRequest, b.post(t, `[1,2]`, nil))
	require.Equal(t, http.StatusRequestEntityTooLarge, b.post(t, `{"x":"`+strings.Repeat("a", DefaultMaxBody)+`"}`, nil))
	require.Equal(t, 3.0, b.requests("malformed"))
}

func TestNewReceiverChecksCredentials(t *testing.T) {
	_, err := NewReceiver(Config{Redis: redis.NewClient(&redis.Options{}), Credentials: Credentials{Username: "u"}})
	require.ErrorIs(t, err, ErrConfig)
}

func TestMultiRowBodyBothSpellingsAndNotifications(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	at := b.now.Now().Add(-time.Second)
	b.link(t, "critical", "t1", "m1", redact.Destination("+8618701235678"), at)
	b.link(t, "bulk", "t2", "m2", redact.Destination("+8618701235679"), at)
	b.link(t, "critical", "t3", "m3", "", at)
	ts := b.now.Now().Unix()
	require.Equal(t, http.StatusOK, b.post(t, body(
		row("m1", "+8618701235678", "sent_fail", ts, `"error_code":4001,"error_detail":{"message":"Invalid phone number +8618701235678"}`),
		row("m2", "+8618701235679", "delivered_failed", ts, ""),
		row("m3", "", "delivered_fail", ts, ""),
		`{"message_id":"m1","notification":{"event":"insufficient_balance"}}`,
		`"not an object"`,
	), b.signed()))
	r1 := b.load(t, "critical", "t1")
	require.Equal(t, StatusSentFailed, r1.State)
	require.Equal(t, "sent_fail", r1.RawStatus)
	require.True(t, r1.Final)
	require.Equal(t, 4001, r1.ErrorCode)
	require.Equal(t, "Invalid phone number +#############", r1.ErrorDetail, "the provider's echo of the number is scrubbed")
	require.Equal(t, redact.Destination("+8618701235678"), r1.To)
	r2 := b.load(t, "bulk", "t2")
	require.Equal(t, StatusDeliveredFailed, r2.State)
	require.Equal(t, "delivered_failed", r2.RawStatus)
	r3 := b.load(t, "critical", "t3")
	require.Equal(t, StatusDeliveredFailed, r3.State)
	require.Equal(t, Stage{Status: "delivered_failed", RawStatus: "delivered_fail", Channel: r3.History[0].Channel, At: r3.History[0].At, ErrorCode: r3.History[0].ErrorCode}, r3.History[0], "one spelling, the raw value beside it")
	require.Equal(t, 1.0, b.requests("ok"))
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "ignored"}))
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "bad_type"}), "the row that is not an object")
	require.Equal(t, 2.0, counter(b.reg, "otpq_receipts_total", map[string]string{"status": "delivered_failed", "channel": "sms"}))

	// A body of notifications only is acknowledged and counted.
	require.Equal(t, http.StatusOK, b.post(t, `{"total":1,"rows":[{"notification":{"event":"insufficient_balance"}}]}`, b.signed()))
	require.Equal(t, 1.0, b.requests("ignored"))
}

func TestUnknownStatusKeptVerbatim(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	ts := b.now.Now().Unix()
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", "delivered_timeout", ts, "")), nil))
	r := b.load(t, "critical", "t1")
	require.Equal(t, "delivered_timeout", r.State, "no state yet: the unknown value is shown")
	require.False(t, r.Final)
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", "sent", ts+1, "")), nil))
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", "brand_new_status", ts+2, "")), nil))
	r = b.load(t, "critical", "t1")
	require.Equal(t, StatusSent, r.State, "an unknown value never replaces a known one")
	require.Len(t, r.History, 3)
	require.Equal(t, "brand_new_status", r.History[2].Status)
	require.Equal(t, 2.0, counter(b.reg, "otpq_receipts_total", map[string]string{"status": "other"}))
}

func TestDuplicatesAndOutOfOrder(t *testing.T) {
	b := setup(t, Credentials{})
	acc := b.now.Now().Add(-3 * time.Second)
	b.link(t, "critical", "t1", "m1", "", acc)
	ts := b.now.Now().Unix()
	post := func(r string) { require.Equal(t, http.StatusOK, b.post(t, body(r), nil)) }
	post(row("m1", "", "delivered", ts, ""))
	post(row("m1", "", "delivered", ts, ""))                                       // duplicate
	post(row("m1", "", "sent", ts-1, `"billing":{"cost":0.005,"currency":"USD"}`)) // late, earlier stage
	post(row("m1", "", "sent", ts-1, `"billing":{"cost":0.005,"currency":"USD"}`)) // and its duplicate
	post(row("m1", "", "plan", ts-2, ""))
	post(row("m1", "", "delivered_failed", ts-1, "")) // a failure never replaces delivered
	r := b.load(t, "critical", "t1")
	require.Equal(t, StatusDelivered, r.State)
	require.True(t, r.Final)
	require.Equal(t, time.Unix(ts, 0).UTC(), r.DeliveredAt)
	require.Equal(t, acc.UnixMilli(), r.AcceptedAt.UnixMilli())
	require.InDelta(t, 0.005, r.Cost, 1e-9, "a duplicate bills nothing")
	require.Equal(t, "USD", r.Currency)
	var got []string
	for _, s := range r.History {
		got = append(got, s.Status)
	}
	require.Equal(t, []string{"plan", "sent", "delivered_failed", "delivered"}, got, "history sorted by the provider's time, duplicates once")
	require.Equal(t, 2.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "duplicate"}))
	require.Equal(t, 3.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "stale"}))
	// One log line for the final receipt, masked and without the code.
	require.Equal(t, 1, strings.Count(b.logs.String(), `"msg":"delivery receipt"`))
	// Histogram: one delivered observation.
	require.Equal(t, 1, testutil.CollectAndCount(b.reg, "otpq_receipt_delivered_seconds"))
}

func TestWhatsAppFallbackToSMS(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	ts := b.now.Now().Unix()
	ch := func(c string) string { return fmt.Sprintf(`"current_send_channel":%q`, c) }
	rowCh := func(status, c string, at int64, extra string) string {
		r := row("m1", "", status, at, extra)
		return strings.Replace(r, `"current_send_channel":"sms"`, ch(c), 1)
	}
	post := func(r string) { require.Equal(t, http.StatusOK, b.post(t, body(r), nil)) }
	post(rowCh("sent", "whatsapp", ts, ""))
	post(rowCh("delivered_failed", "whatsapp", ts+1, `"error_code":5001,"error_detail":{"message":"not on WhatsApp"}`))
	r := b.load(t, "critical", "t1")
	require.Equal(t, StatusDeliveredFailed, r.State)
	require.Equal(t, "whatsapp", r.Channel)
	require.Equal(t, 5001, r.ErrorCode)
	post(rowCh("sent", "sms", ts+2, "")) // in progress on SMS: the failure stands until SMS ends
	post(rowCh("delivered", "sms", ts+3, ""))
	r = b.load(t, "critical", "t1")
	require.Equal(t, StatusDelivered, r.State)
	require.Equal(t, "sms", r.Channel)
	require.Zero(t, r.ErrorCode, "the error belongs to the replaced whatsapp state")
	require.Len(t, r.History, 4)
	require.Equal(t, 5001, r.History[1].ErrorCode)
}

func TestCallbackBeforeLinkIsAttachedLater(t *testing.T) {
	b := setup(t, Credentials{})
	ts := b.now.Now().Unix()
	// The provider is faster than the worker's completion write.
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "+8618701235678", "delivered", ts, "")), nil))
	require.Equal(t, 1.0, b.requests("unknown_message"))
	n, err := b.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Zero(t, n, "no link yet: still held")
	require.Nil(t, b.load(t, "critical", "t1"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { b.recv.Run(ctx); close(done) }()
	b.link(t, "critical", "t1", "m1", redact.Destination("+8618701235678"), b.now.Now())
	require.Eventually(t, func() bool {
		r := b.load(t, "critical", "t1")
		return r != nil && r.State == StatusDelivered
	}, 5*time.Second, 20*time.Millisecond, "the background matcher attaches the held receipt")
	cancel()
	<-done
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "attached"}))
	for _, k := range heldKeys {
		require.Zero(t, b.rdb.Exists(context.Background(), k).Val(), "nothing left held: %s", k)
	}
}

func TestHeldReceiptExpires(t *testing.T) {
	b := setup(t, Credentials{})
	require.Equal(t, http.StatusOK, b.post(t, body(row("ghost", "", "delivered", b.now.Now().Unix(), "")), nil))
	b.now.Add(DefaultPendingTTL + time.Second)
	_, err := b.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "expired"}))
	require.False(t, b.rdb.HExists(context.Background(), heldKey, "ghost").Val())
}

func TestDestinationMismatchDropped(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", redact.Destination("+8618701235678"), b.now.Now())
	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "+8613900000000", "delivered", b.now.Now().Unix(), "")), nil))
	require.Nil(t, b.load(t, "critical", "t1"))
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "mismatch"}))
}

func TestConcurrentCallbacksKeepFinalState(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	ts := b.now.Now().Unix()
	statuses := []string{"plan", "target_valid", "sent", "delivered", "sent", "plan"}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := statuses[i%len(statuses)]
			b.post(t, body(row("m1", "", s, ts+int64(i%3), "")), nil)
		}()
	}
	wg.Wait()
	r := b.load(t, "critical", "t1")
	require.Equal(t, StatusDelivered, r.State)
}

func TestStreamEntries(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", redact.Destination("+8618701235678"), b.now.Now())
	ts := b.now.Now().Unix()
	for _, r := range []string{
		row("m1", "", "sent", ts, ""), row("m1", "", "sent", ts, ""), // duplicate: no entry
		row("m1", "", "delivered", ts+1, ""), row("m1", "", "plan", ts-1, ""), // stale: no entry
	} {
		require.Equal(t, http.StatusOK, b.post(t, body(r), nil))
	}
	ctx := context.Background()
	es, err := ReadStream(ctx, b.rdb, "", 10, 0)
	require.NoError(t, err)
	require.Len(t, es, 2)
	require.Equal(t, "sent", es[0].Status)
	require.False(t, es[0].Final)
	last := es[1]
	require.Equal(t, Entry{ID: last.ID, TaskID: "t1", Queue: "critical", MessageID: "m1", Status: "delivered",
		RawStatus: "delivered", Final: true, Channel: "sms", At: time.Unix(ts+1, 0).UTC(), To: redact.Destination("+8618701235678")}, last)
	more, err := ReadStream(ctx, b.rdb, last.ID, 10, 50*time.Millisecond)
	require.NoError(t, err)
	require.Empty(t, more)
	raw, err := json.Marshal(last)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "8618701235678")
}

// Two stages of one rank within one second (sent on WhatsApp, then sent on
// SMS) keep the order they arrived in, even when the first came before the
// task's receipt link was stored and was attached later by the matcher.
func TestSameSecondStagesKeepArrivalOrder(t *testing.T) {
	b := setup(t, Credentials{})
	ts := b.now.Now().Unix()
	rowCh := func(status, c string) string {
		return strings.Replace(row("m1", "", status, ts, ""), `"current_send_channel":"sms"`, fmt.Sprintf(`"current_send_channel":%q`, c), 1)
	}
	require.Equal(t, http.StatusOK, b.post(t, body(rowCh("sent", "whatsapp")), nil))
	require.Equal(t, 1.0, b.requests("unknown_message"), "no link yet: held")
	b.now.Add(300 * time.Millisecond)
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	require.Equal(t, http.StatusOK, b.post(t, body(rowCh("sent", "sms")), nil))
	n, err := b.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n, "the held row is attached after the later one")
	// A duplicate of the held row is still recognised as one.
	require.Equal(t, http.StatusOK, b.post(t, body(rowCh("sent", "whatsapp")), nil))
	r := b.load(t, "critical", "t1")
	var got []string
	for _, s := range r.History {
		got = append(got, s.Status+"/"+s.Channel)
	}
	require.Equal(t, []string{"sent/whatsapp", "sent/sms"}, got)
}
