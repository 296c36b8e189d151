package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redistest"
)

// Issue 16, rows 6 and 7: one bad row (itime out of range or in
// milliseconds, a cost that overflows, fields of the wrong type) is skipped
// and counted; the rest of the batch is stored and the answer is 200, so
// EngageLab does not retry the good rows forever; what is stored stays
// showable (status --json marshals it).
func TestBadRowsSkippedRestStored(t *testing.T) {
	b := setup(t, Credentials{})
	now := b.now.Now()
	ts := now.Unix()
	for _, id := range []string{"good", "future", "ms", "neg", "cost", "cost2", "types", "early"} {
		b.link(t, "critical", "t-"+id, "m-"+id, "", now)
	}
	cost := func(c string) string { return `"billing":{"cost":` + c + `,"currency":"USD"}` }
	require.Equal(t, http.StatusOK, b.post(t, body(
		row("m-good", "", "delivered", ts, cost("0.005")),
		row("m-future", "", "delivered", 300000000000, ""),
		row("m-ms", "", "delivered", now.UnixMilli(), ""),
		row("m-neg", "", "delivered", -5, ""),
		row("m-cost", "", "delivered", ts, cost("1.7e308")),
		row("m-cost2", "", "sent", ts, cost("-1")),
		`{"message_id":"m-types","itime":"yesterday","status":{"message_status":"delivered"}}`,
		row("m-early", "", "delivered", 86400, ""),
		// Unlinked rows with the same faults: not held either.
		row("m-unlinked", "", "delivered", 300000000000, ""),
		row("m-unlinked2", "", "delivered", ts, cost("1.7e308")),
	), nil))
	good := b.load(t, "critical", "t-good")
	require.Equal(t, StatusDelivered, good.State)
	require.InDelta(t, 0.005, good.Cost, 1e-12)
	for _, id := range []string{"future", "ms", "neg", "cost", "cost2", "types", "early"} {
		require.Nil(t, b.load(t, "critical", "t-"+id), id)
	}
	require.Zero(t, b.rdb.Exists(context.Background(), heldKey).Val(), "bad unlinked rows are not held")
	for reason, n := range map[string]float64{"bad_time": 5, "bad_cost": 3, "bad_type": 1} {
		require.Equal(t, n, counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": reason}), reason)
	}
	require.Equal(t, 9.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "invalid"}))
	require.Equal(t, 1.0, b.requests("ok"))
	_, err := json.Marshal(good)
	require.NoError(t, err)
}

// Row 7: costs summed over many rows stay finite, and Redis never refuses
// the sum (HINCRBYFLOAT to infinity is an error: a 503 for ever).
func TestCostSumStaysFinite(t *testing.T) {
	b := setup(t, Credentials{})
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	ts := b.now.Now().Unix()
	for i, s := range []string{"plan", "target_valid", "sent", "delivered"} {
		require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", s, ts+int64(i), `"billing":{"cost":1.7e308,"currency":"USD"}`)), nil), s)
	}
	for i, s := range []string{"sent", "delivered"} {
		require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", s, ts+10+int64(i), `"billing":{"cost":100,"currency":"USD"}`)), nil), s)
	}
	r := b.load(t, "critical", "t1")
	require.Equal(t, StatusDelivered, r.State)
	require.InDelta(t, 200.0, r.Cost, 1e-9)
	_, err := json.Marshal(r)
	require.NoError(t, err)
}

