package worker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// TestKeyLoadPerDelivery watches Redis (MONITOR, on a Redis of the test's
// own) while 500 sends are enqueued, delivered by a worker with the global
// rate limit on, then given a delivered receipt each through the callback
// route, and logs, per phase, how many commands (script-inner ones
// included) name each key pattern per send, delivery or receipt: the
// figures of README "Scaling past one Redis". It requires that the only
// keys outside every queue's hash tag and every task's own key that a
// phase touches once or more per unit are the rate limiter's
// (otpq:rate:send, per delivery) and the receipt stream (otpq:receipts,
// per receipt): no other single key carries load that shards cannot
// spread.
func TestKeyLoadPerDelivery(t *testing.T) {
	const n = 500
	srv := redistest.StartServer(t)
	ctx := context.Background()
	mon := startMonitor(t, srv.Addr)
	// The test's own commands (markers, polls) come from this client, with
	// one connection, and are left out.
	own := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
	t.Cleanup(func() { own.Close() })
	info, err := own.ClientInfo(ctx).Result()
	require.NoError(t, err)
	mon.skip(info.Addr)
	phase := func(name string) { require.NoError(t, own.Echo(ctx, "phase "+name).Err()) }

	p, err := producer.New(producer.Config{Redis: redisOpt(srv.Addr)})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	phase("send")
	for i := range n {
		_, err := p.Send(ctx, producer.Request{To: fmt.Sprintf("+1555%07d", i), Code: canaryCode, TemplateID: "login"})
		require.NoError(t, err)
	}

	phase("delivery")
	sender := &recordingSender{to: map[string]string{}}
	w, err := worker.New(worker.Config{Redis: redisOpt(srv.Addr), Sender: sender, RateLimit: 100000, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	require.NoError(t, w.Start())
	require.Eventually(t, func() bool {
		c, err := own.ZCard(ctx, "asynq:{"+task.QueueCritical+"}:completed").Result()
		return err == nil && c == n
	}, 120*time.Second, 50*time.Millisecond)
	w.Shutdown()

	phase("receipt")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	recv, err := receipts.NewReceiver(receipts.Config{Redis: rdb, Credentials: receipts.Credentials{Username: "cb", Secret: "cb-secret"}, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	for mid, to := range sender.to {
		body := fmt.Sprintf(`{"total":1,"rows":[{"message_id":%q,"to":%q,"channel":"sms","itime":%d,"status":{"message_status":"delivered","status_data":{"current_send_channel":"sms"},"error_code":0}}]}`,
			mid, to, time.Now().Unix())
		req := httptest.NewRequest(http.MethodPost, receipts.Path, strings.NewReader(body))
		req.Header.Set(receipts.HeaderCallbackID, receipts.NewCallbackID("cb-secret", "cb", "nonce-"+mid, time.Now()).String())
		rec := httptest.NewRecorder()
		recv.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	entries, err := own.XLen(ctx, receipts.StreamKey).Result()
	require.NoError(t, err)
	require.EqualValues(t, n, entries, "one stream entry per receipt")
	phase("end")

	loads := mon.stop(t)
	allowed := map[string]string{"delivery": "otpq:rate:send", "receipt": "otpq:receipts"}
	for _, ph := range []string{"send", "delivery", "receipt"} {
		l := loads[ph]
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %.1f commands per %s\n", ph, float64(l.total)/n, ph)
		fmt.Fprintf(&b, "  %-44s %-10s %s\n", "key pattern", "scope", "commands per "+ph)
		pats := make([]string, 0, len(l.byPattern))
		for k := range l.byPattern {
			pats = append(pats, k)
		}
		sort.Slice(pats, func(i, j int) bool {
			return l.byPattern[pats[i]] > l.byPattern[pats[j]] || l.byPattern[pats[i]] == l.byPattern[pats[j]] && pats[i] < pats[j]
		})
		for _, k := range pats {
			per := float64(l.byPattern[k]) / n
			fmt.Fprintf(&b, "  %-44s %-10s %.3f\n", k, scope(k), per)
			if scope(k) == "single" && per >= 1 {
				require.Equal(t, allowed[ph], k, "%s: a single key carries %.2f commands per %s", ph, per, ph)
			}
		}
		t.Log(b.String())
		if k := allowed[ph]; k != "" {
			require.GreaterOrEqual(t, float64(l.byPattern[k])/n, 1.0, "%s: %s", ph, k)
		}
	}
}

// redisOpt is the asynq option of a Redis address.
func redisOpt(addr string) asynq.RedisClientOpt { return asynq.RedisClientOpt{Addr: addr} }

// recordingSender answers at once and records each message_id's
// destination.
type recordingSender struct {
	mu sync.Mutex
	to map[string]string
}

func (s *recordingSender) Send(_ context.Context, req worker.SendRequest) (*worker.SendResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mid := "m" + strconv.Itoa(len(s.to)+1)
	s.to[mid] = req.To
	return &worker.SendResponse{MessageID: mid, SendChannel: "sms"}, nil
}

// scope of a key pattern: "single" (one key for the whole deployment),
// "per shard" (one per queue: spread by sharding), "per item" (one per
// task, destination, message or callback).
func scope(pattern string) string {
	switch {
	case strings.Contains(pattern, "<"):
		if rest := strings.NewReplacer("{<queue>}", "", "<date>", "").Replace(pattern); strings.Contains(pattern, "{<queue>}") && !strings.Contains(rest, "<") {
			return "per shard"
		}
		return "per item"
	}
	return "single"
}

var (
	dateSeg = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	digits  = regexp.MustCompile(`\d`)
	hexID   = regexp.MustCompile(`^[0-9a-f-]{16,}$`)
)

// keyPattern is key with its queue hash tag, task IDs, hashes and dates
// replaced by placeholders.
func keyPattern(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i:], '}'); j > 0 {
			tag, rep := key[i+1:i+j], ""
			switch {
			case shard.ClassOf(tag) != "":
				rep = "{<queue>}"
			case digits.MatchString(tag):
				rep = "{<id>}"
			default:
				rep = "{" + tag + "}"
			}
			key = key[:i] + rep + key[i+j+1:]
		}
	}
	segs := strings.Split(key, ":")
	for i, s := range segs {
		switch {
		case i == 0 || strings.HasPrefix(s, "{"):
		case dateSeg.MatchString(s):
			segs[i] = "<date>"
		case digits.MatchString(s) || hexID.MatchString(s):
			segs[i] = "<id>"
		}
	}
	return strings.Join(segs, ":")
}

// monitor reads MONITOR's stream of commands and counts, per phase (split
// by the test's ECHO "phase <name>" markers), the commands naming each key
// pattern.
type monitor struct {
	conn  net.Conn
	mu    sync.Mutex
	own   string
	lines []string
	done  chan struct{}
}

type phaseLoad struct {
	total     int
	byPattern map[string]int
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	r := bufio.NewReaderSize(c, 1<<20)
	ok, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", ok)
	m := &monitor{conn: c, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, strings.TrimRight(line, "\r\n"))
			stop := strings.Contains(line, `"phase end"`)
			m.mu.Unlock()
			if stop {
				return
			}
		}
	}()
	return m
}

