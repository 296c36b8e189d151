//go:build fault

package faulttest

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
)

// leaseCount is the number of tasks some worker holds a lease on.
func (b *bundle) leaseCount() int {
	n := 0
	for _, q := range []string{"critical", "bulk"} {
		l, err := b.redis.c.ZCard(context.Background(), asynqstore.LeaseKey(q)).Result()
		require.NoError(b.t, err)
		n += int(l)
	}
	return n
}

// waitDelivered waits until the fake has delivered at least n codes.
func (b *bundle) waitDelivered(n int, d time.Duration) {
	b.t.Helper()
	var last fakeStats
	waitFor(b.t, d, func() bool {
		last = b.fake.stats(b.t)
		return last.Delivered >= n
	}, func() string {
		return "the fake to deliver " + itoa(n) + " codes, it delivered " + itoa(last.Delivered)
	})
}

// TestKill9WithSendsInFlight: kill -9 the worker while sends are in flight,
// start a new one. The dead worker's leased tasks come back through asynq's
// recoverer once the lease (30s) has been expired for another 30s; the new
// worker's recoverer runs at start and every minute, so this test waits up to
// ~2 minutes: the real behaviour, not shortened.
func TestKill9WithSendsInFlight(t *testing.T) {
	rep := newReport(t, 1, "`kill -9` the worker with sends in flight, start a new one", "lost 0; duplicates ≤ in-flight at the kill; every task completed (none archived)")
	t.Parallel() // waits (lease expiry, a 30 s outage) overlap with the other waiting scenarios
	b := setup(t, setupOpts{latency: 300 * time.Millisecond})
	tasks := b.sendN(200)
	w := b.startWorker("--concurrency", "20")
	b.waitDelivered(40, 30*time.Second)

	w.signal(syscall.SIGKILL)
	require.True(t, w.wait(5*time.Second), "worker did not die on SIGKILL")
	inFlight := b.leaseCount() // the dead worker's leases: exactly its in-flight tasks
	require.Positive(t, inFlight, "no task was in flight at the kill; the scenario tested nothing")
	killedAt := time.Now()

	w2 := b.startWorker("--concurrency", "20")
	f := b.settle(tasks, 200*time.Second)
	recovered := time.Since(killedAt).Round(time.Second)
	already := alreadyAccepted(w2)
	rep.figure("in-flight at kill %d; lost %d; duplicates %d (delivered twice), re-sent %d (requests cut off by the kill, sent again); completed without a send (acceptance recorded before the kill) %d; archived %d; leftover active %d, lease %d; all settled %s after the kill",
		inFlight, f.Lost, f.Duplicates, f.Resent, already, f.States[asynq.TaskStateArchived], f.Active, f.Lease, recovered)
	t.Log(f)
	require.Zero(t, f.Lost, "lost tasks: %s", f)
	require.LessOrEqual(t, f.Duplicates, inFlight, "duplicates above in-flight at the kill: %s", f)
	require.LessOrEqual(t, f.Resent, inFlight, "re-sent above in-flight at the kill: %s", f)
	require.Equal(t, len(tasks), f.Delivered, "every task should be delivered once the provider works: %s", f)
	// A task whose acceptance was recorded before the kill completes on
	// its next attempt; none ends archived (as "no code") although sent.
	require.Equal(t, len(tasks), f.States[asynq.TaskStateCompleted], "every task should complete: %s", f)
}

// alreadyAccepted counts the attempts w completed without a send because
// an earlier attempt's acceptance was recorded (the killed worker stored
// the result but asynq never marked the task complete).
func alreadyAccepted(w *proc) int {
	return strings.Count(w.log(), `"outcome":"already_accepted"`)
}