// Rows 6 and 7, data stored before the fix: a time past year 9999 and an
// infinite cost read as absent, so otpq status --json and the UI still show
// the receipt.
func TestLoadShowsStoredBadValues(t *testing.T) {
	b := setup(t, Credentials{})
	ctx := context.Background()
	huge := int64(300000000000) * 1000
	require.NoError(t, b.rdb.HSet(ctx, ReceiptKey("critical", "t1"), "state", "delivered", "raw", "delivered", "tier", tierDone,
		"rank", tierDone*10, "at", huge, "delivered_at", huge, "updated_at", b.now.Now().UnixMilli(), "cost", "inf", "currency", "USD").Err())
	stage, _ := json.Marshal(stageJSON{Status: "delivered", At: huge})
	require.NoError(t, b.rdb.RPush(ctx, historyKey("critical", "t1"), stage).Err())
	r := b.load(t, "critical", "t1")
	require.NotNil(t, r)
	require.Equal(t, StatusDelivered, r.State)
	require.Zero(t, r.Cost)
	require.True(t, r.StateAt.IsZero())
	require.Len(t, r.History, 1)
	_, err := json.Marshal(r)
	require.NoError(t, err, "status --json must not fail on a stored receipt")
}

// Row 8: the receipt keys of tasks "X" and "X:h" never meet (the history
// of one was the receipt hash of the other: WRONGTYPE, 503 for ever).
func TestTaskIDsXAndXhDoNotCollide(t *testing.T) {
	b := setup(t, Credentials{})
	now := b.now.Now()
	ts := now.Unix()
	b.link(t, "critical", "login:alice", "m1", "", now)
	b.link(t, "critical", "login:alice:h", "m2", "", now)
	for _, bd := range []string{
		body(row("m1", "", "sent", ts, "")), body(row("m2", "", "sent", ts, "")),
		body(row("m2", "", "delivered", ts+1, "")), body(row("m1", "", "delivered_failed", ts+1, "")),
	} {
		require.Equal(t, http.StatusOK, b.post(t, bd, nil))
	}
	a, h := b.load(t, "critical", "login:alice"), b.load(t, "critical", "login:alice:h")
	require.Equal(t, StatusDeliveredFailed, a.State)
	require.Equal(t, "m1", a.MessageID)
	require.Len(t, a.History, 2)
	require.Equal(t, StatusDelivered, h.State)
	require.Equal(t, "m2", h.MessageID)
	require.Len(t, h.History, 2)
	require.Zero(t, b.requests("error"))
}

// A history kept under the name of earlier builds (receipt key + ":h") is
// still shown, and moved on the next callback so that a duplicate stage
// recorded before the upgrade is still recognised.
func TestLegacyHistoryKept(t *testing.T) {
	b := setup(t, Credentials{})
	ctx := context.Background()
	now := b.now.Now()
	ts := now.Unix()
	b.link(t, "critical", "t1", "m1", "", now)
	require.NoError(t, b.rdb.HSet(ctx, ReceiptKey("critical", "t1"), "state", "sent", "raw", "sent", "tier", tierProgress,
		"rank", tierProgress*10+3, "at", ts*1000, "cost", "0.005", "currency", "USD").Err())
	stage, _ := json.Marshal(stageJSON{Status: "sent", Channel: "sms", At: ts * 1000})
	require.NoError(t, b.rdb.RPush(ctx, legacyHistoryKey("critical", "t1"), stage).Err())
	require.Len(t, b.load(t, "critical", "t1").History, 1)

	require.Equal(t, http.StatusOK, b.post(t, body(row("m1", "", "sent", ts, `"billing":{"cost":0.005,"currency":"USD"}`)), nil))
	r := b.load(t, "critical", "t1")
	require.Len(t, r.History, 1, "the stage recorded before the upgrade is a duplicate")
	require.InDelta(t, 0.005, r.Cost, 1e-12, "and bills nothing")
	require.Equal(t, 1.0, counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "duplicate"}))
	require.Zero(t, b.rdb.Exists(ctx, legacyHistoryKey("critical", "t1")).Val())
}

