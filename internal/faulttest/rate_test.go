//go:build fault

package faulttest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sample is the fake's total request count at an instant.
type sample struct {
	at    time.Time
	total int
}

// busiestSecond is the most provider requests in any 1 s window, judged
// from samples taken every ~50 ms (a window may stretch to ~1.05 s, which
// only overestimates).
func busiestSecond(samples []sample) int {
	best, j := 0, 0
	for i := range samples {
		for j < len(samples) && samples[j].at.Sub(samples[i].at) < time.Second {
			j++
		}
		if j == len(samples) {
			break
		}
		best = max(best, samples[j].total-samples[i].total)
	}
	return best
}

// TestGlobalRateLimit: three worker processes share `--rate 100`; the
// provider must see at most 100 sends per second plus the burst, and every
// task must still go out exactly once (a throttled task waits without
// spending a retry).
func TestGlobalRateLimit(t *testing.T) {
	const rate, burst, workers, n = 100, 10, 3, 1000
	rep := newReport(t, 13, fmt.Sprintf("%d worker processes sharing `--rate %d` (burst %d), %d queued sends", workers, rate, burst, n),
		fmt.Sprintf("busiest 1 s at the provider ≤ %d + burst %d (+5%% sampling slack); average after the burst ≤ %d/s (+1%% timing slack); lost 0; 1 call per task (duplicates 0)", rate, burst, rate))
	b := setup(t, setupOpts{latency: 10 * time.Millisecond})
	tasks := b.sendN(n)
	// Sample from before the first worker starts, so the run's start is seen.
	sampled := make(chan []sample, 1)
	go func() {
		var samples []sample
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err := b.fakeStats()
			if err == nil {
				samples = append(samples, sample{time.Now(), st.Total})
			}
			if (err == nil && st.Total >= n) || time.Now().After(deadline) {
				sampled <- samples
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for range workers {
		b.startWorker("--concurrency", "50", "--rate", fmt.Sprint(rate))
	}
	samples := <-sampled
	require.NotEmpty(t, samples)
	require.Zero(t, samples[0].total, "the provider was called before sampling began")
	f := b.settle(tasks, 60*time.Second)
	// The run proper: from the first request to the last.
	first := 0
	for first < len(samples) && samples[first].total == 0 {
		first++
	}
	first = max(0, first-1)
	run := samples[first:]
	span := run[len(run)-1].at.Sub(run[0].at)
	// The burst may go at once at the start; the rest is paced.
	avg := float64(run[len(run)-1].total-burst) / span.Seconds()
	peak := busiestSecond(run)
	rep.figure("%d sends in %s: average after the initial burst %.1f/s, busiest 1 s window %d; lost %d; max calls/task %d; duplicates %d",
		n, span.Round(100*time.Millisecond), avg, peak, f.Lost, f.MaxRequests, f.Duplicates)
	t.Log(f)
	require.Zero(t, f.Lost, "%s", f)
	require.Equal(t, n, f.Delivered, "%s", f)
	require.Equal(t, 1, f.MaxRequests, "a throttled task was sent more than once: %s", f)
	require.Zero(t, f.Duplicates, "%s", f)
	maxPeak := (rate+burst)*105/100 + 1
	require.LessOrEqual(t, peak, maxPeak, "busiest second above the limit")
	require.LessOrEqual(t, avg, rate*1.01, "average above the limit")
}
