package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ---- 11b. tracing off in instructions (issue 20) -----------------------

// Delivered/s of two runs of one binary on this 2-core machine move by up
// to ±20%, so a 2% cost cannot be read from rates. An instruction count
// can: valgrind's cachegrind counts the instructions a process executes,
// whatever else the machine does (the same binary and drain gave totals
// within ~2% of each other here). The tracing case therefore also runs
// the worker of each build under cachegrind on the same preloaded drain
// and compares instructions per delivery.
const (
	instrRounds = 5
	instrTasks  = 4000
)

// instrResult is the instruction count of tracing off against the
// otpq_notrace build on one queue: each round's instructions per delivery
// (the worker process's whole run, start-up and shutdown included, ÷ the
// tasks delivered) and the instructions of a run that delivered nothing.
type instrResult struct {
	queue               string
	tasks               int     // per round
	base, off           []int64 // per delivery, one per round
	baseEmpty, offEmpty int64   // an empty drain: start, 2 s, stop
}

// median of xs (the upper one of an even count).
func medianInt(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// ratio of tracing off to notrace, medians of the rounds.
func (r instrResult) ratio() float64 {
	b := medianInt(r.base)
	if b == 0 {
		return 0
	}
	return float64(medianInt(r.off)) / float64(b)
}

// instructions runs the instruction count of the tracing case on queue
// with the provider pr: instrRounds rounds, the two builds alternating.
func (e *env) instructions(ctx context.Context, valgrind string, pr *provider, queue string) (instrResult, error) {
	n := e.n(instrTasks)
	res := instrResult{queue: queue, tasks: n}
	bins := []string{e.cfg.OtpqNoTrace, e.cfg.Otpq}
	for i := range instrRounds {
		for _, j := range roundOrder(i, len(bins)) {
			e.logf("  instructions, %s queue: %s (%d/%d)", queue, filepath.Base(bins[j]), i+1, instrRounds)
			ir, err := e.cachegrind(ctx, valgrind, pr, bins[j], queue, n)
			if err != nil {
				return res, err
			}
			if j == 0 {
				res.base = append(res.base, ir/int64(n))
			} else {
				res.off = append(res.off, ir/int64(n))
			}
		}
	}
	var err error
	if res.baseEmpty, err = e.cachegrind(ctx, valgrind, pr, bins[0], queue, 0); err != nil {
		return res, err
	}
	res.offEmpty, err = e.cachegrind(ctx, valgrind, pr, bins[1], queue, 0)
	return res, err
}

// cachegrind preloads n tasks on queue, runs bin's worker (the defaults
// and flags of the end-to-end cases) under valgrind --tool=cachegrind
// until the provider has taken n sends (or 2 s with n = 0), stops it with
// SIGTERM and returns the instructions it executed.
func (e *env) cachegrind(ctx context.Context, valgrind string, pr *provider, bin, queue string, n int) (int64, error) {
	if err := e.flush(ctx); err != nil {
		return 0, err
	}
	if err := pr.reset(); err != nil {
		return 0, err
	}
	if n > 0 {
		if err := e.preload(ctx, n, queue); err != nil {
			return 0, err
		}
	}
	out := filepath.Join(e.dir, "cachegrind.out")
	_ = os.Remove(out)
	// --fair-sched=yes: valgrind runs one thread at a time; with its
	// default lock a Go thread spinning for another could run for a whole
	// time slice, and one round in three counted 3x the instructions.
	args := append([]string{"--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes", "--cachegrind-out-file=" + out, bin}, e.workerArgs(side{}, 100)...)
	w, err := start(e.dir, "otpq-worker-cachegrind", workerEnv(pr.url), valgrind, args...)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	if n == 0 {
		deadline = time.Now().Add(2 * time.Second)
	}
	for time.Now().Before(deadline) {
		if d, err := pr.delivered(); err == nil && n > 0 && d >= n {
			break
		}
		select {
		case <-w.done:
			return 0, fmt.Errorf("%s under cachegrind exited early (log: %s)", filepath.Base(bin), lastLines(readFile(w.log), 10))
		case <-ctx.Done():
			w.stop()
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	w.stop()
	if d, err := pr.delivered(); err != nil || d < n {
		return 0, fmt.Errorf("%s under cachegrind delivered %d of %d in 5 minutes (log: %s)", filepath.Base(bin), d, n, lastLines(readFile(w.log), 10))
	}
	return cachegrindTotal(out)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// errNoSummary: a cachegrind output file without its summary line (the
// process was killed before it could write one).
var errNoSummary = errors.New("cachegrind output has no summary line")

// cachegrindTotal reads the total instruction count (Ir) of a cachegrind
// output file, its "summary: N" line.
func cachegrindTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "summary:"); ok {
			fields := strings.Fields(v)
			if len(fields) == 0 {
				break
			}
			return strconv.ParseInt(fields[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: %w", path, errNoSummary)
}

// valgrindPath is valgrind's path, or "" when it is not installed.
func valgrindPath() string {
	p, err := exec.LookPath("valgrind")
	if err != nil {
		return ""
	}
	return p
}