// Row 12: the nonces live in Redis only, so a captured callback replayed
// after they are lost (a restart without persistence) inside the ±5 minute
// window is accepted, but it cannot change a stored receipt: a final state
// stays, the cost is not billed twice, no stream entry is added.
func TestReplayCannotRegressReceipt(t *testing.T) {
	b := setup(t, Credentials{Username: testUser, Secret: testSecret})
	ctx := context.Background()
	b.link(t, "critical", "t1", "m1", "", b.now.Now())
	ts := b.now.Now().Unix()
	sent := body(row("m1", "", "sent", ts, `"billing":{"cost":0.005,"currency":"USD"}`))
	failed := body(row("m1", "", "delivered_failed", ts+1, ""))
	delivered := body(row("m1", "", "delivered", ts+2, ""))
	captured := map[string]map[string]string{}
	for name, bd := range map[string]string{"sent": sent, "failed": failed, "delivered": delivered} {
		captured[name] = b.signed()
		require.Equal(t, http.StatusOK, b.post(t, bd, captured[name]))
	}
	before := b.load(t, "critical", "t1")
	require.Equal(t, StatusDelivered, before.State)
	entries, err := ReadStream(ctx, b.rdb, "", 100, 0)
	require.NoError(t, err)

	require.Equal(t, http.StatusUnauthorized, b.post(t, sent, captured["sent"]), "nonce remembered: refused")
	keys, err := b.rdb.Keys(ctx, "otpq:callback:nonce:*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	require.NoError(t, b.rdb.Del(ctx, keys...).Err()) // Redis lost its nonces
	for _, name := range []string{"sent", "failed", "delivered"} {
		bd := map[string]string{"sent": sent, "failed": failed, "delivered": delivered}[name]
		require.Equal(t, http.StatusOK, b.post(t, bd, captured[name]), name)
	}
	after := b.load(t, "critical", "t1")
	after.UpdatedAt = before.UpdatedAt
	require.Equal(t, before, after, "replays change nothing")
	again, err := ReadStream(ctx, b.rdb, "", 100, 0)
	require.NoError(t, err)
	require.Len(t, again, len(entries))
}

// setupOwn is setup on a redis-server of the test's own (memory is
// measured) with cfg's limits.
func setupOwn(t *testing.T, cfg Config) bundle {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true}) // as redisconn builds it
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	cfg.Redis, cfg.Registerer, cfg.Now = rdb, reg, clk.Now
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.AnswerWithin == 0 {
		// These tests post bodies of ~1 MiB under -race on a shared
		// machine and assert bounds, not answer times: a fresh-clone CI
		// with a load average of 12 took over 2.5 s for one and got 503.
		cfg.AnswerWithin = time.Minute
	}
	recv, err := NewReceiver(cfg)
	require.NoError(t, err)
	hs := httptest.NewServer(recv)
	t.Cleanup(hs.Close)
	return bundle{rdb: rdb, recv: recv, reg: reg, srv: hs, now: clk}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	require.NoError(t, err)
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no used_memory in INFO")
	return 0
}

// junkBody is a body of n receipts for unknown message_ids, near 1 MiB at
// n = 2400 (each row carries a long error detail).
func junkBody(prefix string, n int, ts int64) string {
	rows := make([]string, n)
	detail := `"error_code":4001,"error_detail":{"message":"` + strings.Repeat("x", 150) + `"}`
	for i := range rows {
		rows[i] = row(fmt.Sprintf("%s-%d", prefix, i), "", "delivered_failed", ts, detail)
	}
	return body(rows...)
}

func heldSize(t *testing.T, rdb *redis.Client) (rows, bytes, mids int64) {
	t.Helper()
	ctx := context.Background()
	v, err := rdb.HMGet(ctx, heldSizeKey, "rows", "bytes").Result()
	require.NoError(t, err)
	n := func(x any) int64 { s, _ := x.(string); i, _ := strconv.ParseInt(s, 10, 64); return i }
	return n(v[0]), n(v[1]), rdb.HLen(ctx, heldKey).Val()
}

