//go:build fault

package faulttest

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisserver"
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
		case "stream":
			msgs, _ := c.XRange(ctx, k, "-", "+").Result()
			for _, m := range msgs {
				for f, v := range m.Values {
					out = append(out, f, fmt.Sprint(v))
				}
			}
		}
	}
	return out
}

// codeKeys returns every otpq code key in Redis with its value.
func (b *bundle) codeKeys(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := b.redis.c.Keys(ctx, "otpq:{*}:code:*").Result()
	require.NoError(t, err)
	out := map[string]string{}
	for _, k := range keys {
		if v, err := b.redis.c.Get(ctx, k).Result(); err == nil {
			out[k] = v
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
		"0 occurrences in worker/fake output, `/metrics`, stored errors and results; with `OTPQ_PAYLOAD_KEY`, no readable code (queued or finished), secret or key in Redis; duplicates 0")
	const secret = "canary-SECRET-9f3Qz7Lw"
	// A fixed, distinctive payload key (AES-256) so that its leaking can be searched for too.
	rawKey := []byte("canary-payload-key-0123456789abc")
	require.Len(t, rawKey, 32)
	payloadKey := base64.StdEncoding.EncodeToString(rawKey)
	ringText := "k1:" + payloadKey
	ring, err := producer.ParseKeys(ringText)
	require.NoError(t, err)
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

	// Codes are sealed at rest: none is readable in Redis while queued. The
	// scan covers the code keys, which hold the sealed codes.
	queuedValues := b.redisValues(t)
	queuedCodes := b.codeKeys(t)
	require.Len(t, queuedCodes, len(tasks), "one code key per task sent through the producer")
	for k, v := range queuedCodes {
		require.True(t, strings.HasPrefix(v, task.SealedCodeValue("k1:")), "code key %s is not sealed", k)
		require.Contains(t, queuedValues, v, "the Redis scan misses the code keys")
	}
	time.Sleep(1200 * time.Millisecond) // the short-lived codes expire before any worker runs
	w := b.startWorkerEnv([]string{"OTPQ_PAYLOAD_KEY=" + ringText}, "--log-level", "debug", "--concurrency", "10", "--http-timeout", "500ms",
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
	// The fake's hung request (the timed-out one) never delivers, so no
	// code reaches the provider twice.
	require.Zero(t, f.Duplicates, "%s", f)
	// The scenario must have exercised what it claims.
	for _, reason := range []string{"engagelab 5013", "engagelab 3002", "retries exhausted after 3 attempts", "expired", "bad payload"} {
		require.Positive(t, f.Reasons[reason], "no task dead-lettered as %q: %s", reason, f)
	}
	require.Contains(t, w.log(), "outcome unknown", "no request timed out")
	for _, s := range tasks {
		if f.info[s.id].State == asynq.TaskStateCompleted {
			require.NotContains(t, b.codeKeys(t), asynqstore.CodeKey(s.queue, s.id), "a delivered task keeps its code key")
		}
	}
}

// TestCanaryCodeKeysWithoutPayloadKey: without OTPQ_PAYLOAD_KEY the code is
// in plaintext in Redis, but only in the task's code key (never in asynq's
// message, a result or an error), only until it is delivered (the delivery
// deletes it) or expires (a dead letter keeps it for a re-run until then).
func TestCanaryCodeKeysWithoutPayloadKey(t *testing.T) {
	rep := newReport(t, 11, "canary codes without `OTPQ_PAYLOAD_KEY`: delivered, rejected, expiring",
		"duplicates 0; plaintext codes only in code keys; 0 code keys left for delivered tasks; 0 codes anywhere in Redis once the dead letters' codes expired")
	b := setup(t, setupOpts{})
	codeOf := map[string]string{}
	var tasks, rejected []sent
	var rules []fakeRule
	const life = 4 * time.Second
	for i := range 12 {
		to := b.nextTo()
		code := fmt.Sprintf("PLNC%06dZ", 271828+i)
		if i%3 == 0 {
			rules = append(rules, fakeRule{To: to, Code: 5013})
		}
		s, err := b.sendTo(context.Background(), to, code, nil, producer.ExpiresIn(life))
		require.NoError(t, err)
		codeOf[s.id] = code
		tasks = append(tasks, s)
		if i%3 == 0 {
			rejected = append(rejected, s)
		}
	}
	sentAt := time.Now()
	b.fake.setRules(t, rules...)
	inCodeKeys := func(values map[string]string, code string) bool {
		for _, v := range values {
			if strings.Contains(v, code) {
				return true
			}
		}
		return false
	}
	queued, codes := b.redisValues(t), b.codeKeys(t)
	for id, code := range codeOf {
		require.True(t, inCodeKeys(codes, code), "task %s: its plaintext code is not in its code key", id)
		n := 0
		for _, v := range queued {
			if strings.Contains(v, code) {
				n++
			}
		}
		require.Equal(t, 1, n, "task %s: the code is stored somewhere besides its code key (asynq's message?)", id)
	}
	w := b.startWorker("--concurrency", "10")
	f := b.settle(tasks, 30*time.Second)
	require.Zero(t, f.Lost, "%s", f)
	require.Zero(t, f.Duplicates, "%s", f)
	require.Equal(t, len(tasks)-len(rejected), f.Delivered, "%s", f)
	left := b.codeKeys(t)
	for _, s := range tasks {
		_, has := left[asynqstore.CodeKey(s.queue, s.id)]
		dead := slices.Contains(rejected, s)
		if dead && time.Since(sentAt) < life-500*time.Millisecond {
			require.True(t, has, "dead letter %s lost its code key before expiry: a re-run could not deliver it", s.id)
		}
		if !dead {
			require.False(t, has, "delivered task %s keeps its code key", s.id)
		}
	}
	time.Sleep(time.Until(sentAt.Add(life + 200*time.Millisecond)))
	var leaks []string
	for _, v := range b.redisValues(t) {
		for id, code := range codeOf {
			if strings.Contains(v, code) {
				leaks = append(leaks, "code of "+id+" in Redis after expiry")
			}
		}
	}
	for _, code := range codeOf {
		if strings.Contains(w.log(), code) {
			leaks = append(leaks, "code in worker output")
		}
	}
	rep.figure("%d tasks (%d delivered, %d dead-lettered), no payload key: each code in exactly 1 Redis value (its code key) while queued; %d code keys left for delivered tasks; %d leaks after expiry",
		len(tasks), f.Delivered, f.DeadLettered, 0, len(leaks))
	require.Empty(t, leaks)
}

// TestCanaryReceipts: the fake provider posts signed delivery callbacks
// (delivered, delivered_fail, a WhatsApp→SMS fallback, duplicates out of
// order) to a real worker's --callback-addr. No code, full destination or
// callback secret may appear in the stored receipts, the receipt stream or
// the held receipts in Redis, and no code, destination or secret in the
// worker's output or /metrics.
func TestCanaryReceipts(t *testing.T) {
	rep := newReport(t, 14, "delivery receipts: signed callbacks (delivered, failed, fallback, duplicates out of order) to `--callback-addr`, `--log-level debug`",
		"every receipt final; duplicates 0; 0 codes, full destinations or callback secrets in stored receipts, the receipt stream, worker output or `/metrics`")
	const cbUser, cbSecret = "canary-cb-user", "canary-CB-SECRET-5tR8"
	cbPort, err := redisserver.FreePort()
	require.NoError(t, err)
	cbAddr := "127.0.0.1:" + strconv.Itoa(cbPort)
	tos := []string{"+15559900001", "+15559900002", "+15559900003", "+15559900004", "+15559900005", "+15559900006"}
	b := setup(t, setupOpts{
		fakeEnv: []string{"OTPQ_CALLBACK_USER=" + cbUser, "OTPQ_CALLBACK_SECRET=" + cbSecret},
		fakeArgs: []string{"--callback-url", "http://" + cbAddr + "/callbacks/engagelab", "--callback-delay", "100ms",
			"--callback", tos[2] + "=fail:4001", "--callback", tos[3] + "=fallback",
			"--callback", tos[4] + "=sent@0,delivered@100,dup,reverse"},
	})
	w := b.startWorkerEnv([]string{"OTPQ_CALLBACK_USER=" + cbUser, "OTPQ_CALLBACK_SECRET=" + cbSecret},
		"--log-level", "debug", "--callback-addr", cbAddr)
	codeOf := map[string]string{}
	var tasks []sent
	for i, to := range tos {
		code := fmt.Sprintf("RCPT%06dK", 161803+i)
		s, err := b.sendTo(context.Background(), to, code, nil)
		require.NoError(t, err)
		codeOf[s.id] = code
		tasks = append(tasks, s)
	}
	f := b.settle(tasks, 30*time.Second)
	require.Equal(t, len(tasks), f.Delivered, "%s", f)
	require.Zero(t, f.Duplicates, "%s", f)
	states := map[string]string{}
	require.Eventually(t, func() bool {
		for _, s := range tasks {
			st, err := b.prod.Status(context.Background(), s.id)
			if err != nil || st.Receipt == nil || !st.Receipt.Final {
				return false
			}
			states[redact.Destination(s.to)] = st.Receipt.State + "/" + st.Receipt.Channel
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "not every receipt is final; worker log:\n%s", w.log())
	require.Equal(t, "delivered_failed/sms", states[redact.Destination(tos[2])])
	require.Equal(t, "delivered/sms", states[redact.Destination(tos[3])], "the SMS fallback delivered")
	require.Equal(t, "delivered/sms", states[redact.Destination(tos[4])], "a late earlier stage does not replace delivered")

	// What the receipt path stores: receipts, their history, the stream,
	// held receipts.
	ctx := context.Background()
	var stored []string
	for _, pattern := range []string{"otpq:{*}:receipt:*", "otpq:{*}:receipt-history:*", "otpq:receipts", "otpq:{receipts}:*"} {
		keys, err := b.redis.c.Keys(ctx, pattern).Result()
		require.NoError(t, err)
		for _, k := range keys {
			stored = append(stored, k)
			switch typ := b.redis.c.Type(ctx, k).Val(); typ {
			case "hash":
				for f, v := range b.redis.c.HGetAll(ctx, k).Val() {
					stored = append(stored, f, v)
				}
			case "list":
				stored = append(stored, b.redis.c.LRange(ctx, k, 0, -1).Val()...)
			case "zset":
				stored = append(stored, b.redis.c.ZRange(ctx, k, 0, -1).Val()...)
			case "stream":
				for _, m := range b.redis.c.XRange(ctx, k, "-", "+").Val() {
					for f, v := range m.Values {
						stored = append(stored, f, fmt.Sprint(v))
					}
				}
			}
		}
	}
	// The scan sees what it must not miss: masked destinations are there.
	require.True(t, slices.ContainsFunc(stored, func(v string) bool { return strings.Contains(v, redact.Destination(tos[0])) }),
		"the receipt scan sees no masked destination: it would miss a full one")
	streamLen := b.redis.c.XLen(ctx, "otpq:receipts").Val()
	require.Positive(t, streamLen)
	metrics := httpGet(t, w.opsURL+"/metrics")
	require.Contains(t, metrics, `otpq_receipts_total{channel="sms",status="delivered"}`)
	var leaks []string
	check := func(where string, texts []string, secrets ...string) {
		for _, txt := range texts {
			for _, sec := range secrets {
				if strings.Contains(txt, sec) {
					leaks = append(leaks, where)
					return
				}
			}
		}
	}
	var secrets []string
	for _, code := range codeOf {
		secrets = append(secrets, code)
	}
	secrets = append(append(secrets, tos...), cbSecret)
	check("stored receipts or stream", stored, secrets...)
	check("worker output", []string{w.log()}, secrets...)
	check("/metrics", []string{metrics}, secrets...)
	for _, v := range b.redisValues(t) {
		if strings.Contains(v, cbSecret) {
			leaks = append(leaks, "callback secret in Redis")
		}
	}
	check("fake output", []string{b.fake.proc.log()}, cbSecret)
	rep.figure("%d sends, %d final receipts (%v); searched %d stored receipt/stream/held values (%d stream entries), %d worker log lines, %d lines of /metrics: %d leaks",
		len(tasks), len(states), states, len(stored), streamLen, strings.Count(w.log(), "\n"), strings.Count(metrics, "\n"), len(leaks))
	require.Empty(t, leaks)
}
