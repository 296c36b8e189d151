package producer

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
)

const canary = "CANARY-5521"

func validRequest() Request {
	return Request{To: "+8618701235678", Code: canary, TemplateID: "login", Language: "en", Params: map[string]string{"name": "Bob"}}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Request)
	}{
		{"to", func(r *Request) { r.To = "" }},
		{"to", func(r *Request) { r.To = "8618701235678" }},
		{"to", func(r *Request) { r.To = "+86 187 0123 5678" }},
		{"to", func(r *Request) { r.To = "+0123456789" }},
		{"to", func(r *Request) { r.To = "+1234567" }},
		{"to", func(r *Request) { r.To = "+1234567890123456" }},
		{"to", func(r *Request) { r.To = "bob@localhost" }},
		{"to", func(r *Request) { r.To = "Bob <bob@example.com>" }},
		{"to", func(r *Request) { r.To = "bob@@example.com" }},
		{"code", func(r *Request) { r.Code = "" }},
		{"code", func(r *Request) { r.Code = strings.Repeat("9", MaxCodeLen+1) }},
		{"code", func(r *Request) { r.Code = "12 34" }},
		{"template", func(r *Request) { r.TemplateID = "" }},
		{"template", func(r *Request) { r.TemplateID = strings.Repeat("t", MaxTemplateIDLen+1) }},
		{"language", func(r *Request) { r.Language = "fr" }},
		{"params", func(r *Request) { r.Params = map[string]string{"": "x"} }},
		{"params", func(r *Request) { r.Params = map[string]string{"k": strings.Repeat("v", MaxParamValueLen+1)} }},
		{"params", func(r *Request) {
			r.Params = map[string]string{}
			for i := range MaxParams + 1 {
				r.Params[strings.Repeat("k", i+1)] = "v"
			}
		}},
	}
	for _, tc := range cases {
		r := validRequest()
		tc.mod(&r)
		err := r.Validate()
		var ve *ValidationError
		require.ErrorAs(t, err, &ve, "request %+v", r)
		require.Equal(t, tc.field, ve.Field, err.Error())
		require.ErrorIs(t, err, ErrInvalid)
		require.NotContains(t, err.Error(), canary)
	}
	for _, to := range []string{"+8613800138000", "support@engagelab.com", "a.b+c@mail.example.co.uk"} {
		r := validRequest()
		r.To = to
		require.NoError(t, r.Validate(), to)
	}
	r := validRequest()
	r.Language, r.Params = "", nil
	require.NoError(t, r.Validate())
}

type bundle struct {
	p   *Producer
	db  *redistest.DB
	ins *asynq.Inspector
	now time.Time
}

func setup(t *testing.T) bundle {
	t.Helper()
	db := redistest.New(t)
	now := time.Now().UTC().Truncate(time.Second) // real time: Redis expires code keys by its own clock
	p, err := New(Config{RedisURL: db.URL(), Now: func() time.Time { return now }})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	t.Cleanup(func() { ins.Close() })
	return bundle{p: p, db: db, ins: ins, now: now}
}

func TestSendEnqueuesPayload(t *testing.T) {
	b := setup(t)
	id, err := b.p.Send(context.Background(), validRequest(), ExpiresIn(90*time.Second))
	require.NoError(t, err)
	info, err := b.ins.GetTaskInfo(QueueCritical, id)
	require.NoError(t, err)
	require.Equal(t, task.TypeSend, info.Type)
	require.Equal(t, DefaultMaxRetry, info.MaxRetry)
	require.Equal(t, DefaultRetention, info.Retention)
	p, err := task.Decode(info.Payload)
	require.NoError(t, err)
	require.Equal(t, task.Payload{
		V: task.VersionCodeKey, To: "+8618701235678",
		Template:  task.Template{ID: "login", Language: "en", Params: map[string]string{"name": "Bob"}},
		ExpiresAt: b.now.Add(90 * time.Second), CreatedAt: b.now, RetentionSec: 3600,
	}, p)
	require.Equal(t, 90*time.Second, info.Timeout, "asynq's timeout is the code's life: no attempt outlives it")
	require.NotContains(t, string(info.Payload), canary)

	// The code is in its own key, written with the task, expiring with the code.
	ctx := context.Background()
	v, err := b.db.Client.Get(ctx, asynqstore.CodeKey(QueueCritical, id)).Result()
	require.NoError(t, err)
	require.Equal(t, task.CodeValue(canary), v)
	at, err := b.db.Client.PExpireTime(ctx, asynqstore.CodeKey(QueueCritical, id)).Result()
	require.NoError(t, err)
	require.Equal(t, b.now.Add(90*time.Second).UnixMilli(), at.Milliseconds())
}

func TestSendInvalidEnqueuesNothing(t *testing.T) {
	b := setup(t)
	r := validRequest()
	r.To = "12345"
	_, err := b.p.Send(context.Background(), r)
	require.ErrorIs(t, err, ErrInvalid)
	for _, opts := range [][]Option{{Queue("default")}, {ExpiresIn(-time.Second)}, {ExpiresAt(b.now.Add(-time.Second))},
		{Delay(10 * time.Minute)}, {DedupKey("has space")}, {DedupKey(strings.Repeat("k", 200))}} {
		_, err := b.p.Send(context.Background(), validRequest(), opts...)
		require.ErrorIs(t, err, ErrInvalid)
	}
	_, err = b.p.Send(context.Background(), validRequest(), ExpiresIn(time.Minute), ExpiresAt(b.now.Add(time.Hour)))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "expires_in", "both options named, neither silently wins")
	require.ErrorContains(t, err, "expires_at")
	keys, err := b.db.Client.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "nothing may reach Redis")
}

