package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/shard"
)

// ---- the capacity model (sections 8–10) -----------------------------------

// shardsPerMaster is how many of the first n shards of class each of
// masters masters holds, the slots split as redis-cli splits them
// (redisserver.SlotRanges).
func shardsPerMaster(class string, n, masters int) []int {
	ranges := redisserver.SlotRanges(masters)
	per := make([]int, masters)
	for _, q := range shard.Names(class, n) {
		s := shard.Slot(q)
		for m, r := range ranges {
			if s <= r[1] {
				per[m]++
				break
			}
		}
	}
	return per
}

// busiestHeld is the most shards of one class any master holds, over both
// classes: the busiest master's part of a class's load is busiestHeld/n
// when tasks spread evenly over the shards (xxHash64 of the task ID).
func busiestHeld(n, masters int) int {
	m := 0
	for _, c := range shard.Classes {
		for _, x := range shardsPerMaster(c, n, masters) {
			m = max(m, x)
		}
	}
	return m
}

// redisBound is the deliveries/s at which the busiest master's
// redis-server thread is saturated, at perDelivery redis-server CPU per
// delivery, n shards over masters masters.
func redisBound(perDelivery time.Duration, n, masters int) float64 {
	if perDelivery <= 0 {
		return 0
	}
	perMaster := float64(time.Second) / float64(perDelivery)
	return perMaster * float64(n) / float64(busiestHeld(n, masters))
}

// modelMasters and modelShards are the rows and columns of the model.
var (
	modelMasters = []int{1, 3, 10, 30}
	modelShards  = []int{16, 64, 128}
)

// planRate is the paper plan's load: one million codes a minute.
const planRate = 1e6 / 60.0

// planHeadroom is the share of a core the plan lets a busy process use.
const planHeadroom = 0.5

// plan is the paper plan for planRate: the fewest masters at 16 shards
// whose busiest master stays at planHeadroom of a core, and the worker
// cores at workerCPU per delivery.
type plan struct {
	masters, shards, held int
	busiestLoad           float64 // the busiest master's share of a core at planRate
	workerCores           float64
	processes             int // of 2 cores each, at planHeadroom
}

func newPlan(redisCPU, workerCPU time.Duration, shards int) (plan, bool) {
	if redisCPU <= 0 || workerCPU <= 0 {
		return plan{}, false
	}
	for k := 1; k <= shards; k++ {
		b := redisBound(redisCPU, shards, k)
		if planRate <= planHeadroom*b {
			p := plan{masters: k, shards: shards, held: busiestHeld(shards, k), busiestLoad: planRate / b,
				workerCores: planRate * workerCPU.Seconds()}
			p.processes = int(math.Ceil(p.workerCores / (2 * planHeadroom)))
			return p, true
		}
	}
	return plan{}, false
}

// single is a global key's load in the plan, in cores.
type single struct {
	what, per string
	load      float64
}

// extraMasters is how many masters of their own the single keys need:
// none when each fits beside the busiest master's shards within the
// headroom, else one for those that do not when they fit together on
// it, else one each.
func extraMasters(singles []single, busiest float64) int {
	var over []float64
	sum := 0.0
	for _, x := range singles {
		if x.load+busiest > planHeadroom {
			over = append(over, x.load)
			sum += x.load
		}
	}
	switch {
	case len(over) == 0:
		return 0
	case sum <= planHeadroom:
		return 1
	default:
		return len(over)
	}
}

// modelInputs are the measured figures the model starts from, and where
// they come from.
func (r *report) modelInputs() (redisCPU, workerCPU time.Duration, cmds float64, from string, ok bool) {
	for _, c := range r.cluster {
		if c.sharded() {
			redisCPU, workerCPU, cmds = c.perDelivery()
			return redisCPU, workerCPU, cmds, fmt.Sprintf("the %d-shard drain on %d masters (section 8): every master's CPU ÷ deliveries", c.shards, len(c.cpu)), true
		}
	}
	if c, ok := r.e2eCase(0, "bulk", 100); ok {
		workerCPU, redisCPU = c.otpq.cpuPerDelivery()
		cmds, _ = c.otpq.work.per(float64(c.otpq.delivered))
		return redisCPU, workerCPU, cmds, "the instant-stub bulk run at concurrency 100 on one redis-server (section 3)", true
	}
	return 0, 0, 0, "", false
}

