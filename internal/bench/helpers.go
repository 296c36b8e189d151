package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/task"
)

// Queues and weights of the baseline: what a team typically writes by hand
// (asynq's weighted, not strict, priority).
var baselineQueues = map[string]int{task.QueueCritical: 10, task.QueueBulk: 1}

// RunBaselineWorker is the benchmark's baseline: a minimal hand-written
// asynq handler doing the same provider POST with asynq's defaults — one
// server, the default 1s poll interval, and http.DefaultClient — at the
// given concurrency. It runs until ctx ends.
func RunBaselineWorker(ctx context.Context, redisURL, baseURL, key, secret string, concurrency int) error {
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		return err
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: concurrency, Queues: baselineQueues, LogLevel: asynq.WarnLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc(task.TypeSend, func(ctx context.Context, t *asynq.Task) error {
		p, err := task.Decode(t.Payload())
		if err != nil {
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
		body, _ := json.Marshal(map[string]any{"to": p.To, "code": p.Code, "template": p.Template})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/codes", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth(key, secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("provider answered %d", resp.StatusCode)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// Tap paths of the timing provider.
const (
	// TapPath answers and resets the arrival latencies recorded so far,
	// as JSON {"critical":[ns…],"bulk":[ns…]}.
	TapPath = "/_bench/latencies"
	// StampParam is the template parameter holding the enqueue time
	// (Unix ns); QueueParam says which queue the send went through.
	StampParam = "bench_t"
	QueueParam = "bench_q"
)

// RunTapProvider serves the fake EngageLab (internal/fakeengagelab) on
// addr with a tap in front: for each API request carrying a StampParam it
// records arrival time minus that stamp — enqueue → provider request — and
// serves the recorded latencies on TapPath. It runs until ctx ends.
func RunTapProvider(ctx context.Context, addr string, latency time.Duration) error {
	fake := fakeengagelab.New(fakeengagelab.Config{Latency: latency, MaxReceipts: -1})
	var mu sync.Mutex
	lat := map[string][]int64{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == TapPath {
			mu.Lock()
			out := lat
			lat = map[string][]int64{}
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(out)
			return
		}
		if r.URL.Path == fakeengagelab.APIPath && r.Method == http.MethodPost {
			now := time.Now().UnixNano()
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err == nil {
				var req struct {
					Template struct {
						Params map[string]string `json:"params"`
					} `json:"template"`
				}
				if json.Unmarshal(body, &req) == nil {
					if t, err := strconv.ParseInt(req.Template.Params[StampParam], 10, 64); err == nil {
						mu.Lock()
						q := req.Template.Params[QueueParam]
						lat[q] = append(lat[q], now-t)
						mu.Unlock()
					}
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		fake.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// percentile returns the p-th percentile (0–100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func sortedDurations(ns []int64) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, v := range ns {
		out[i] = time.Duration(v)
	}
	slices.Sort(out)
	return out
}
