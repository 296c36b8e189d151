package ops_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
)

// commandsProcessed is the Redis server's count of commands so far.
func commandsProcessed(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no total_commands_processed in INFO stats")
	return 0
}

// /metrics scraped in a loop (no auth; issue 16 row 13) costs Redis about
// one reading of the queues, not one per scrape. Counted on a Redis of the
// test's own, where nothing else runs commands.
func TestScrapeLoopCostBounded(t *testing.T) {
	srv := redistest.StartServer(t)
	opt := asynq.RedisClientOpt{Addr: srv.Addr}
	client := asynq.NewClient(opt)
	defer client.Close()
	for _, q := range []string{task.QueueCritical, task.QueueBulk} {
		_, err := client.Enqueue(asynq.NewTask(task.TypeSend, []byte(`{}`)), asynq.Queue(q))
		require.NoError(t, err)
	}
	b := setupOpsOnly(t, opt)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	scrape := func() {
		status, body := b.do(t, http.MethodGet, "/metrics", false)
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, body, `asynq_queue_size{queue="critical"} 1`)
	}

	before := commandsProcessed(t, rdb)
	scrape()
	one := commandsProcessed(t, rdb) - before - 1 // minus the INFO
	before += one + 1
	for i := 0; i < 19; i++ {
		scrape()
	}
	rest := commandsProcessed(t, rdb) - before - 1
	t.Logf("Redis commands: first scrape %d, next 19 scrapes %d", one, rest)
	require.Greater(t, one, 5, "the first scrape did not read the queues")
	// At most one more reading (the cache may expire once on a slow machine).
	require.LessOrEqual(t, rest, one, "19 more scrapes cost more than one reading of the queues")
}
