package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/asynqstore"
)

// gate keeps the fetch cost of a sharded worker from growing with the
// shard count. Every fetch loop serves every shard of its class, and asynq
// asks each queue in turn (one Redis script call per queue) at each poll:
// 16 shards would cost 16 calls per idle poll. The gate, a Redis hook on
// the worker's client, answers asynq's dequeue of an idle shard itself
// ("empty", without asking Redis) until one of these says it may hold a
// task:
//   - its wake-up channel (asynqstore.ReadyChannel): producers publish to it
//     in the script that makes tasks pending, and the worker subscribes;
//   - its slow poll: an idle shard is still asked every slow interval
//     (1 s, or IdlePollInterval if longer), so a task that arrives without
//     a wake-up (a retry
//     or a delayed send made pending by asynq's forwarder, a lost message,
//     a task enqueued by another client) waits at most that long.
//
// A shard that gave a task stays open (asked at every poll) until Redis
// answers that it is empty, and a wake-up that arrives during that answer
// keeps it open. Redis errors leave the shard open: the gate never hides a
// queue's tasks, it only delays the asking of a queue that was empty.
type gate struct {
	slow time.Duration
	now  func() time.Time

	mu     sync.Mutex
	queues map[string]*gateState
}

// gateSlowPoll replaces IdlePollInterval as the gate's slow poll when
// positive (tests that must tell a wake-up from a slow poll).
var gateSlowPoll time.Duration

// gateState is one shard queue's state.
type gateState struct {
	open bool
	gen  uint64    // wake-ups so far
	next time.Time // when a closed queue is asked anyway
}

func newGate(queues []string, slow time.Duration, now func() time.Time) *gate {
	g := &gate{slow: slow, now: now, queues: make(map[string]*gateState, len(queues))}
	for _, q := range queues {
		g.queues[q] = &gateState{open: true}
	}
	return g
}

// admit reports whether a dequeue of q goes to Redis (pass), with the
// wake-up generation to hand to settle; watched is false for a queue the
// gate does not hold.
func (g *gate) admit(q string) (gen uint64, pass, watched bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.queues[q]
	if !ok {
		return 0, true, false
	}
	if s.open {
		return s.gen, true, true
	}
	if now := g.now(); !now.Before(s.next) {
		s.next = now.Add(g.slow) // one slow poll per interval, whichever loop asks
		return s.gen, true, true
	}
	return s.gen, false, true
}

// settle records Redis's answer to a dequeue of q admitted at gen: a
// task (err nil) opens the queue, an empty answer (redis.Nil) closes it
// unless a wake-up came meanwhile, an error opens it.
func (g *gate) settle(q string, gen uint64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.queues[q]
	switch {
	case err == nil:
		s.open = true
	case errors.Is(err, redis.Nil):
		if s.gen == gen {
			s.open, s.next = false, g.now().Add(g.slow)
		}
	default: // NOSCRIPT before asynq's EVAL, Redis down: ask again at once
		s.open = true
	}
}

// wake opens q: a producer made tasks pending in it.
func (g *gate) wake(q string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.queues[q]; ok {
		s.gen++
		s.open = true
	}
}

// DialHook is the gate's redis.Hook: dials pass.
func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook is the gate's redis.Hook: asynq does not dequeue in
// pipelines.
func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook answers asynq's dequeue of a closed shard queue with
// redis.Nil (asynq's "empty") without asking Redis.
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		q, ok := asynqstore.DequeueQueue(cmd.Args())
		if !ok {
			return next(ctx, cmd)
		}
		gen, pass, watched := g.admit(q)
		if !watched {
			return next(ctx, cmd)
		}
		if !pass {
			cmd.SetErr(redis.Nil)
			return redis.Nil
		}
		err := next(ctx, cmd)
		g.settle(q, gen, err)
		return err
	}
}

// listen subscribes to the wake-up channels of queues (one sharded
// subscription per queue on a Cluster, whose channels live on the queues'
// nodes; one for all on a single Redis) and wakes the gate's queue of each
// message, until stop is called. go-redis resubscribes after a lost
// connection; what was published meanwhile waits for the slow poll.
func (g *gate) listen(rdb redis.UniversalClient, queues []string, log *slog.Logger) (stop func()) {
	byChannel := make(map[string]string, len(queues))
	var groups [][]string
	for _, q := range queues {
		ch := asynqstore.ReadyChannel(q)
		byChannel[ch] = q
		if _, cluster := rdb.(*redis.ClusterClient); cluster || len(groups) == 0 {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], ch)
	}
	ctx := context.Background()
	var subs []*redis.PubSub
	var wg sync.WaitGroup
	for _, chans := range groups {
		ps := rdb.SSubscribe(ctx, chans...)
		subs = append(subs, ps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ps.Channel() {
				if q, ok := byChannel[m.Channel]; ok {
					g.wake(q)
				}
			}
		}()
	}
	log.Debug("listening for wake-ups", "channels", len(queues), "subscriptions", len(subs))
	return func() {
		for _, ps := range subs {
			_ = ps.Close()
		}
		wg.Wait()
	}
}
