package ops_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
)

// TestUIShardedSingleNode: 4 shards on one Redis. Tasks in a shard other
// than shard 0 show in the UI as in an unsharded queue: a dead letter's
// summary in its list and its details, a delivered task's receipt in its
// result; /metrics counts them under their class.
func TestUIShardedSingleNode(t *testing.T) {
	testUISharded(t, options{ops: withReceipts(t), shards: 4})
}

// TestUIShardedCluster: the same on a 3-master Redis Cluster.
func TestUIShardedCluster(t *testing.T) {
	testUISharded(t, options{ops: withReceipts(t), shards: 4, cluster: true})
}

func testUISharded(t *testing.T, o options) {
	const deliveredTo, rejectedTo = "+8613800000031", "+8613800000032"
	b := setup(t, o)
	b.fake.SetRules(fakeengagelab.Rule{To: rejectedTo, Status: 400, Code: 5013})
	// IDs (dedup keys) routed to shards other than shard 0.
	ids := map[string]string{}
	for i := 0; len(ids) < 2; i++ {
		id := fmt.Sprintf("ui-shard-%d", i)
		if shard.Index(id, o.shards) == 0 {
			continue
		}
		if _, ok := ids[deliveredTo]; !ok {
			ids[deliveredTo] = id
		} else if shard.Index(id, o.shards) != shard.Index(ids[deliveredTo], o.shards) {
			ids[rejectedTo] = id
		}
	}
	delivered, rejected := ids[deliveredTo], ids[rejectedTo]
	dq, rq := shard.Queue(task.QueueCritical, delivered, o.shards), shard.Queue(task.QueueCritical, rejected, o.shards)
	require.Equal(t, delivered, b.send(t, deliveredTo, producer.DedupKey(delivered)))
	require.Equal(t, rejected, b.send(t, rejectedTo, producer.DedupKey(rejected)))
	b.waitState(t, rq, rejected, asynq.TaskStateArchived)
	info := b.waitState(t, dq, delivered, asynq.TaskStateCompleted)
	t.Logf("delivered task in %s, dead letter in %s", dq, rq)

	// The dead letter leads with its verdict, in its list and its details.
	want := "dead letter · engagelab 5013: Number has been blacklisted\n\nto +861*******032 · template login\n"
	var archived taskList
	b.getJSON(t, "/queues/"+rq+"/archived_tasks?page=1&page_size=100", &archived)
	require.Len(t, archived.Tasks, 1)
	require.Equal(t, rejected, archived.Tasks[0].ID)
	require.True(t, strings.HasPrefix(unwrap(archived.Tasks[0].Payload), want), archived.Tasks[0].Payload)
	var detail struct {
		State   string `json:"state"`
		Queue   string `json:"queue"`
		Payload string `json:"payload"`
		Result  string `json:"result"`
	}
	b.getJSON(t, "/queues/"+rq+"/tasks/"+rejected, &detail)
	require.Equal(t, "archived", detail.State)
	require.True(t, strings.HasPrefix(unwrap(detail.Payload), want), detail.Payload)

	// The delivered task's result leads with its receipt, found in its shard.
	var res task.Result
	require.NoError(t, json.Unmarshal(info.Result, &res))
	b.postReceipt(t, res.MessageID, deliveredTo, "delivered", 0)
	var completed taskList
	b.getJSON(t, "/queues/"+dq+"/completed_tasks?page=1&page_size=100", &completed)
	require.Len(t, completed.Tasks, 1)
	for _, shown := range []string{completed.Tasks[0].Result, func() string {
		b.getJSON(t, "/queues/"+dq+"/tasks/"+delivered, &detail)
		return detail.Result
	}()} {
		require.True(t, strings.HasPrefix(shown, "delivered · sms"), "the result leads with the receipt's verdict:\n%s", shown)
		require.Contains(t, shown, "\nmessage_id: "+res.MessageID+"\n")
		require.Contains(t, shown, "\nreceipt: delivered\n")
		require.NotContains(t, shown, deliveredTo)
	}

	// asynqmon lists each shard queue on its own; the metrics sum them
	// under their class.
	queues := b.getJSON(t, "/queues", nil)
	require.Contains(t, queues, `"queue":"`+dq+`"`)
	require.Contains(t, queues, `"queue":"`+rq+`"`)
	_, metrics := b.do(t, http.MethodGet, "/metrics", false)
	for _, line := range []string{
		`asynq_tasks_enqueued_total{queue="critical",state="archived"} 1`,
		`asynq_tasks_enqueued_total{queue="critical",state="completed"} 1`,
		`otpq_shard_queue_size{queue="critical",shard="` + rq + `"} 1`,
		`otpq_receipts_total{channel="sms",status="delivered"} 1`,
	} {
		require.Contains(t, metrics, line+"\n")
	}
	require.NotContains(t, metrics, `asynq_queue_size{queue="`+dq+`"}`)
}
