package worker_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// panicSender panics with the code in the panic value, as a buggy
// gateway that formats the request into its panic could.
type panicSender struct{ calls atomic.Int32 }

func (s *panicSender) Send(_ context.Context, req worker.SendRequest) (*worker.SendResponse, error) {
	s.calls.Add(1)
	panic("gateway choked on code " + req.Code)
}

// TestPanicRecoveredValueWithheld: a handler panic is recovered into a
// failed attempt (retried, then dead-lettered as exhausted), whose stored
// error names the panic's type but withholds its value (it may hold the
// code), and whose log line does not carry it either (setup checks the
// logs for the canary). Fails with the panic value copied into the stored
// error (fmt.Errorf("%w (%v)", errPanic, x) in recovered): checked.
func TestPanicRecoveredValueWithheld(t *testing.T) {
	s := &panicSender{}
	b := setup(t, func(c *worker.Config) { c.Sender, c.MaxRetry = s, 1 })
	id := b.send(t, "+15558000001")
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Equal(t, "retries exhausted after 2 attempts: handler panic (string; value withheld, it may hold the code)", info.LastErr)
	require.EqualValues(t, 2, s.calls.Load())
	line := logLine(b, `"msg":"handler panic"`)
	require.Contains(t, line, `"panic_type":"string"`)
	require.NotContains(t, line, canaryCode)
}

// TestCodeKeyOfUnknownForm: a code key holding neither a plain ("p:") nor
// a sealed ("s:") code is a bad payload: dead-lettered at once, nothing
// sent, and the stored error gives the value's size, not the value. Fails
// with ParseCodeValue taking any value as a plain code: checked.
func TestCodeKeyOfUnknownForm(t *testing.T) {
	b := setupStopped(t, nil)
	id := b.send(t, "+15558000002")
	key := asynqstore.CodeKey(producer.QueueCritical, id)
	ttl := b.db.Client.PTTL(context.Background(), key).Val()
	require.NoError(t, b.db.Client.Set(context.Background(), key, "x:"+canaryCode, ttl).Err())
	require.NoError(t, b.worker.Start())
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Equal(t, fmt.Sprintf("bad payload: the code key holds a %d-byte value of unknown form (not sent)", len("x:"+canaryCode)), info.LastErr)
	require.Zero(t, b.fake.Total())
	require.NotEmpty(t, logLine(b, `"level":"ERROR"`, `"msg":"dead-lettered"`, `"reason":"bad payload"`))
}

// TestRedisFailsReadingCodeKey: when Redis refuses the read of the code
// key (here an ACL without GET for the worker's user), the attempt is
// retried, never dead-lettered as "no code" and never sent without its
// code; once Redis answers again the code goes out once. Fails with a
// failed read taken as a missing key (redis.Nil branch for any error):
// checked.
func TestRedisFailsReadingCodeKey(t *testing.T) {
	ctx := context.Background()
	var user string
	b := setupStopped(t, func(c *worker.Config) {
		user = fmt.Sprintf("nocodeget%d", time.Now().UnixNano())
		c.RedisURL = strings.Replace(c.RedisURL, "redis://", "redis://"+user+":pw@", 1)
		c.RetryMinDelay, c.RetryMaxDelay = 100*time.Millisecond, 100*time.Millisecond
	})
	admin := b.db.Client
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-get").Err())
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	id := b.send(t, "+15558000003")
	require.NoError(t, b.worker.Start())
	var retry *asynq.TaskInfo
	require.Eventually(t, func() bool {
		info, err := b.ins.GetTaskInfo(producer.QueueCritical, id)
		if err == nil && info.State == asynq.TaskStateRetry {
			retry = info
		}
		return retry != nil
	}, 10*time.Second, 5*time.Millisecond)
	require.True(t, strings.HasPrefix(retry.LastErr, "NOPERM"), retry.LastErr)
	require.Zero(t, b.fake.Total())
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", user, "+get").Err())
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateCompleted, info.State)
	require.Equal(t, 1, b.fake.Count("+15558000003"))
}