// sharded reports whether c is the sharded drain without --rate, the one
// the targets and the model read.
func (c clusterResult) sharded() bool { return c.shards > 1 && c.limit == 0 }

// clusterPair is the cluster case's 1-shard and sharded drains.
func (r *report) clusterPair() (one, sharded clusterResult, ok bool) {
	var haveOne, haveSharded bool
	for _, c := range r.cluster {
		switch {
		case c.sharded():
			sharded, haveSharded = c, true
		case c.shards <= 1:
			one, haveOne = c, true
		}
	}
	return one, sharded, haveOne && haveSharded
}

// rateCost is what the --rate drain's limiter cost the master holding its
// key (the master with the most TIME calls, one per limiter script): that
// master's redis-server CPU per delivery with --rate less without, and
// its limiter scripts per delivery.
func (r *report) rateCost() (master int, extra time.Duration, scripts float64, ok bool) {
	var base, limited clusterResult
	var haveBase, haveLimited bool
	for _, c := range r.cluster {
		switch {
		case c.sharded():
			base, haveBase = c, true
		case c.shards > 1 && c.limit > 0:
			limited, haveLimited = c, true
		}
	}
	if !haveBase || !haveLimited || limited.delivered == 0 || base.delivered == 0 || len(limited.times) != len(base.cpu) {
		return 0, 0, 0, false
	}
	for m, t := range limited.times {
		if t > limited.times[master] {
			master = m
		}
	}
	extra = limited.cpu[master]/time.Duration(limited.delivered) - base.cpu[master]/time.Duration(base.delivered)
	return master, extra, float64(limited.times[master]) / float64(limited.delivered), true
}

// round100 rounds a rate to hundreds: this machine measures no finer.
func round100(x float64) int { return int(math.Round(x/100) * 100) }

func pct(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }

func joinPct(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, pct(x))
	}
	return strings.Join(parts, " / ")
}

// clusterTargets are the cluster case's targets: the busiest master's
// share of commands and of CPU at Config.Shards shards.
func (r *report) clusterTargets() []target {
	var ts []target
	for _, c := range r.cluster {
		if !c.sharded() {
			continue
		}
		cs, us := shares(c.cmds), shares(c.cpu)
		ts = append(ts,
			target{figure: fmt.Sprintf("busiest master's share of Redis commands, bulk drain, %d shards over %d masters (`otpq worker` binary)", c.shards, len(c.cmds)),
				goal: "≤ 40%", measured: joinPct(cs), met: busiest(cs) <= 0.40,
				bound: fmt.Sprintf("Section 8: the busiest master holds %d of the %d bulk shards.", busiestHeld(c.shards, len(c.cmds)), c.shards)},
			target{figure: "busiest master's share of redis-server CPU, same drain",
				goal: "≤ 40%", measured: joinPct(us), met: busiest(us) <= 0.40, bound: "Section 8."})
	}
	return ts
}

