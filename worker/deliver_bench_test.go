package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// BenchmarkDeliveryPath is one send's path, b.N times in a row, without
// asynq's servers (their timers would make instruction counts depend on
// wall time): Send enqueues it, the task is read back as asynq's dequeue
// reads it, and one attempt delivers it through an instant sender (no
// HTTP, so that otpq's own work is most of what is counted). Wall-clock
// figures of a shared machine are noise; count instructions instead, under
// cachegrind at two -test.benchtime=Nx values (see the closing note of
// issue 20 for the commands and figures).
func BenchmarkDeliveryPath(b *testing.B) { benchPath(b, nil) }

// benchPath runs BenchmarkDeliveryPath's loop; mod adjusts both configs.
func benchPath(b *testing.B, mod func(*producer.Config, *worker.Config)) {
	db := redistest.New(b)
	pcfg := producer.Config{RedisURL: db.URL(), DestinationLimit: -1}
	wcfg := worker.Config{RedisURL: db.URL(), Sender: &instantSender{}, Concurrency: 16,
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))}
	if mod != nil {
		mod(&pcfg, &wcfg)
	}
	p, err := producer.New(pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	w, err := worker.New(wcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Shutdown()
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	defer ins.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		id, err := p.Send(ctx, producer.Request{To: fmt.Sprintf("+86187%08d", i), Code: "123456", TemplateID: "login"})
		if err != nil {
			b.Fatal(err)
		}
		info, err := ins.GetTaskInfo(producer.QueueCritical, id)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Deliver(ctx, asynq.NewTaskWithHeaders(task.TypeSend, info.Payload, info.Headers), id, producer.QueueCritical); err != nil {
			b.Fatal(err)
		}
	}
}