func TestSendDedupKey(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id, err := b.p.Send(ctx, validRequest(), DedupKey("order-77:login"))
	require.NoError(t, err)
	require.Equal(t, "order-77:login", id)
	id2, err := b.p.Send(ctx, validRequest(), DedupKey("order-77:login"))
	require.ErrorIs(t, err, ErrDuplicate)
	require.Equal(t, id, id2)
	var de *DuplicateError
	require.ErrorAs(t, err, &de)
	require.Equal(t, id, de.ID)
	require.EqualError(t, err, "duplicate send: task order-77:login already exists")
	q, err := b.ins.GetQueueInfo(QueueCritical)
	require.NoError(t, err)
	require.Equal(t, 1, q.Pending)
}

func TestSendQueueAndDelay(t *testing.T) {
	b := setup(t)
	id, err := b.p.Send(context.Background(), validRequest(), Queue(QueueBulk), Delay(time.Minute))
	require.NoError(t, err)
	info, err := b.ins.GetTaskInfo(QueueBulk, id)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateScheduled, info.State)
	require.Equal(t, b.now.Add(time.Minute).Unix(), info.NextProcessAt.Unix())
	require.Equal(t, 4*time.Minute, info.Timeout, "the code's life left when the task becomes due")
	n, err := b.db.Client.Exists(context.Background(), asynqstore.CodeKey(QueueBulk, id)).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "a delayed send has its code key too")
}

func TestStatus(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id, err := b.p.Send(ctx, validRequest(), Queue(QueueBulk))
	require.NoError(t, err)
	st, err := b.p.Status(ctx, id)
	require.NoError(t, err)
	require.Equal(t, Status{ID: id, Queue: QueueBulk, Verdict: "queued", State: StatePending}, *st)

	_, err = b.p.Status(ctx, "no-such-task")
	require.ErrorIs(t, err, ErrNotFound)

	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.p.Status(done, id)
	require.ErrorIs(t, err, context.Canceled, "Status honours its ctx")
}

// TestStatusHonoursDeadlineWhenRedisFreezesMidway: a Redis that answers
// the connection's setup and then freezes as the task itself is read must
// not hold Status past the caller's deadline (asynq's Inspector, which
// read it before, takes no context: Status hung for go-redis's read
// timeout and its retries, then failed with another error).
func TestStatusHonoursDeadlineWhenRedisFreezesMidway(t *testing.T) {
	b := setup(t)
	id, err := b.p.Send(context.Background(), validRequest())
	require.NoError(t, err)
	addr := redistest.Freezing(t, b.db.Addr, func(args []string) bool {
		return !strings.EqualFold(args[0], "EXISTS") && slices.Contains(args, asynqstore.TaskKey(QueueCritical, id))
	})
	p, err := New(Config{Redis: asynq.RedisClientOpt{Addr: addr, DB: b.db.Number, ReadTimeout: time.Minute}})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = p.Status(ctx, id)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestSendRedisDownIsReported(t *testing.T) {
	p, err := New(Config{RedisURL: "redis://127.0.0.1:1/0"})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = p.Send(ctx, validRequest())
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrInvalid))
	require.NotContains(t, err.Error(), canary)
}

// A frozen Redis must not hold Send past the caller's deadline (go-redis's
// own read timeout and retries would hold it for seconds).
func TestSendHonoursDeadlineWhenRedisStalls(t *testing.T) {
	p, err := New(Config{Redis: asynq.RedisClientOpt{Addr: redistest.Stalled(t), ReadTimeout: time.Minute}})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := p.Send(ctx, validRequest())
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		require.False(t, errors.Is(err, ErrInvalid))
		require.NotContains(t, err.Error(), canary)
	case <-time.After(30 * time.Second):
		t.Fatal("Send ignored its context deadline against a stalled Redis")
	}
}

// TestStatusIsPrintable: a result or error stored raw (by a worker that
// predates provider-text escaping) still comes out of Status escaped and
// capped, so that otpq status never writes a terminal escape.
func TestStatusIsPrintable(t *testing.T) {
	huge := strings.Repeat("7", 60<<10)
	res, err := json.Marshal(map[string]any{"message_id": "\x1b[2J\n" + huge, "send_channel": "sms\r", "attempts": 1})
	require.NoError(t, err)
	st := statusOf(&asynq.TaskInfo{ID: "t", Queue: QueueCritical, State: asynq.TaskStateCompleted, Result: res,
		LastErr: "engagelab 3003: \x1b]0;pwned\x07" + huge})
	require.True(t, strings.HasPrefix(st.MessageID, `\x1b[2J\n777`), st.MessageID[:16])
	require.LessOrEqual(t, len(st.MessageID), 128)
	require.Equal(t, `sms\r`, st.SendChannel)
	require.True(t, strings.HasPrefix(st.LastError, `engagelab 3003: \x1b]0;pwned\a`), st.LastError[:40])
	require.LessOrEqual(t, len(st.LastError), 2048)
	require.Equal(t, "accepted", st.Outcome, "a result without an outcome (older worker) reads as accepted")
}

// TestMaxRetryZeroValues: MaxRetry reads as worker.Config.MaxRetry does: 0
// is the default, negative is no retries.
func TestMaxRetryZeroValues(t *testing.T) {
	b := setup(t)
	for n, want := range map[int]int{0: DefaultMaxRetry, -1: 0, 3: 3} {
		id, err := b.p.Send(context.Background(), validRequest(), MaxRetry(n))
		require.NoError(t, err)
		info, err := b.ins.GetTaskInfo(QueueCritical, id)
		require.NoError(t, err)
		require.Equal(t, want, info.MaxRetry, "MaxRetry(%d)", n)
	}
}
