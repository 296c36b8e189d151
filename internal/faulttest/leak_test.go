//go:build fault

package faulttest

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
)

// redisValues returns every value stored in Redis, whatever its type, for
// a search for secrets.
func (b *bundle) redisValues(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	c := b.redis.c
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	out := append([]string{}, keys...)
	for _, k := range keys {
		typ, err := c.Type(ctx, k).Result()
		require.NoError(t, err)
		switch typ {
		case "string":
			v, _ := c.Get(ctx, k).Result()
			out = append(out, v)
		case "hash":
			m, _ := c.HGetAll(ctx, k).Result()
			for f, v := range m {
				out = append(out, f, v)
			}
		case "list":
			v, _ := c.LRange(ctx, k, 0, -1).Result()
			out = append(out, v...)
		case "set":
			v, _ := c.SMembers(ctx, k).Result()
			out = append(out, v...)
		case "zset":
			v, _ := c.ZRange(ctx, k, 0, -1).Result()
			out = append(out, v...)
		}
	}
	return out
}

// TestCanaryAbsent: distinctive codes and a distinctive provider secret go
// through every outcome (delivered, retried, timed out, rejected, retries
// exhausted, expired, corrupt payload) with debug logging on; neither may
// appear in the worker's or the fake's output, in any error or result
// stored in Redis, or (the secret) anywhere in Redis.
func TestCanaryAbsent(t *testing.T) {
	rep := newReport(t, 11, "canary codes and secret through every outcome, `--log-level debug`",
		"0 occurrences in worker/fake output, `/metrics`, stored errors and results; with `OTPQ_PAYLOAD_KEY`, no readable code (queued or finished), secret or key in Redis")
	const secret = "canary-SECRET-9f3Qz7Lw"
	// A fixed, distinctive payload key (AES-256) so that its leaking can be searched for too.
	rawKey := []byte("canary-payload-key-0123456789abc")
	require.Len(t, rawKey, 32)
	payloadKey := base64.StdEncoding.EncodeToString(rawKey)
	ring := "k1:" + payloadKey
	b := setup(t, setupOpts{key: "canary-key-4Hn2", secret: secret,
		producerConfig: func(c *producer.Config) { c.PayloadKeys = ring }})
	codeOf := map[string]string{}
	var tasks []sent
	var rules []fakeRule
	add := func(n int, rule *fakeRule, opts ...producer.Option) {
		for range n {
			to := b.nextTo()
			code := fmt.Sprintf("CNRY%06dQ", 314159+len(tasks))
			if rule != nil {
				r := *rule
				r.To = to
				rules = append(rules, r)
			}
			s, err := b.sendTo(context.Background(), to, code, nil, opts...)
			require.NoError(t, err)
			codeOf[s.id] = code
			tasks = append(tasks, s)
		}
	}
	add(10, nil)                                         // delivered
	add(5, &fakeRule{Code: 5013})                        // rejected: blacklisted
	add(5, &fakeRule{Status: 500, Code: 1000, Times: 1}) // retried, then delivered
	add(3, &fakeRule{Hang: true, Times: 1})              // timed out, then delivered
	add(3, &fakeRule{Status: 502})                       // proxy HTML page until retries run out
	add(3, &fakeRule{Status: 400, Code: 3002})           // invalid request
	add(3, nil, producer.ExpiresIn(time.Second))         // expire in the queue
	b.fake.setRules(t, rules...)

	// A corrupt payload that holds a canary code: the decode error must not echo it.
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: b.redis.addr()})
	defer client.Close()
	const badCode = "CNRYBADPAYLOAD77"
	info, err := client.Enqueue(asynq.NewTask(task.TypeSend, []byte(`{"v":1,"to":"+15550009999","code":"`+badCode+`","template":"oops","expires_at":"2999-01-01T00:00:00Z"}`)),
		asynq.Queue(task.QueueCritical))
	require.NoError(t, err)
	bad := sent{id: info.ID, to: "+15550009999", queue: task.QueueCritical}
	codeOf[bad.id] = badCode

	// Codes are sealed at rest: none is readable in Redis while queued.
	queuedValues := b.redisValues(t)
	time.Sleep(1200 * time.Millisecond) // the short-lived codes expire before any worker runs
	w := b.startWorkerEnv([]string{"OTPQ_PAYLOAD_KEY=" + ring}, "--log-level", "debug", "--concurrency", "10", "--http-timeout", "500ms",
		"--max-retry", "2", "--retry-min-delay", "200ms", "--retry-max-delay", "400ms")
	all := append(append([]sent{}, tasks...), bad)
	f := b.settle(all, 60*time.Second)

	type place struct{ name, text string }
	require.True(t, env.hasOps(), "this build's worker has no --http-addr ops server: /metrics cannot be checked")
	metrics := httpGet(t, w.opsURL+"/metrics")
	require.Contains(t, metrics, "# TYPE", "/metrics served no metrics")
	places := []place{{"worker output", w.log()}, {"fake output", b.fake.proc.log()}, {"/metrics", metrics},
		{"/readyz", httpGet(t, w.opsURL+"/readyz")}}
	for _, s := range all {
		info := f.info[s.id]
		require.NotNil(t, info, "task %s", s.id)
		places = append(places, place{"stored error of " + s.id, info.LastErr}, place{"stored result of " + s.id, string(info.Result)})
	}
	var leaks []string
	for _, p := range places {
		for _, code := range codeOf {
			if strings.Contains(p.text, code) {
				leaks = append(leaks, "code in "+p.name)
			}
		}
		for _, sec := range []string{secret, payloadKey} {
			if strings.Contains(p.text, sec) {
				leaks = append(leaks, "secret or payload key in "+p.name)
			}
		}
	}
	// The search can see a plaintext code: the corrupt task, written raw, shows up.
	require.True(t, slices.ContainsFunc(queuedValues, func(v string) bool { return strings.Contains(v, badCode) }),
		"the Redis search cannot see task payloads; it would miss a readable code")
	values := append(b.redisValues(t), queuedValues...)
	for _, v := range values {
		if strings.Contains(v, secret) || strings.Contains(v, payloadKey) || strings.Contains(v, string(rawKey)) {
			leaks = append(leaks, "secret or payload key in Redis")
		}
		for id, code := range codeOf {
			// The corrupt task was written raw by this test, not by otpq.
			if id != bad.id && strings.Contains(v, code) {
				leaks = append(leaks, "readable code in Redis")
			}
		}
	}
	logLinesN := strings.Count(w.log(), "\n")
	rep.figure("%d tasks (%d delivered, %d dead-lettered: %s); searched %d worker log lines, the fake's output, %d lines of /metrics, %d stored errors/results, %d Redis values (queued and finished, codes sealed): %d leaks",
		len(all), f.Delivered, f.DeadLettered, reasonList(f.Reasons), logLinesN, strings.Count(metrics, "\n"), 2*len(all), len(values), len(leaks))
	t.Log(f)
	require.Empty(t, leaks)
	require.Zero(t, f.Lost, "%s", f)
	// The scenario must have exercised what it claims.
	for _, reason := range []string{"engagelab 5013", "engagelab 3002", "retries exhausted after 3 attempts", "expired", "bad payload"} {
		require.Positive(t, f.Reasons[reason], "no task dead-lettered as %q: %s", reason, f)
	}
	require.Contains(t, w.log(), "outcome unknown", "no request timed out")
}