// oomSender delivers, then makes Redis refuse every write (maxmemory below
// its use, noeviction) before the worker stores the result, as a Redis
// that fills up mid-delivery would.
type oomSender struct {
	set   func()
	calls atomic.Int32
}

func (s *oomSender) Send(_ context.Context, _ worker.SendRequest) (*worker.SendResponse, error) {
	s.calls.Add(1)
	s.set()
	return &worker.SendResponse{MessageID: "m-oom", SendChannel: "sms"}, nil
}

// TestCouldNotStoreResult: the code went out, then the result write
// failed: the worker logs "could not store result" and the attempt still
// succeeds, so the code is not sent again; once Redis takes writes the task
// completes. Fails with a failed result write failing the attempt: checked.
func TestCouldNotStoreResult(t *testing.T) {
	ctx := context.Background()
	s := &oomSender{}
	b := setupStopped(t, func(c *worker.Config) { c.Sender = s })
	admin := b.db.Client
	s.set = func() {
		require.NoError(t, admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
		require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err())
	}
	unset := func() { require.NoError(t, admin.ConfigSet(context.Background(), "maxmemory", "0").Err()) }
	t.Cleanup(unset)
	id := b.send(t, "+15558000004")
	require.NoError(t, b.worker.Start())
	require.Eventually(t, func() bool { return logLine(b, `"msg":"could not store result"`) != "" }, 10*time.Second, 5*time.Millisecond)
	require.Contains(t, logLine(b, `"msg":"could not store result"`), "OOM")
	unset()
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateCompleted, info.State)
	require.EqualValues(t, 1, s.calls.Load(), "the code went out once")
	require.Empty(t, logLine(b, `"msg":"dead-lettered"`))
	// The write is retried once Redis takes it again: the result is there
	// and the code key is gone, so no later attempt can send the code
	// again (fails without keepStoring: checked).
	require.NotEmpty(t, logLine(b, `"msg":"result stored after retrying"`))
	require.NotEmpty(t, info.Result, "the result was stored after the failure")
	n, err := admin.Exists(ctx, asynqstore.CodeKey(producer.QueueCritical, id)).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the code key outlived the accepted send")
}

// codeReadOpt is an asynq.RedisConnOpt for database db of addr whose
// client fails the worker's reads of code keys, while fails is positive,
// as a node that cannot be reached does (a reset connection).
type codeReadOpt struct {
	addr  string
	db    int
	fails *atomic.Int32
}

func (o codeReadOpt) MakeRedisClient() any {
	c := redis.NewClient(&redis.Options{Addr: o.addr, DB: o.db})
	c.AddHook(codeReadHook{o.fails})
	return c
}

type codeReadHook struct{ fails *atomic.Int32 }

func (h codeReadHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h codeReadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h codeReadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "get" && strings.Contains(fmt.Sprint(c.Args()[1]), ":code:") && h.fails.Add(-1) >= 0 {
				err := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// TestCodeReadWaitsOutUnavailableRedis: a read of the code key that
// cannot reach Redis (down, failing over, a slot migrating) is asked
// again until Redis answers, within the same attempt: the task is sent
// once, on its first attempt. Failing the attempt would need Redis to
// schedule the retry, a write asynq does not retry when it fails (with a
// master killed, such tasks waited 30-90 s for their lease to expire).
// Fails with the attempt failed at the first error (4 attempts): checked.
func TestCodeReadWaitsOutUnavailableRedis(t *testing.T) {
	fails := &atomic.Int32{}
	fails.Store(3)
	b := setupStopped(t, func(c *worker.Config) {
		u, err := redisconn.Option(c.RedisURL, nil, 0)
		require.NoError(t, err)
		o := u.(asynq.RedisClientOpt)
		c.RedisURL, c.Redis = "", codeReadOpt{addr: o.Addr, db: o.DB, fails: fails}
	})
	id := b.send(t, "+15558000004")
	require.NoError(t, b.worker.Start())
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateCompleted, info.State)
	require.Less(t, fails.Load(), int32(0), "the three failing reads happened")
	st, err := b.producer.Status(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, 1, st.Attempts)
	require.Equal(t, 1, b.fake.Count("+15558000004"))
}
