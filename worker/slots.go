package worker

import (
	"context"
	"sync"
)

// slots is the worker's concurrency budget (Config.Concurrency), shared by
// the fetch loops of both queues: each queue has its own asynq servers, so
// that a bulk task is never fetched after an empty critical dequeue, and a
// handler takes a slot before it does anything else. A freed slot goes to
// a waiting critical handler first, then to a waiting bulk one, each in
// arrival order: a critical send waits at most for the first send in
// flight to end, however deep the bulk backlog.
type slots struct {
	mu         sync.Mutex
	free       int
	crit, bulk []chan struct{} // waiters, oldest first
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot, waiting for one if none is free. It returns ctx's
// error, holding no slot, if ctx ends first.
func (s *slots) acquire(ctx context.Context, critical bool) error {
	s.mu.Lock()
	if s.free > 0 { // there are waiters only when no slot is free
		s.free--
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	if critical {
		s.crit = append(s.crit, ch)
	} else {
		s.bulk = append(s.bulk, ch)
	}
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	removed := remove(&s.crit, ch) || remove(&s.bulk, ch)
	s.mu.Unlock()
	if !removed { // handed a slot as ctx ended: pass it on
		<-ch
		s.release()
	}
	return ctx.Err()
}

// release gives a slot back: to the oldest critical waiter, else to the
// oldest bulk waiter, else to the free count.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range []*[]chan struct{}{&s.crit, &s.bulk} {
		if len(*q) > 0 {
			ch := (*q)[0]
			(*q)[0] = nil
			*q = (*q)[1:]
			close(ch)
			return
		}
	}
	s.free++
}

// remove takes ch out of q, reporting whether it was there.
func remove(q *[]chan struct{}, ch chan struct{}) bool {
	for i, c := range *q {
		if c == ch {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false
}