// writeCluster writes sections 8 (the cluster drain), 9 (the idle fleet)
// and 10 (the capacity model), each when its data was measured.
func (r *report) writeCluster(w func(string, ...any)) {
	if len(r.cluster) > 0 {
		w("## 8. Redis Cluster: a bulk drain over %d masters (the `otpq worker` binary)\n\n", len(r.cluster[0].cmds))
		w("%s bulk tasks preloaded, then drained by one `otpq worker --concurrency 100` (instant stub); measured from 10%% to 90%% delivered (at most 10 s). "+
			"Commands are each master's `INFO commandstats` calls, CPU its redis-server's user+system time (/proc). Masters only, slots split as `redis-cli --cluster create` splits them.\n\n", fmtInt(r.clusterTasks))
		w("| shards | delivered/s | commands, master 0 / 1 / 2 | redis-server CPU, master 0 / 1 / 2 | bulk shards per master | commands / delivery | round trips / delivery | CPU / delivery: worker + redis (all masters) | commands per delivery, most called first |\n")
		w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, c := range r.cluster {
			rc, wc, cmds := c.perDelivery()
			held := strings.Trim(strings.ReplaceAll(fmt.Sprint(shardsPerMaster("bulk", c.shards, len(c.cmds))), " ", " / "), "[]")
			_, trips := c.work.per(float64(c.delivered))
			label := strconv.Itoa(c.shards)
			if c.limit > 0 {
				label += fmt.Sprintf(", `--rate %s`", fmtInt(int(c.limit)))
			}
			w("| %s | %s | %s | %s | %s | %.1f | %.2f | %s + %s | %s |\n", label, fmtRate(c.rate), joinPct(shares(c.cmds)), joinPct(shares(c.cpu)), held,
				cmds, trips, fmtDur(wc), fmtDur(rc), c.work.top(10, float64(c.delivered)))
		}
		w("\n")
	}
	if len(r.fleet) > 0 {
		w("## 9. An idle fleet: worker processes × shards\n\n")
		w("N idle `otpq worker` processes (defaults, each 2 × --servers asynq servers) on one redis-server, counted over %s once every server registered. "+
			"Each process polls and forwards every shard on its own: idle polls through the fetch gate (1 s per idle shard when sharded), asynq's forwarder (scheduled and retry sets, one script each per shard), janitor and recoverer, heartbeats. "+
			"ZRANGEBYSCORE counts the forwarder's, janitor's and recoverer's scans (one inside each of their scripts).\n\n", time.Duration(r.fleet[0].secs*float64(time.Second)))
		w("| shards | worker processes | Redis commands/s | per process | EVALSHA/s | ZRANGEBYSCORE/s | redis-server CPU | most called, per second |\n")
		w("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, f := range r.fleet {
			cmds := float64(f.work.commands()) / f.secs
			w("| %d | %d | %.0f | %.0f | %.0f | %.0f | %.1f%% of a core | %s |\n", f.shards, f.workers, cmds, cmds/float64(f.workers),
				float64(f.work.calls["evalsha"])/f.secs, float64(f.work.calls["zrangebyscore"])/f.secs, 100*f.redisCPU.Seconds()/f.secs, f.work.top(5, f.secs))
		}
		w("\n")
	}
	r.writeModel(w)
}

