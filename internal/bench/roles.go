package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/task"
)

// Queues and weights of the baseline: what a team typically writes by hand
// (asynq's weighted, not strict, priority).
var baselineQueues = map[string]int{task.QueueCritical: 10, task.QueueBulk: 1}

// BaselineConfig configures RunBaselineWorker.
type BaselineConfig struct {
	RedisURL, BaseURL, DevKey, DevSecret string
	// Concurrency is the total across servers; default 100.
	Concurrency int
	// Servers is how many asynq.Server run in the process, sharing
	// Concurrency as the otpq worker shares it between its fetch loops;
	// default 1.
	Servers int
}

// RunBaselineWorker is the benchmark's baseline: a minimal hand-written
// asynq handler doing the same provider POST with asynq's defaults — the
// default 1s poll interval and http.DefaultClient — on cfg.Servers
// asynq servers. It runs until ctx ends.
func RunBaselineWorker(ctx context.Context, cfg BaselineConfig) error {
	opt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return err
	}
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 100)
	cfg.Servers = min(max(cfg.Servers, 1), cfg.Concurrency)
	baseURL, key, secret := cfg.BaseURL, cfg.DevKey, cfg.DevSecret
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
	per, rest := cfg.Concurrency/cfg.Servers, cfg.Concurrency%cfg.Servers
	var servers []*asynq.Server
	defer func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}()
	for i := range cfg.Servers {
		conc := per
		if i < rest {
			conc++
		}
		srv := asynq.NewServer(opt, asynq.Config{Concurrency: conc, Queues: baselineQueues, LogLevel: asynq.WarnLevel})
		if err := srv.Start(mux); err != nil {
			return err
		}
		servers = append(servers, srv)
	}
	<-ctx.Done()
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
	return serve(ctx, addr, h)
}

// serve serves h on addr until ctx ends, with httpserve's timeouts and
// connection bounds wide enough for the benchmark's 1000-connection
// workers, all on this host.
func serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return httpserve.Config{MaxConns: 8192, MaxConnsPerClient: 8192}.Serve(ctx, ln, h)
}

// Paths the stub shares with the fake EngageLab, so the benchmark reads
// and resets both alike.
const (
	statsPath = "/_fake/stats"
	resetPath = "/_fake/reset"
)

// stub is the throughput runs' provider: it answers every POST of the
// API path with a fresh message_id at once (or after a fixed latency),
// checks nothing, and counts what it answered. It does as little per
// request as an HTTP server can, so that it is never what bounds a run;
// the report measures its capacity to show it.
type stub struct {
	latency time.Duration
	n       atomic.Int64
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == fakeengagelab.APIPath && r.Method == http.MethodPost:
		_, _ = io.Copy(io.Discard, r.Body)
		if s.latency > 0 {
			t := time.NewTimer(s.latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		id := s.n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		b := make([]byte, 0, 64)
		b = append(b, `{"message_id":"`...)
		b = strconv.AppendInt(b, id, 10)
		b = append(b, `","send_channel":"sms"}`...)
		_, _ = w.Write(b)
	case r.URL.Path == statsPath:
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"delivered":%d}`, s.n.Load())
	case r.URL.Path == resetPath && r.Method == http.MethodPost:
		s.n.Store(0)
	default:
		http.NotFound(w, r)
	}
}

// RunStubProvider serves the stub provider on addr until ctx ends: every
// POST /v1/codes is answered {"message_id":"<n>","send_channel":"sms"},
// after latency if positive; GET /_fake/stats gives {"delivered":n}.
func RunStubProvider(ctx context.Context, addr string, latency time.Duration) error {
	return serve(ctx, addr, &stub{latency: latency})
}
