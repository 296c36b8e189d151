package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otpq/otpq/internal/task"
)

// Scrubbing: asynq keeps a finished task's message, payload included, in
// the task's hash asynq:{queue}:t:<id> for the retention period (completed)
// or up to 90 days (archived). otpq removes the code from that stored
// payload once it is of no more use, so no finished task keeps a live code:
//   - a completed task at once (it was delivered; nothing re-runs it);
//   - a dead letter when its code expires: until then an operator who fixed
//     the cause (credentials, balance, template) can re-run it from the UI
//     and it is delivered; after that a re-run could only archive it as
//     expired anyway. A dead letter whose code has already expired is
//     scrubbed at once.
//
// asynq has no API for it and writes the message itself after the handler
// returns, so a janitor in each worker rewrites the hash's msg field
// afterwards, with a compare-and-set script that only touches a task still
// in a final state and still holding the message read.
const (
	// DefaultScrubInterval is how often the janitor scrubs the tasks this
	// worker finished.
	DefaultScrubInterval = time.Second
	// scrubSweepInterval is how often the janitor also sweeps every
	// archived and completed task (tasks finished by a worker that died
	// before scrubbing them, or archived by asynq's lease recoverer).
	scrubSweepInterval = 5 * time.Minute
	// scrubGiveUp drops a noted task that never reached a final state.
	scrubGiveUp = 30 * time.Second
)

// scrubScript replaces the stored message of a finished task. KEYS[1] is
// the task hash; ARGV[1] the message read, ARGV[2] the scrubbed one.
var scrubScript = redis.NewScript(`
local st = redis.call("HGET", KEYS[1], "state")
if st ~= "archived" and st ~= "completed" then return 0 end
if redis.call("HGET", KEYS[1], "msg") ~= ARGV[1] then return 0 end
redis.call("HSET", KEYS[1], "msg", ARGV[2])
return 1
`)

type scrubRef struct {
	queue, id string
	noted     time.Time
}

func (r scrubRef) key() string { return "asynq:{" + r.queue + "}:t:" + r.id }

type heldRef struct {
	ref   scrubRef
	until time.Time
}

// scrubber is the janitor. A nil *scrubber scrubs nothing.
type scrubber struct {
	rdb      redis.UniversalClient
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	pending []scrubRef
	// held are dead letters whose code is still live, by task hash key,
	// with the time their code expires: scrubbed then.
	held map[string]heldRef

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newScrubber(rdb redis.UniversalClient, log *slog.Logger, interval time.Duration) *scrubber {
	if interval < 0 {
		return nil
	}
	if interval == 0 {
		interval = DefaultScrubInterval
	}
	return &scrubber{rdb: rdb, log: log, interval: interval, held: map[string]heldRef{}}
}

// wrap notes every task that h finishes for good: delivered, dead-lettered,
// or failed on its last allowed attempt.
func (s *scrubber) wrap(h asynq.Handler) asynq.Handler {
	if s == nil {
		return h
	}
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := h.ProcessTask(ctx, t)
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		if err == nil || errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
			id, _ := asynq.GetTaskID(ctx)
			q, _ := asynq.GetQueueName(ctx)
			s.mu.Lock()
			s.pending = append(s.pending, scrubRef{queue: q, id: id, noted: time.Now()})
			s.mu.Unlock()
		}
		return err
	})
}

func (s *scrubber) start() {
	if s == nil {
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.loop()
}

// shutdown scrubs what is pending one last time and stops the janitor.
func (s *scrubber) shutdown() {
	if s == nil || s.stop == nil {
		return
	}
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *scrubber) loop() {
	defer close(s.done)
	ctx := context.Background()
	s.sweep(ctx)
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-s.stop:
			s.scrubPending(ctx, true)
			return
		case <-tick.C:
			s.scrubPending(ctx, false)
			if time.Since(lastSweep) >= scrubSweepInterval {
				s.sweep(ctx)
				lastSweep = time.Now()
			}
		}
	}
}

// scrubPending scrubs the noted tasks that are final; others are kept for
// the next round until scrubGiveUp (or dropped when last is set).
func (s *scrubber) scrubPending(ctx context.Context, last bool) {
	now := time.Now()
	s.mu.Lock()
	refs := s.pending
	s.pending = nil
	for k, h := range s.held {
		if !now.Before(h.until) {
			refs = append(refs, h.ref)
			delete(s.held, k)
		}
	}
	s.mu.Unlock()
	if len(refs) == 0 {
		return
	}
	keep, err := s.scrub(ctx, refs, now)
	if err != nil {
		s.log.Warn("scrub: could not scrub finished tasks; will retry", "tasks", len(refs), "error", err.Error())
		keep = refs
	}
	if last {
		return
	}
	var again []scrubRef
	for _, r := range keep {
		if time.Since(r.noted) < scrubGiveUp {
			again = append(again, r)
		}
	}
	s.mu.Lock()
	s.pending = append(again, s.pending...)
	s.mu.Unlock()
}

