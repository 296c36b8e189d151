package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/otpq/otpq/producer"
)

// ---- 4. idle cost and latency ---------------------------------------------

type tapLatencies map[string][]int64

func (pr *provider) latencies() (tapLatencies, error) {
	resp, err := http.Get(pr.url + TapPath)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out tapLatencies
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// stampedSends sends critical requests at perSecond over shards shards
// until stop returns true, each stamped with its enqueue time.
func (e *env) stampedSends(ctx context.Context, perSecond, shards int, stop func(sent int) bool) (int, error) {
	p, err := producer.New(producer.Config{RedisURL: e.url, Shards: shards})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	sent := 0
	for !stop(sent) {
		<-tick.C
		req := benchRequest(5_000_000 + sent)
		req.Params = map[string]string{StampParam: strconv.FormatInt(time.Now().UnixNano(), 10), QueueParam: "critical"}
		if _, err := p.Send(ctx, req, producer.Queue(producer.QueueCritical)); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

func (e *env) collect(pr *provider, want int) []time.Duration {
	var all []int64
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l, err := pr.latencies()
		if err == nil {
			all = append(all, l["critical"]...)
		}
		if len(all) >= want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return sortedDurations(all)
}

// idleWindow is how long an idle worker's Redis commands are counted.
const idleWindow = 10 * time.Second

func (e *env) idle(ctx context.Context) error {
	sharded := shardedSide(e.cfg.Shards)
	g := e.rep.group(fmt.Sprintf("4. Idle: Redis commands per worker process (%s window, no tasks) and enqueue → provider latency (10 sends/s), at 1 and %d shards", idleWindow, e.cfg.Shards), "")
	pr, err := e.startProvider(ctx, "tap", 0)
	if err != nil {
		return err
	}
	defer pr.proc.stop()
	direct, err := e.capacity(ctx, pr, 1, time.Second)
	if err != nil {
		return err
	}
	lat := map[string][]time.Duration{}
	work := map[string]redisWork{}
	n := max(20, e.n(150))
	for _, s := range []side{otpqSide, sharded, base1Side} {
		if err := e.flush(ctx); err != nil {
			return err
		}
		w, err := e.worker(s, pr.url, 100)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		w0, err := e.redisWork(ctx)
		if err != nil {
			w.stop()
			return err
		}
		time.Sleep(idleWindow)
		w1, err := e.redisWork(ctx)
		if err != nil {
			w.stop()
			return err
		}
		work[s.name] = w1.since(w0)
		_, _ = pr.latencies()
		e.logf("  %s: %d sends at 10/s", s.name, n)
		if _, err := e.stampedSends(ctx, 10, max(s.shards, 1), func(sent int) bool { return sent >= n }); err != nil {
			w.stop()
			return err
		}
		lat[s.name] = e.collect(pr, n)
		w.stop()
	}
	b, bw := lat[base1Side.name], work[base1Side.name]
	secs := idleWindow.Seconds()
	bc, bt := bw.per(secs)
	for _, s := range []side{otpqSide, sharded} {
		o, ow := lat[s.name], work[s.name]
		oc, ot := ow.per(secs)
		label := ""
		if s.shards > 1 {
			label = fmt.Sprintf(", %d shards", s.shards)
		}
		g.row("Redis commands/s while idle"+label, fmt.Sprintf("%.0f", oc), s.name, fmt.Sprintf("%.0f", bc), base1Side.name,
			ratio(bc, oc), fmt.Sprintf("round trips/s: otpq %.0f, baseline %.0f. Commands/s, otpq: %s; baseline: %s", ot, bt, ow.top(6, secs), bw.top(6, secs)))
		for _, p := range []float64{50, 99} {
			g.row(fmt.Sprintf("p%.0f (%d sends)%s", p, len(o), label), fmtDur(percentile(o, p)), s.name, fmtDur(percentile(b, p)), base1Side.name,
				ratio(float64(percentile(b, p)), float64(percentile(o, p))), fmt.Sprintf("direct call: %s", fmtDur(percentile(direct.lat, p))))
		}
		g.row("max"+label, fmtDur(percentile(o, 100)), s.name, fmtDur(percentile(b, 100)), base1Side.name, "", "")
		e.rep.idle = append(e.rep.idle, idleResult{shards: max(s.shards, 1), cmds: oc, top: ow.top(6, secs),
			p50: percentile(o, 50), p99: percentile(o, 99)})
	}
	return nil
}

// ---- 5. critical during a bulk drain -------------------------------------

func (e *env) critical(ctx context.Context) error {
	backlog := e.n(100000)
	g := e.rep.group(fmt.Sprintf("5. Critical latency while a %s-task bulk backlog drains (instant provider, concurrency 100, 10 critical sends/s)", fmtInt(backlog)), "")
	pr, err := e.startProvider(ctx, "tap", 0)
	if err != nil {
		return err
	}
	defer pr.proc.stop()
	res := map[string][]time.Duration{}
	drain := map[string]string{}
	for _, s := range []side{otpqSide, base1Side} {
		if err := e.flush(ctx); err != nil {
			return err
		}
		if err := e.preload(ctx, backlog, producer.QueueBulk); err != nil {
			return err
		}
		_, _ = pr.latencies()
		w, err := e.worker(s, pr.url, 100)
		if err != nil {
			return err
		}
		t0 := time.Now()
		left := func() int64 { n, _ := e.rdb.LLen(ctx, "asynq:{bulk}:pending").Result(); return n }
		sent, err := e.stampedSends(ctx, 10, 1, func(sent int) bool {
			return time.Since(t0) > 1*time.Second && (left() < int64(backlog/10) || time.Since(t0) > 15*time.Second)
		})
		if err != nil {
			w.stop()
			return err
		}
		el := time.Since(t0)
		drain[s.name] = fmt.Sprintf("%s bulk tasks drained in %s", fmtInt(backlog-int(left())), el.Round(100*time.Millisecond))
		res[s.name] = e.collect(pr, sent)
		w.stop()
	}
	o, b := res[otpqSide.name], res[base1Side.name]
	for _, p := range []float64{50, 99} {
		g.row(fmt.Sprintf("critical p%.0f (%d sends)", p, len(o)), fmtDur(percentile(o, p)), "otpq worker (strict priority)", fmtDur(percentile(b, p)),
			"hand-written asynq handler (weighted 10:1)", ratio(float64(percentile(b, p)), float64(percentile(o, p))), "")
	}
	g.row("critical max", fmtDur(percentile(o, 100)), "otpq worker", fmtDur(percentile(b, 100)), "hand-written asynq handler", "",
		"otpq: "+drain[otpqSide.name]+"; baseline: "+drain[base1Side.name]+". The baseline's weighted fetch tries critical first on 10 of 11 fetches, so it too takes a waiting critical task at the next free slot; strict priority makes that 11 of 11 whatever the weights.")
	e.rep.criticalP99 = percentile(o, 99)
	return e.flush(ctx)
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
