//go:build fault

package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/producer"
)

// apiClients posts to `otpq api` from several keep-alive clients, each
// request to a fresh destination, until stopped; a 200 is an accepted task
// of the bundle, anything else is counted by kind.
type apiClients struct {
	wg      sync.WaitGroup
	stop    chan struct{}
	mu      sync.Mutex
	ok      int
	retry   int            // 503 with code 1000 and a Retry-After: the client retries
	other   map[string]int // any other answer, or none
	slowest time.Duration
}

func (b *bundle) postToAPI(url string, clients int) *apiClients {
	c := &apiClients{stop: make(chan struct{}), other: map[string]int{}}
	hc := &http.Client{Timeout: 15 * time.Second}
	for w := range clients {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-c.stop:
					return
				default:
				}
				to := b.nextTo()
				body := fmt.Sprintf(`{"to":%q,"code":"%06d","template":{"id":"login"}}`, to, 300000+i)
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/codes", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("fault-%d-%d", w, i))
				req.SetBasicAuth("fault-key", "fault-secret")
				began := time.Now()
				resp, err := hc.Do(req)
				took := time.Since(began)
				var ans struct {
					MessageID string `json:"message_id"`
					Code      int    `json:"code"`
				}
				kind := ""
				switch {
				case err != nil:
					kind = "no answer"
				default:
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					_ = json.Unmarshal(raw, &ans)
					switch {
					case resp.StatusCode == 200 && ans.MessageID != "":
						b.mu.Lock()
						b.accepted = append(b.accepted, sent{id: ans.MessageID, to: to, queue: producer.QueueCritical})
						b.mu.Unlock()
					case resp.StatusCode == 503 && ans.Code == 1000 && resp.Header.Get("Retry-After") != "":
						kind = "retry"
					default:
						kind = fmt.Sprintf("%d code %d", resp.StatusCode, ans.Code)
					}
				}
				c.mu.Lock()
				c.slowest = max(c.slowest, took)
				switch kind {
				case "":
					c.ok++
				case "retry":
					c.retry++
				default:
					c.other[kind]++
				}
				c.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return c
}

func (c *apiClients) halt() {
	close(c.stop)
	c.wg.Wait()
}

// TestAPIRedisKilledWhileClientsPost: Redis (AOF, appendfsync always) is
// killed with SIGKILL and restarted while HTTP clients post to `otpq api`.
// Every 200 must be delivered; every other answer must be a 503 (code
// 1000, Retry-After) that the client can retry.
func TestAPIRedisKilledWhileClientsPost(t *testing.T) {
	rep := newReport(t, 15, "Redis killed (`kill -9`, AOF) and restarted while 4 HTTP clients post to `otpq api`", "every 200 delivered (lost 0); every other answer a retryable 503 (code 1000, Retry-After); duplicates 0 (re-sent 0)")
	b := setup(t, setupOpts{aof: true, latency: 20 * time.Millisecond})
	w := b.startWorker("--concurrency", "20")
	keys := filepath.Join(t.TempDir(), "api-keys")
	require.NoError(t, os.WriteFile(keys, []byte("fault:fault-key:fault-secret\n"), 0o600))
	port, err := redisserver.FreePort()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	api := startProc(t, "api", env.bin, []string{"OTPQ_REDIS_URL=" + b.redis.url(), "OTPQ_API_KEYS_FILE=" + keys},
		"api", "--api-addr", addr, "--log-format", "json")
	waitFor(t, 15*time.Second, func() bool { return strings.Contains(api.log(), `"api listening"`) },
		func() string { return "otpq api to listen:\n" + api.log() })

	clients := b.postToAPI("http://"+addr, 4)
	b.waitDelivered(50, 30*time.Second)
	require.NoError(t, b.redis.srv.Kill())
	time.Sleep(2 * time.Second)
	require.NoError(t, b.redis.srv.Restart(context.Background()))
	time.Sleep(2 * time.Second)
	clients.halt()

	tasks := b.all()
	f := b.settle(tasks, 150*time.Second)
	rep.figure("%d answered 200, %d answered 503 (code 1000, Retry-After) while Redis was down, %d other answers %v; slowest answer %s; lost %d, delivered %d, dead-lettered %d, duplicates %d, re-sent %d; api and worker kept running: %v, %v",
		clients.ok, clients.retry, len(clients.other), clients.other, clients.slowest.Round(10*time.Millisecond), f.Lost, f.Delivered, f.DeadLettered, f.Duplicates, f.Resent, api.running(), w.running())
	t.Log(f)
	require.Positive(t, clients.retry, "no request was refused while Redis was down: the outage did not happen")
	require.Empty(t, clients.other, "every answer but 200 is a retryable 503")
	require.Zero(t, f.Lost, "lost: %s", f)
	require.Equal(t, clients.ok, f.Delivered, "every 200 delivered: %s", f)
	// A Redis fault never resends (as in row 3): each accepted send is one
	// provider call.
	require.Zero(t, f.Duplicates, "duplicates: %s", f)
	require.Zero(t, f.Resent, "re-sent: %s", f)
	require.True(t, api.running(), "otpq api exited when Redis was killed:\n%s", api.log())
	requireJSONLog(t, api.log())
}
