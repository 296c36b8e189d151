package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/bulk"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
)

// ---- 1. enqueue rate --------------------------------------------------

type enqueueResult struct {
	rate float64
	mem  int64 // Redis bytes per call
}

// measureEnqueue flushes Redis and runs one(0..n-1) on workers goroutines.
func (e *env) measureEnqueue(ctx context.Context, n, workers int, one func(i int) error) (enqueueResult, error) {
	if err := e.flush(ctx); err != nil {
		return enqueueResult{}, err
	}
	before := e.usedMemory(ctx)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := one(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return enqueueResult{}, err
	}
	return enqueueResult{rate: float64(n) / el.Seconds(), mem: (e.usedMemory(ctx) - before) / int64(n)}, nil
}

func (e *env) enqueue(ctx context.Context) error {
	g := e.rep.group("1. Enqueue rate", "rows/s")
	client := asynq.NewClientFromRedisClient(e.rdb)
	payload, _ := task.Encode(task.Payload{To: dest(0), Code: "123456", Template: task.Template{ID: "bench"},
		ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()})
	baseOne := func(int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(task.TypeSend, payload), asynq.Queue(task.QueueBulk))
		return err
	}
	p, err := producer.New(producer.Config{RedisURL: e.url})
	if err != nil {
		return err
	}
	defer p.Close()
	sendOne := func(i int) error {
		_, err := p.Send(ctx, benchRequest(i), producer.Queue(producer.QueueBulk))
		return err
	}

	n1, n64 := e.n(5000), e.n(100000)
	b1, err := e.measureEnqueue(ctx, n1, 1, baseOne)
	if err != nil {
		return err
	}
	o1, err := e.measureEnqueue(ctx, n1, 1, sendOne)
	if err != nil {
		return err
	}
	g.row("1 goroutine", fmtRate(o1.rate), "producer.Send", fmtRate(b1.rate), "asynq Client.Enqueue loop", ratio(o1.rate, b1.rate), "")
	b64, err := e.measureEnqueue(ctx, n64, 64, baseOne)
	if err != nil {
		return err
	}
	o64, err := e.measureEnqueue(ctx, n64, 64, sendOne)
	if err != nil {
		return err
	}
	g.row("64 goroutines", fmtRate(o64.rate), "producer.Send", fmtRate(b64.rate), "asynq Client.Enqueue", ratio(o64.rate, b64.rate),
		"Send also runs the per-destination guard script (a second Redis call per send)")

	ob, err := e.sendBatch(ctx, 0)
	if err != nil {
		return err
	}
	obNoGuard, err := e.sendBatch(ctx, -1)
	if err != nil {
		return err
	}
	g.row("SendBatch (5,000 per call)", fmtRate(ob.rate), "producer.SendBatch", fmtRate(b64.rate), "asynq Client.Enqueue, 64 goroutines", ratio(ob.rate, b64.rate),
		fmt.Sprintf("%s with the destination guard off (DestinationLimit -1)", fmtRate(obNoGuard.rate)))

	if err := e.bulkFile(ctx, g, b64.rate); err != nil {
		return err
	}
	g5 := e.rep.group5()
	g5.row("Redis bytes per queued task", fmtBytes(o64.mem), "producer.Send (incl. its destination-guard key)", fmtBytes(b64.mem), "asynq Client.Enqueue",
		ratio(float64(b64.mem), float64(o64.mem)), fmt.Sprintf("SendBatch without guard: %s", fmtBytes(obNoGuard.mem)))
	return e.flush(ctx)
}