// skip leaves out the commands of the client at addr (the test's own).
func (m *monitor) skip(addr string) { m.mu.Lock(); m.own = addr; m.mu.Unlock() }

// stop waits for the "phase end" marker and counts.
func (m *monitor) stop(t *testing.T) map[string]*phaseLoad {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("MONITOR never showed the end marker")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*phaseLoad{}
	ph := ""
	for _, line := range m.lines {
		src, args, ok := parseMonitorLine(line)
		if !ok || len(args) == 0 {
			continue
		}
		if src == m.own {
			if strings.EqualFold(args[0], "echo") && len(args) == 2 && strings.HasPrefix(args[1], "phase ") {
				ph = strings.TrimPrefix(args[1], "phase ")
			}
			continue
		}
		if ph == "" || ph == "end" {
			continue
		}
		l := out[ph]
		if l == nil {
			l = &phaseLoad{byPattern: map[string]int{}}
			out[ph] = l
		}
		l.total++
		seen := map[string]bool{}
		for _, k := range commandKeys(args) {
			if p := keyPattern(k); !seen[p] {
				seen[p] = true
				l.byPattern[p]++
			}
		}
	}
	return out
}

// commandKeys are the keys a command names: KEYS of a script call, else
// every argument that is an asynq or otpq key.
func commandKeys(args []string) []string {
	isKey := func(s string) bool { return strings.HasPrefix(s, "asynq:") || strings.HasPrefix(s, "otpq:") }
	switch strings.ToLower(args[0]) {
	case "eval", "evalsha", "evalsha_ro", "eval_ro", "fcall":
		if len(args) < 3 {
			return nil
		}
		nk, err := strconv.Atoi(args[2])
		if err != nil || 3+nk > len(args) {
			return nil
		}
		return args[3 : 3+nk]
	}
	var keys []string
	for _, a := range args[1:] {
		if isKey(a) {
			keys = append(keys, a)
		}
	}
	return keys
}

// parseMonitorLine splits `+<time> [<db> <source>] "ARG" "arg"…` into its
// source (client address, or "lua") and arguments.
func parseMonitorLine(line string) (src string, args []string, ok bool) {
	open := strings.IndexByte(line, '[')
	end := strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return "", nil, false
	}
	if _, s, found := strings.Cut(line[open+1:end], " "); found {
		src = s
	}
	rest := line[end+1:]
	for {
		q := strings.IndexByte(rest, '"')
		if q < 0 {
			return src, args, true
		}
		var b strings.Builder
		i := q + 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'x':
					if i+2 < len(rest) {
						if v, err := strconv.ParseUint(rest[i+1:i+3], 16, 8); err == nil {
							b.WriteByte(byte(v))
						}
						i += 2
					}
					continue
				case 'n':
					b.WriteByte('\n')
					continue
				case 'r':
					b.WriteByte('\r')
					continue
				case 't':
					b.WriteByte('\t')
					continue
				}
			}
			b.WriteByte(rest[i])
		}
		args = append(args, b.String())
		if i >= len(rest) {
			return src, args, true
		}
		rest = rest[i+1:]
	}
}