// writeModel is section 10: the capacity model from this run's figures.
func (r *report) writeModel(w func(string, ...any)) {
	redisCPU, workerCPU, cmds, from, ok := r.modelInputs()
	if !ok || redisCPU <= 0 {
		return
	}
	perMaster := float64(time.Second) / float64(redisCPU)
	w("## 10. Capacity model: deliveries/s past one Redis\n\n")
	w("Computed from this run: **%s redis-server CPU, %s worker CPU and %.1f Redis commands per delivery** (%s). "+
		"Every command of a delivery — dequeue, code read, result write, completion — touches its shard's hash tag only, so a delivery costs its shard's master alone; "+
		"a redis-server runs commands on one thread, so one master saturates at 1 s ÷ %s = **%s** deliveries. "+
		"This machine's cores are shared with the worker, the stub and other load; a master on a core of its own is unlikely to spend more per delivery.\n\n",
		fmtDur(redisCPU), fmtDur(workerCPU), cmds, from, fmtDur(redisCPU), fmtRate(perMaster))
	if one, sharded, ok := r.clusterPair(); ok {
		oneCPU, oneWorker, _ := one.perDelivery()
		_, oneTrips := one.work.per(float64(one.delivered))
		_, trips := sharded.work.per(float64(sharded.delivered))
		w("The same drain at 1 shard on the same cluster cost %s of redis-server CPU and %s of worker CPU per delivery (%.2f round trips, against %.2f sharded): "+
			"the cluster client splits each pipeline by node, and each master, at a third of the load, likely runs fewer commands per pass of its event loop. "+
			"The model takes the sharded figure, the higher one here.\n\n", fmtDur(oneCPU), fmtDur(oneWorker), oneTrips, trips)
	}
	w("Tasks spread evenly over a class's N shards (xxHash64 of the task ID), so the busiest master carries held ÷ N of the load, where held is the most shards of a class on one master: "+
		"⌈N/k⌉ at best on k masters, and what the shard names' slots give under redis-cli's even slot split (below, computed from `internal/shard`'s names). "+
		"Redis-bound deliveries/s = %s × N ÷ held.\n\n", fmtRate(perMaster))
	w("| masters |")
	for _, n := range modelShards {
		w(" %d shards: held (⌈N/k⌉) → deliveries/s |", n)
	}
	w("\n| --- |")
	for range modelShards {
		w(" --- |")
	}
	w("\n")
	for _, k := range modelMasters {
		w("| %d |", k)
		for _, n := range modelShards {
			w(" %d (%d) → %s |", busiestHeld(n, k), (n+k-1)/k, fmtRate(redisBound(redisCPU, n, k)))
		}
		w("\n")
	}
	w("\n")
	for _, c := range r.cluster {
		if c.sharded() {
			w("Measured against the model: at %d shards on %d masters the model puts %d of %d shards (%s) on the busiest master; section 8 measured %s of the commands and %s of the CPU there.\n\n",
				c.shards, len(c.cmds), busiestHeld(c.shards, len(c.cmds)), c.shards, pct(float64(busiestHeld(c.shards, len(c.cmds)))/float64(c.shards)),
				pct(busiest(shares(c.cmds))), pct(busiest(shares(c.cpu))))
		}
	}
	r.writeBinds(w, redisCPU, workerCPU)
}