// Row 4: 10 signed-looking requests of ~1 MiB, every row an unknown
// message_id, used to leave 25k keys and +30 MB in Redis. Held receipts
// now stop at MaxHeld (10,000) and MaxHeldBytes (8 MiB); the rest is
// dropped and counted, every request still answered 200.
func TestHeldReceiptsFloodBounded(t *testing.T) {
	b := setupOwn(t, Config{})
	before := usedMemory(t, b.rdb)
	ts := b.now.Now().Unix()
	for i := range 10 {
		bd := junkBody(fmt.Sprintf("junk%d", i), 2400, ts)
		require.Greater(t, len(bd), 900_000)
		require.Equal(t, http.StatusOK, b.post(t, bd, nil), "request %d", i)
	}
	rows, bytes, mids := heldSize(t, b.rdb)
	require.LessOrEqual(t, rows, int64(DefaultMaxHeld))
	require.LessOrEqual(t, bytes, int64(DefaultMaxHeldBytes))
	require.Equal(t, rows, mids, "one row per junk message_id")
	require.Equal(t, mids, b.rdb.ZCard(context.Background(), heldDueKey).Val())
	require.Equal(t, 3, int(b.rdb.DBSize(context.Background()).Val()), "three keys, not one per message_id")
	grew := usedMemory(t, b.rdb) - before
	t.Logf("held %d receipts, %d bytes counted; Redis used_memory grew %.1f MiB", rows, bytes, float64(grew)/(1<<20))
	require.Less(t, grew, int64(16<<20), "Redis memory bounded")
	dropped := counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "held_count"}) +
		counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "held_bytes"})
	require.Equal(t, float64(24000-rows), dropped)
	require.Equal(t, float64(24000-rows), counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "dropped"}))

	// The matcher reports what it sees, and expiry empties everything.
	_, err := b.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Equal(t, float64(rows), gauge(b.reg, "otpq_callback_held_receipts"))
	b.now.Add(DefaultPendingTTL + time.Second)
	for range 40 {
		_, err := b.recv.Reconcile(context.Background())
		require.NoError(t, err)
	}
	require.Zero(t, b.rdb.DBSize(context.Background()).Val(), "all expired, counters gone too")
	require.Equal(t, float64(rows), counter(b.reg, "otpq_callback_rows_total", map[string]string{"result": "expired"}))
}

// The byte cap and the cap per message_id, with small limits.
func TestHeldByteAndPerMessageCaps(t *testing.T) {
	b := setupOwn(t, Config{MaxHeldBytes: 20 << 10})
	ts := b.now.Now().Unix()
	require.Equal(t, http.StatusOK, b.post(t, junkBody("j", 200, ts), nil))
	rows, bytes, _ := heldSize(t, b.rdb)
	require.LessOrEqual(t, bytes, int64(20<<10))
	require.Greater(t, rows, int64(0))
	require.Equal(t, float64(200-rows), counter(b.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "held_bytes"}))

	c := setupOwn(t, Config{})
	var rs []string
	for i := range maxHeldPerMessage + 5 {
		rs = append(rs, row("one", "", "sent", ts-int64(i), ""))
	}
	require.Equal(t, http.StatusOK, c.post(t, body(rs...), nil))
	rows, _, mids := heldSize(t, c.rdb)
	require.Equal(t, int64(maxHeldPerMessage), rows)
	require.Equal(t, int64(1), mids)
	require.Equal(t, 5.0, counter(c.reg, "otpq_callback_rows_dropped_total", map[string]string{"reason": "held_per_message"}))
	// All 20 are attached once the link appears.
	c.link(t, "critical", "t1", "one", "", c.now.Now())
	n, err := c.recv.Reconcile(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, c.load(t, "critical", "t1").History, maxHeldPerMessage)
	rows, bytes, _ = heldSize(t, c.rdb)
	require.Zero(t, rows+bytes)
}

