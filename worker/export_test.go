package worker

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
)

// SlotWaiters reports how many handlers wait for a send slot, per class:
// tests wait on it, since a task shown active in Redis may not have reached
// the slots yet.
func (w *Worker) SlotWaiters() (critical, bulk int) {
	w.slots.mu.Lock()
	defer w.slots.mu.Unlock()
	return len(w.slots.crit), len(w.slots.bulk)
}

// Deliver runs one first attempt of a task as asynq's server would, id and
// queue given, without starting the servers (BenchmarkDeliveryPath).
func (w *Worker) Deliver(ctx context.Context, t *asynq.Task, id, queue string) error {
	if w.co == nil {
		w.co = newCoalescer(w.rdb)
	}
	return w.process(ctx, t, id, queue, 0)
}

// ClosedShards is how many shard queues the fetch gate holds closed (asked
// only at their slow poll), 0 for an unsharded worker.
func (w *Worker) ClosedShards() int {
	w.mu.Lock()
	g := w.gate
	w.mu.Unlock()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, s := range g.queues {
		if !s.open {
			n++
		}
	}
	return n
}

// SetGateSlowPoll makes the fetch gate of workers started from now on ask
// an idle shard every d (instead of IdlePollInterval) until restore.
func SetGateSlowPoll(d time.Duration) (restore func()) {
	gateSlowPoll = d
	return func() { gateSlowPoll = 0 }
}