// writeBinds says what binds past the sharded queues, and the paper plan.
func (r *report) writeBinds(w func(string, ...any), redisCPU, workerCPU time.Duration) {
	idle := ""
	for _, i := range r.idle {
		if i.shards > 1 {
			idle = fmt.Sprintf(" (section 4 measured %.0f commands/s for one idle worker at %d shards)", i.cmds, i.shards)
		}
	}
	w("### What binds next\n\n")
	w("- **Worker processes**: %s of worker CPU per delivery, so %.1f worker cores per 10,000 deliveries/s. Workers share nothing but Redis; add processes.\n",
		fmtDur(workerCPU), 10000*workerCPU.Seconds())
	w("- **Shards per process**: every worker process polls each idle shard once a second and forwards each shard's scheduled and retry sets every 2 s, so a process's idle cost grows with the shard count%s "+
		"and a fleet's with its process count (section 9). At 16 shards a process stays under 400 commands/s; more shards spread wider but cost every idle process more.\n", idle)
	if m, extra, scripts, ok := r.rateCost(); ok {
		bound := "within this run's noise: not a bound at these rates"
		if extra > 0 {
			bound = fmt.Sprintf("so that one key alone would saturate a master of its own at ~%s sends/s", fmtInt(round100(float64(time.Second)/float64(extra))))
		}
		w("- **`--rate`'s key** (measured): with `--rate %s` (never reached) the same drain ran %.2f limiter scripts per delivery on master %d, which spent %s more redis-server CPU per delivery than without `--rate`; %s. "+
			"Every worker's every send checks that one key, whatever the shard count.\n", fmtInt(clusterRate), scripts, m, fmtDur(extra), bound)
	}
	if r.streamXAdd > 0 {
		w("- **`otpq:receipts`** (measured): %s XADDs of a receipt entry (50 at once, trimmed at ~%s entries as the receiver does) cost the stream's master %s each: "+
			"one master saturates at ~%s receipt state changes/s, and a delivery reported sent then delivered adds 2.\n",
			fmtInt(r.streamAdds), fmtInt(receipts.DefaultStreamMaxLen), fmtDur(r.streamXAdd), fmtInt(round100(float64(time.Second)/float64(r.streamXAdd))))
	}
	w("- **Single keys** (each lives on one master however many there are): the `--rate` limiter's GCRA key (1 script per send when `--rate` is set: one master runs every send's check); " +
		"`otpq:receipts` (1 XADD per receipt state change, with callbacks on); the destination guard's key per destination (producer side, 1 script per send; one hot destination is one key, but it is limited anyway); " +
		"`asynq:servers` / `asynq:workers` (each asynq server's heartbeat every 5 s, 2 × --servers per process: per process, not per delivery). " +
		"None is touched by a delivery on the default path (no `--rate`, no callbacks); with them, one master carries `--rate`'s script and the receipts' XADDs for the whole fleet.\n")
	w("- **The provider**: EngageLab's API spec names no account-wide rate; its 3004 error limits one template to one target user per code validity period. A contracted rate goes in `--rate`; in-flight sends needed = rate × provider latency (Little's law).\n\n")
	p, ok := newPlan(redisCPU, workerCPU, 16)
	if !ok {
		return
	}
	w("### Paper plan: 1,000,000 codes a minute (%s)\n\n", fmtRate(planRate))
	w("- **Redis**: a cluster of **%d masters** (plus a replica each) at **16 shards**: the busiest master holds %d of 16 shards and, at %s redis CPU per delivery, runs at %s of a core at %s "+
		"(the plan keeps every process at ≤ %s of a core). 16 shards keep an idle worker under 400 commands/s; past 16 masters, more shards are needed (and cost every process more idle polls).\n",
		p.masters, p.held, fmtDur(redisCPU), pct(p.busiestLoad), fmtRate(planRate), pct(planHeadroom))
	w("- **Workers**: %s × %s = %.1f cores of `otpq worker`; at ≤ %s of 2 cores each, **%d processes** (`--shards 16`, `--concurrency` ≥ rate × provider latency ÷ processes: at 200 ms, %d each).\n",
		fmtRate(planRate), fmtDur(workerCPU), p.workerCores, pct(planHeadroom), p.processes, int(math.Ceil(planRate*0.2/float64(p.processes))))
	var singles []single
	if _, extra, _, ok := r.rateCost(); ok && extra > 0 {
		singles = append(singles, single{what: "`--rate`'s key, when set", per: fmt.Sprintf("%s per send (section 8)", fmtDur(extra)), load: planRate * extra.Seconds()})
	}
	if r.streamXAdd > 0 {
		singles = append(singles, single{what: "`otpq:receipts`, with callbacks on", per: fmt.Sprintf("2 entries per delivery (sent, delivered) at %s each", fmtDur(r.streamXAdd)),
			load: 2 * planRate * r.streamXAdd.Seconds()})
	}
	if len(singles) > 0 {
		var parts []string
		for _, x := range singles {
			parts = append(parts, fmt.Sprintf("%s: %s, %s of a core at %s", x.what, x.per, pct(x.load), fmtRate(planRate)))
		}
		extra := extraMasters(singles, p.busiestLoad)
		advice := "each fits beside the shards of the master that holds it"
		if extra > 0 {
			advice = fmt.Sprintf("beside a busiest master's %s that would pass the plan's %s, so their slots go to %d master(s) of their own (`redis-cli --cluster reshard` of those slots): **%d masters** in all with them",
				pct(p.busiestLoad), pct(planHeadroom), extra, p.masters+extra)
		}
		w("- **Global keys** (measured): %s; %s.\n", strings.Join(parts, "; "), advice)
	}
	w("- **Provider**: %s sustained, about %s in flight at 200 ms per request; the account's rate must allow it (set `--rate` to the contracted rate, whose key then costs one master a script per send).\n",
		fmtRate(planRate), fmtInt(int(math.Round(planRate*0.2))))
	w("- **Enqueue**: producers spread by task ID over the same shards; the destination guard's per-destination keys spread with the destinations.\n\n")
}