// TestKill9ProviderFrequencyRule is TestKill9WithSendsInFlight against a
// provider that, like the real EngageLab, refuses a second code for the same
// user and template within its validity (3004). The sends cut off by the
// kill reached the provider; their redelivery must not reach the user twice
// and must be reported as likely accepted, not as a plain failure.
func TestKill9ProviderFrequencyRule(t *testing.T) {
	rep := newReport(t, 1, "`kill -9` with sends in flight, provider enforcing its 3004 frequency rule (as the real API does)",
		"lost 0; duplicates 0; every redelivery refused with 3004 archived as `likely accepted by an earlier attempt`, and no other task archived")
	t.Parallel() // waits (lease expiry, a 30 s outage) overlap with the other waiting scenarios
	b := setup(t, setupOpts{latency: 300 * time.Millisecond, fakeArgs: []string{"--frequency-window", "10m"}})
	tasks := b.sendN(200)
	w := b.startWorker("--concurrency", "20")
	b.waitDelivered(40, 30*time.Second)
	w.signal(syscall.SIGKILL)
	require.True(t, w.wait(5*time.Second), "worker did not die on SIGKILL")
	inFlight := b.leaseCount()
	require.Positive(t, inFlight, "no task was in flight at the kill; the scenario tested nothing")

	w2 := b.startWorker("--concurrency", "20")
	f := b.settle(tasks, 200*time.Second)
	refused, likely := 0, 0
	for _, info := range f.info {
		if strings.Contains(info.LastErr, "engagelab 3004") {
			refused++
			if strings.HasPrefix(info.LastErr, "likely accepted by an earlier attempt") {
				likely++
			}
		}
	}
	already := alreadyAccepted(w2)
	rep.figure("in-flight at kill %d; lost %d; duplicates %d; re-sent %d, of which refused with 3004: %d, archived as likely accepted: %d; completed without a send (acceptance recorded before the kill) %d; archived %d; leftover active %d, lease %d",
		inFlight, f.Lost, f.Duplicates, f.Resent, refused, likely, already, f.States[asynq.TaskStateArchived], f.Active, f.Lease)
	t.Log(f)
	require.Zero(t, f.Lost, "%s", f)
	require.Zero(t, f.Duplicates, "%s", f)
	// Every request the kill cut off may have delivered: at most one resend
	// per task in flight, each refused by the provider's frequency rule and
	// archived as likely accepted (refused and likely both 0 would mean
	// the kill cut off nothing, and tested nothing).
	require.LessOrEqual(t, f.Resent, inFlight, "re-sent above in-flight at the kill: %s", f)
	require.Positive(t, likely, "no redelivery was refused with 3004: the kill cut off no send: %s", f)
	require.Equal(t, refused, likely, "redeliveries refused with 3004 archived as a plain failure instead of likely accepted: %s", f)
	// The only dead letters are those: a task whose acceptance was
	// recorded before the kill completes on its next attempt, and none is
	// archived as "no code" although sent.
	require.Equal(t, likely, f.States[asynq.TaskStateArchived], "archived other than as likely accepted: %s", f)
}

// TestSIGTERMWithSendsInFlight: a graceful stop lets in-flight sends finish
// and leaves the rest queued for the next worker.
func TestSIGTERMWithSendsInFlight(t *testing.T) {
	rep := newReport(t, 2, "SIGTERM with sends in flight, start a new worker", "lost 0; duplicates 0 (re-sent 0)")
	b := setup(t, setupOpts{latency: 300 * time.Millisecond})
	tasks := b.sendN(200)
	w := b.startWorker("--concurrency", "20")
	b.waitDelivered(40, 30*time.Second)

	inFlight := b.leaseCount()
	w.signal(syscall.SIGTERM)
	require.True(t, w.wait(20*time.Second), "worker did not exit within 20s of SIGTERM:\n%s", w.log())
	require.NoError(t, w.exitErr, "worker exit status after SIGTERM")
	afterStop, err := b.measure(tasks)
	require.NoError(t, err)

	b.startWorker("--concurrency", "20")
	f := b.settle(tasks, 60*time.Second)
	rep.figure("in-flight at SIGTERM ≈%d; after exit: active %d, lease %d; lost %d; duplicates %d; re-sent %d; leftover active %d, lease %d",
		inFlight, afterStop.Active, afterStop.Lease, f.Lost, f.Duplicates, f.Resent, f.Active, f.Lease)
	t.Log(f)
	require.Zero(t, afterStop.Active+afterStop.Lease, "the stopped worker left tasks active/leased: %s", afterStop)
	require.Zero(t, f.Lost, "lost: %s", f)
	require.Zero(t, f.Duplicates, "duplicates: %s", f)
	require.Zero(t, f.Resent, "re-sent: %s", f)
	require.Equal(t, len(tasks), f.Delivered, "%s", f)
}

func itoa(n int) string { return strconv.Itoa(n) }
