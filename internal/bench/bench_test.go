package bench

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/producer"
)

func stubServer(t *testing.T, latency time.Duration) (*provider, *engagelab.Client) {
	t.Helper()
	srv := httptest.NewServer(&stub{latency: latency})
	t.Cleanup(srv.Close)
	c, err := engagelab.New(engagelab.Config{BaseURL: srv.URL, DevKey: "k", DevSecret: "s"})
	require.NoError(t, err)
	return &provider{url: srv.URL}, c
}

// The stub answers what the worker's client accepts as a delivery, with a
// fresh message_id each time, counts the answers on the stats path the
// benchmark reads, and resets the count.
func TestStubProviderAnswersAndCounts(t *testing.T) {
	pr, c := stubServer(t, 0)
	ctx := context.Background()
	for i, want := range []string{"1", "2"} {
		resp, err := c.Send(ctx, engagelab.Request{To: dest(i), Code: "123456", Template: engagelab.Template{ID: "t"}})
		require.NoError(t, err)
		require.Equal(t, want, resp.MessageID)
		require.Equal(t, "sms", resp.SendChannel)
	}
	n, err := pr.delivered()
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.NoError(t, pr.reset())
	n, err = pr.delivered()
	require.NoError(t, err)
	require.Zero(t, n)

	resp, err := http.Get(pr.url + "/v1/codes")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "only POST is an API call")
}

func TestStubProviderLatency(t *testing.T) {
	_, c := stubServer(t, 40*time.Millisecond)
	t0 := time.Now()
	_, err := c.Send(context.Background(), engagelab.Request{To: dest(1), Code: "123456", Template: engagelab.Template{ID: "t"}})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(t0), 40*time.Millisecond)
}

// The report's method holds on a real redis-server: commandstats counts
// the commands a script runs besides the EVALSHA/EVAL itself, a pipeline
// is one read (one round trip), and the benchmark's own INFO is left out.
func TestRedisWorkCountsScriptCallsAndRoundTrips(t *testing.T) {
	s := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	ctx := context.Background()
	e := &env{rdb: rdb}
	conn := rdb.Conn() // the measured work on one connection, opened before the window
	defer conn.Close()
	require.NoError(t, conn.Ping(ctx).Err())
	w0, err := e.redisWork(ctx)
	require.NoError(t, err)

	require.NoError(t, conn.Eval(ctx, `redis.call("SET", KEYS[1], "1"); return redis.call("INCR", KEYS[1])`, []string{"k"}).Err())
	_, err = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for range 10 {
			p.Incr(ctx, "n")
		}
		return nil
	})
	require.NoError(t, err)

	w1, err := e.redisWork(ctx)
	require.NoError(t, err)
	d := w1.since(w0)
	require.Equal(t, map[string]int64{"eval": 1, "set": 1, "incr": 11}, d.calls)
	require.Equal(t, int64(13), d.commands())
	require.Equal(t, int64(2), d.reads, "one script call and one pipeline: two round trips")
	cmds, trips := d.per(2)
	require.InDelta(t, 6.5, cmds, 1e-9)
	require.InDelta(t, 1.0, trips, 1e-9)
	require.Equal(t, "INCR 5.50, EVAL 0.50, SET 0.50", d.top(5, 2))
	require.Equal(t, []string{"eval", "incr", "set"}, slices.Sorted(maps.Keys(d.usec)), "time per command, INFO left out")
	require.GreaterOrEqual(t, d.usec["eval"], d.usec["set"], "a script's time includes its inner commands'")
	require.Regexp(t, `^[A-Z]+ [0-9]+\.[0-9]{2} µs, [A-Z]+ [0-9]+\.[0-9]{2} µs$`, d.topTime(2, 2))
}

// The baseline worker delivers every task through the provider, with its
// concurrency shared by two asynq servers.
func TestBaselineWorkerDeliversWithTwoServers(t *testing.T) {
	db := redistest.New(t)
	pr, _ := stubServer(t, 0)
	ctx := context.Background()
	p, err := producer.New(producer.Config{RedisURL: db.URL(), DestinationLimit: -1})
	require.NoError(t, err)
	defer p.Close()
	const n = 20
	for i := range n {
		_, err := p.Send(ctx, benchRequest(i), producer.Queue(producer.QueueBulk))
		require.NoError(t, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- RunBaselineWorker(wctx, BaselineConfig{RedisURL: db.URL(), BaseURL: pr.url, Concurrency: 4, Servers: 2})
	}()
	require.Eventually(t, func() bool { d, _ := pr.delivered(); return d == n }, 15*time.Second, 50*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestMainUsageErrors(t *testing.T) {
	ctx := context.Background()
	env := func(string) string { return "" }
	for _, args := range [][]string{
		{"nope"},
		{"--scale", "0"},
		{"--otpq", "/nonexistent/otpq"},
		{"--bogus"},
		{"stub-provider", "extra"},
		{"baseline-worker"}, // ENGAGELAB_BASE_URL unset
		{"--otpq", "/bin/sh", "--only", "idle,shards"},
		{"--otpq", "/bin/sh", "--shards", "1"},
		{"--otpq", "/bin/sh", "--shards", "129"},
		{"--otpq", "/bin/sh", "--only", "tracing,nope"},
		{"--otpq", "/bin/sh", "--otpq-notrace", "/nonexistent/otpq-notrace"},
	} {
		var stderr bytes.Buffer
		require.Equal(t, exitUsage, Main(ctx, args, &bytes.Buffer{}, &stderr, env), "%q: %s", args, stderr.String())
		require.Contains(t, stderr.String(), "otpq-bench")
	}
}

// bound turns a bulk run's measurements into the missed target's
// explanation: cores and CPU per row per process, Redis's work per row,
// and the rate redis-server's CPU per row allows.
func TestBulkBound(t *testing.T) {
	work := redisWork{calls: map[string]int64{"evalsha": 8, "set": 1000, "hset": 1000}, usec: map[string]int64{"evalsha": 16000, "set": 2800, "hset": 1500}, reads: 8}
	got := bulkRun{rows: 1000, wall: 2 * time.Second, cpu: time.Second, redisCPU: 1700 * time.Millisecond, machine: 3 * time.Second, work: work}.bound()
	for _, want := range []string{
		"redis-server 0.85 cores (1.7 ms CPU per row)", "otpq bulk 0.50 cores (1.0 ms per row)", "machine 1.50 of",
		"Redis per row: 2.0 commands in 0.008 round trips (HSET 1.00, SET 1.00, EVALSHA 0.01)",
		"time inside Redis per row: EVALSHA 16.00 µs, SET 2.80 µs, HSET 1.50 µs",
		"one Redis thread allows at most 588/s",
	} {
		require.Contains(t, got, want)
	}
	require.Empty(t, bulkRun{wall: time.Second, work: work}.bound(), "no rows, nothing to say")
}