func gauge(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// Row 5: junk held receipts that sort before a real one (earlier
// deadlines) used to starve it: the matcher looked only at the 200 earliest
// deadlines, so the real receipt waited for the junk to expire (10
// minutes). It must be attached within 5 s, with 250 junk rows and with
// nearly the cap of them.
func TestMatcherNotStarvedByJunk(t *testing.T) {
	for _, junk := range []int{250, DefaultMaxHeld - 10} {
		t.Run(strconv.Itoa(junk), func(t *testing.T) {
			b := setupOwn(t, Config{})
			ts := b.now.Now().Unix()
			for sent := 0; sent < junk; sent += 2400 {
				require.Equal(t, http.StatusOK, b.post(t, junkBody(fmt.Sprintf("junk%d", sent), min(2400, junk-sent), ts), nil))
			}
			b.now.Add(time.Second) // the real receipt's deadline sorts after every junk one
			require.Equal(t, http.StatusOK, b.post(t, body(row("real", "", "delivered", ts, "")), nil))
			rows, _, _ := heldSize(t, b.rdb)
			require.Equal(t, int64(junk+1), rows)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { b.recv.Run(ctx); close(done) }()
			time.Sleep(3 * DefaultPollInterval) // the matcher has been running
			b.link(t, "critical", "t-real", "real", "", b.now.Now())
			linked := time.Now()
			require.Eventually(t, func() bool {
				r := b.load(t, "critical", "t-real")
				return r != nil && r.State == StatusDelivered
			}, 5*time.Second, 20*time.Millisecond, "attached within 5 s of its link")
			t.Logf("%d junk held: real receipt attached %s after its link appeared", junk, time.Since(linked).Round(time.Millisecond))
			cancel()
			<-done
			rows, _, _ = heldSize(t, b.rdb)
			require.Equal(t, int64(junk), rows, "the junk is still held, nothing else")
		})
	}
}

// Receipts held by builds before the caps (one list per message_id) are
// drained into the bounded store and attached: a rolling upgrade loses
// none.
func TestLegacyHeldReceiptsDrained(t *testing.T) {
	b := setup(t, Credentials{})
	ctx := context.Background()
	e, ok := EventOf(mustRow(t, row("old", "", "delivered", b.now.Now().Unix(), "")), b.now.Now())
	require.True(t, ok)
	raw, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, b.rdb.RPush(ctx, legacyPendingRowPrefix+"old", raw).Err())
	require.NoError(t, b.rdb.ZAdd(ctx, legacyPendingSetKey, redis.Z{Score: float64(b.now.Now().Add(time.Minute).UnixMilli()), Member: "old"}).Err())
	_, err = b.recv.Reconcile(ctx)
	require.NoError(t, err)
	require.Zero(t, b.rdb.Exists(ctx, legacyPendingSetKey, legacyPendingRowPrefix+"old").Val())
	rows, _, _ := heldSize(t, b.rdb)
	require.Equal(t, int64(1), rows)
	b.link(t, "bulk", "t1", "old", "", b.now.Now())
	n, err := b.recv.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, StatusDelivered, b.load(t, "bulk", "t1").State)
}

func mustRow(t *testing.T, s string) Row {
	t.Helper()
	rows, err := ParseBody([]byte(body(s)))
	require.NoError(t, err)
	return rows[0]
}

// A request whose Redis work outlasts AnswerWithin is answered 503 (so
// EngageLab retries it) instead of hanging past EngageLab's 3 s.
func TestAnswerWithinBoundsARequest(t *testing.T) {
	b := setupOwn(t, Config{AnswerWithin: 200 * time.Millisecond})
	// Redis answers no client for 1.5 s.
	require.NoError(t, b.rdb.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err())
	start := time.Now()
	code := b.post(t, body(row("m1", "+8618701235678", "delivered", b.now.Now().Unix(), "")), nil)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Less(t, time.Since(start), 1400*time.Millisecond, "answered while Redis was still paused")
}
