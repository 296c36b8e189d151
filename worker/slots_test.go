package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSlotsCriticalFirst: with every slot taken, a freed slot goes to the
// critical waiter even when bulk waiters came before it, then to the bulk
// waiters in arrival order; a waiter whose ctx ends leaves the queue and
// holds nothing.
func TestSlotsCriticalFirst(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	require.NoError(t, s.acquire(ctx, false))
	queued := func(n int) {
		require.Eventually(t, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.crit)+len(s.bulk) == n
		}, time.Second, time.Millisecond)
	}

	got := make(chan string, 4)
	for i, w := range []struct {
		name     string
		critical bool
	}{{"bulk1", false}, {"bulk2", false}, {"crit", true}} {
		go func() {
			if s.acquire(ctx, w.critical) == nil {
				got <- w.name
			}
		}()
		queued(i + 1) // in this order
	}
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error, 1)
	go func() { gone <- s.acquire(cctx, true) }()
	queued(4)
	cancel()
	require.ErrorIs(t, <-gone, context.Canceled)

	for _, want := range []string{"crit", "bulk1", "bulk2"} {
		s.release()
		require.Equal(t, want, <-got)
	}
	s.release()
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Equal(t, 1, s.free, "every slot back, none lost to the cancelled waiter")
	require.Empty(t, s.crit)
	require.Empty(t, s.bulk)
}
