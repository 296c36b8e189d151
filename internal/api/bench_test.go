package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/producer"
)

// benchClients is the number of concurrent clients of the issue's
// throughput goal (API ≥ 0.5× producer.Send, both with 64 callers).
const benchClients = 64

// benchSetup serves the API on a database of its own, guard on, with a
// keep-alive client pool of benchClients connections.
func benchSetup(b *testing.B) (*producer.Producer, string, *http.Client) {
	b.Helper()
	db := redistest.New(b)
	p, err := producer.New(producer.Config{RedisURL: db.URL()})
	require.NoError(b, err)
	b.Cleanup(func() { p.Close() })
	h, err := New(Config{Producer: p, Keys: []Key{{Name: "bench", Key: "k", Secret: "s"}}, Logger: newLog(io.Discard)})
	require.NoError(b, err)
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchClients, MaxConnsPerHost: benchClients}}
	return p, srv.URL + PathCodes, client
}

// benchTo is a new destination per send, so the guard counts but never
// refuses.
var benchSeq atomic.Int64

func benchTo() string { return fmt.Sprintf("+86138%08d", benchSeq.Add(1)%100_000_000) }

func post(client *http.Client, url, to string) error {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"to":"`+to+`","code":"398210","template":{"id":"login"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("k", "s")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAPIEnqueue compares sends/s through the API (64 keep-alive
// clients, HTTP and JSON included, client and server in this process) with
// producer.Send called by 64 goroutines, on the same Redis; the ratio of
// their ns/op is the goal (api/producer ≤ 2). cpu-us/op is this
// process's CPU per send (client and server; Redis's own CPU excluded).
func BenchmarkAPIEnqueue(b *testing.B) {
	run := func(b *testing.B, send func() error) {
		b.SetParallelism((benchClients + 1) / max(1, runtimeProcs()))
		cpu := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := send(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
	}
	b.Run("api", func(b *testing.B) {
		_, url, client := benchSetup(b)
		run(b, func() error { return post(client, url, benchTo()) })
	})
	b.Run("producer", func(b *testing.B) {
		p, _, _ := benchSetup(b)
		run(b, func() error {
			_, err := p.Send(context.Background(), producer.Request{To: benchTo(), Code: "398210", TemplateID: "login"})
			return err
		})
	})
}

// BenchmarkAPILatencyAt1000rps paces requests at 1,000/s (open loop: each
// starts on its tick, however long the others take) and reports the
// latency percentiles; the goal is p99 ≤ 10 ms.
func BenchmarkAPILatencyAt1000rps(b *testing.B) {
	_, url, client := benchSetup(b)
	n := max(b.N, 2000)
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range n {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if err := post(client, url, benchTo()); err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(n-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