// sendBatch measures SendBatch in calls of 5,000 with the given
// DestinationLimit; rate and memory are per send.
func (e *env) sendBatch(ctx context.Context, guard int) (enqueueResult, error) {
	nb := e.n(200000)
	bp, err := producer.New(producer.Config{RedisURL: e.url, DestinationLimit: guard})
	if err != nil {
		return enqueueResult{}, err
	}
	defer bp.Close()
	const size = 5000
	chunks := (nb + size - 1) / size
	res, err := e.measureEnqueue(ctx, chunks, 1, func(c int) error {
		reqs := make([]producer.Request, 0, size)
		for i := c * size; i < min(nb, (c+1)*size); i++ {
			reqs = append(reqs, benchRequest(i))
		}
		for _, r := range bp.SendBatch(ctx, reqs, producer.Queue(producer.QueueBulk)) {
			if r.Err != nil {
				return r.Err
			}
		}
		return nil
	})
	res.rate *= float64(nb) / float64(chunks)
	res.mem = res.mem * int64(chunks) / int64(nb)
	return res, err
}

// bulkFile runs `otpq bulk` on a CSV file in its own process, guard on and
// off, and profiles the same code path (internal/bulk + producer) in this
// process on a smaller file.
func (e *env) bulkFile(ctx context.Context, g *group, baseRate float64) error {
	rows := e.n(1000000)
	path := filepath.Join(e.dir, "bulk.csv")
	if err := writeCSV(path, rows); err != nil {
		return err
	}
	e.logf("  otpq bulk, %d rows", rows)
	r, err := e.runBulk(ctx, path, rows, "bulk")
	if err != nil {
		return err
	}
	g.row(fmt.Sprintf("otpq bulk, %s-row CSV file", fmtInt(rows)), fmtRate(r.rate), "otpq bulk (own process, wall clock incl. start)",
		fmtRate(baseRate), "asynq Client.Enqueue, 64 goroutines", ratio(r.rate, baseRate),
		fmt.Sprintf("peak RSS %s; CPU: otpq bulk %s, redis-server %s over %s wall", fmtBytes(r.rss), r.cpu.Round(10*time.Millisecond),
			r.redisCPU.Round(10*time.Millisecond), r.wall.Round(10*time.Millisecond)))
	e.rep.bulkSummary, e.rep.bulkRows = r.summary, rows
	e.rep.bulkRate, e.rep.bulkRSS = r.rate, r.rss
	e.rep.bulkBound = r.bound()

	e.logf("  otpq bulk --destination-limit -1, %d rows", rows)
	r2, err := e.runBulk(ctx, path, rows, "bulk-noguard", "--destination-limit", "-1")
	if err != nil {
		return err
	}
	g.row("otpq bulk --destination-limit -1, same file", fmtRate(r2.rate), "otpq bulk, guard off",
		fmtRate(baseRate), "asynq Client.Enqueue, 64 goroutines", ratio(r2.rate, baseRate), fmt.Sprintf("peak RSS %s", fmtBytes(r2.rss)))
	e.rep.bulkRateNoGuard = r2.rate

	e.rep.bulkProfileRows = e.n(200000)
	prof, err := e.profileBulk(ctx, e.rep.bulkProfileRows)
	if err != nil {
		return err
	}
	e.rep.bulkProfile = prof
	return nil
}

// bulkRun is what one `otpq bulk` run measured.
type bulkRun struct {
	rows                         int
	rate                         float64 // rows per second, wall clock incl. start
	rss                          int64   // peak RSS of otpq bulk
	cpu, redisCPU, machine, wall time.Duration
	work                         redisWork // Redis's work over the run
	summary                      string    // otpq bulk's summary line
}