// sweepLimit bounds one sweep of a queue's completed set: the tasks that
// complete latest (the highest scores: completion time + retention).
const sweepLimit = 10000

// sweep scrubs the archived tasks of otpq's queues (asynq keeps at most
// 10000 per queue) and the sweepLimit completed tasks that expire last,
// so that its cost stays bounded at any throughput.
func (s *scrubber) sweep(ctx context.Context) {
	for _, q := range []string{task.QueueCritical, task.QueueBulk} {
		for _, set := range []string{"archived", "completed"} {
			ids, err := s.rdb.ZRevRange(ctx, "asynq:{"+q+"}:"+set, 0, sweepLimit-1).Result()
			if err != nil {
				s.log.Warn("scrub: sweep failed", "queue", q, "error", err.Error())
				return
			}
			for len(ids) > 0 {
				n := min(len(ids), 500)
				refs := make([]scrubRef, n)
				for i, id := range ids[:n] {
					refs[i] = scrubRef{queue: q, id: id}
				}
				ids = ids[n:]
				if _, err := s.scrub(ctx, refs, time.Now()); err != nil {
					s.log.Warn("scrub: sweep failed", "queue", q, "error", err.Error())
					return
				}
			}
		}
	}
}

// scrub rewrites the final tasks among refs and returns those not final
// yet (still being archived by asynq). Dead letters whose code is live at
// now are held until it expires (on shutdown, the next worker's sweep
// finds them).
func (s *scrubber) scrub(ctx context.Context, refs []scrubRef, now time.Time) (notFinal []scrubRef, err error) {
	key := scrubRef.key
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(refs))
	for i, r := range refs {
		cmds[i] = pipe.HMGet(ctx, key(r), "state", "msg")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	type job struct {
		key      string
		old, new string
	}
	var jobs []job
	for i, c := range cmds {
		vals := c.Val()
		if len(vals) != 2 || vals[0] == nil {
			continue // gone: deleted, or not retained
		}
		state, _ := vals[0].(string)
		msg, _ := vals[1].(string)
		if state != "archived" && state != "completed" {
			notFinal = append(notFinal, refs[i])
			continue
		}
		scrubbed, expires, ok := scrubMessage([]byte(msg))
		if !ok {
			continue
		}
		if state == "archived" && now.Before(expires) {
			s.mu.Lock()
			s.held[key(refs[i])] = heldRef{ref: scrubRef{queue: refs[i].queue, id: refs[i].id}, until: expires}
			s.mu.Unlock()
			continue
		}
		jobs = append(jobs, job{key: key(refs[i]), old: msg, new: string(scrubbed)})
	}
	if len(jobs) == 0 {
		return notFinal, nil
	}
	for try := 0; ; try++ {
		pipe = s.rdb.Pipeline()
		for _, j := range jobs {
			scrubScript.EvalSha(ctx, pipe, []string{j.key}, j.old, j.new)
		}
		_, err := pipe.Exec(ctx)
		if err == nil || errors.Is(err, redis.Nil) {
			break
		}
		if try > 0 || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
			return nil, err
		}
		// First use on this server (or it restarted): load, then redo.
		if err := scrubScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, err
		}
	}
	return notFinal, nil
}

// asynq's TaskMessage protobuf fields this file reads (asynq.proto).
const (
	msgFieldType    protowire.Number = 1
	msgFieldPayload protowire.Number = 2
)

// scrubMessage returns the encoded asynq TaskMessage msg with the code
// removed from its otp:send payload, every other field kept byte for byte,
// and the code's expiry (zero when the payload has none). ok is false when
// msg is not an otp:send message holding a code.
func scrubMessage(msg []byte) (out []byte, expires time.Time, ok bool) {
	var typ string
	var payload []byte
	payloadAt := -1
	for b := msg; len(b) > 0; {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, time.Time{}, false
		}
		m := protowire.ConsumeFieldValue(num, wt, b[n:])
		if m < 0 {
			return nil, time.Time{}, false
		}
		if wt == protowire.BytesType && (num == msgFieldType || num == msgFieldPayload) {
			v, _ := protowire.ConsumeBytes(b[n:])
			if num == msgFieldType {
				typ = string(v)
			} else {
				payload, payloadAt = v, len(msg)-len(b)
			}
		}
		b = b[n+m:]
	}
	if typ != task.TypeSend || payloadAt < 0 {
		return nil, time.Time{}, false
	}
	clean, expires, ok := task.Scrub(payload)
	if !ok {
		return nil, time.Time{}, false
	}
	// Re-emit the payload field in place.
	rest := msg[payloadAt:]
	_, _, n := protowire.ConsumeTag(rest)
	m := protowire.ConsumeFieldValue(msgFieldPayload, protowire.BytesType, rest[n:])
	out = append(out, msg[:payloadAt]...)
	out = protowire.AppendTag(out, msgFieldPayload, protowire.BytesType)
	out = protowire.AppendBytes(out, clean)
	out = append(out, rest[n+m:]...)
	return out, expires, true
}