// runBulk runs `otpq bulk` in its own process on the file at path (rows
// rows) with extra flags, on a flushed Redis, and measures it.
func (e *env) runBulk(ctx context.Context, path string, rows int, name string, extra ...string) (bulkRun, error) {
	r := bulkRun{rows: rows}
	if err := e.flush(ctx); err != nil {
		return r, err
	}
	args := append(append([]string{"bulk", "--progress-interval", "0", "--expires-in", "1h"}, extra...), path)
	w0, err := e.redisWork(ctx)
	if err != nil {
		return r, err
	}
	m0, t0, redis0 := machineBusy(), time.Now(), cpuTime(e.redis.Pid())
	bp, err := start(e.dir, name, []string{"OTPQ_REDIS_URL=" + e.url}, e.cfg.Otpq, args...)
	if err != nil {
		return r, err
	}
	werr := bp.wait(ctx)
	r.wall = time.Since(t0)
	r.redisCPU = cpuTime(e.redis.Pid()) - redis0
	r.machine = machineBusy() - m0
	w1, err := e.redisWork(ctx)
	if err != nil {
		return r, err
	}
	r.work = w1.since(w0)
	data, _ := os.ReadFile(bp.log)
	if werr != nil {
		return r, fmt.Errorf("otpq bulk: %w: %s", werr, lastLines(string(data), 10))
	}
	if ps := bp.cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	r.rate, r.rss, r.summary = float64(rows)/r.wall.Seconds(), bp.maxRSS(), strings.TrimSpace(string(data))
	return r, nil
}

// profileBulk runs internal/bulk with a producer, guard on — what `otpq
// bulk FILE` runs — in this process on a file of n rows under the CPU
// profiler, and returns pprof's top. (Profiling here keeps a profiling
// flag out of the otpq binary; the measured rate above is otpq's own.)
func (e *env) profileBulk(ctx context.Context, n int) (string, error) {
	e.logf("  bulk CPU profile, %d rows in process", n)
	path := filepath.Join(e.dir, "bulk-profile.csv")
	if err := writeCSV(path, n); err != nil {
		return "", err
	}
	if err := e.flush(ctx); err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	rd, err := bulk.NewReader(f, path, bulk.FormatAuto, "")
	if err != nil {
		return "", err
	}
	p, err := producer.New(producer.Config{RedisURL: e.url})
	if err != nil {
		return "", err
	}
	defer p.Close()
	top, err := e.profile("bulk", func() error {
		_, err := bulk.Run(ctx, bulk.Config{Reader: rd, Sender: p, Rejects: io.Discard,
			Options: []producer.Option{producer.Queue(producer.QueueBulk), producer.ExpiresIn(time.Hour)}})
		return err
	})
	if err != nil {
		return "", err
	}
	return top, e.flush(ctx)
}

func writeCSV(path string, rows int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "to,code,template,language,param.name")
	for i := range rows {
		fmt.Fprintf(w, "%s,%06d,bench,en,User%d\n", dest(i), i%1000000, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// bound says where a guarded bulk run's time went: each process's cores
// and CPU per row, Redis's commands and time per row, and the rate
// redis-server's CPU per row allows (it runs commands on one thread).
func (r bulkRun) bound() string {
	if r.rows <= 0 || r.wall <= 0 {
		return ""
	}
	n := float64(r.rows)
	perRow := func(d time.Duration) string { return fmtDur(d / time.Duration(r.rows)) }
	cmds, trips := r.work.per(n)
	ceiling := ""
	if r.redisCPU > 0 {
		ceiling = fmt.Sprintf(" At %s of redis-server CPU per row, one Redis thread allows at most %s on this machine.",
			perRow(r.redisCPU), fmtRate(n/r.redisCPU.Seconds()))
	}
	return fmt.Sprintf("Over the guarded run (%s wall): redis-server %.2f cores (%s CPU per row), otpq bulk %.2f cores (%s per row), machine %.2f of %d. "+
		"Redis per row: %.1f commands in %.3f round trips (%s); time inside Redis per row: %s.%s The bulk CPU profile below shows the client's share.",
		r.wall.Round(10*time.Millisecond), r.redisCPU.Seconds()/r.wall.Seconds(), perRow(r.redisCPU), r.cpu.Seconds()/r.wall.Seconds(), perRow(r.cpu),
		r.machine.Seconds()/r.wall.Seconds(), runtime.NumCPU(), cmds, trips, r.work.top(8, n), r.work.topTime(8, n), ceiling)
}
