package bench

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// cachegrindTotal reads the summary line of a cachegrind output file and
// refuses a file without one (a worker killed before it wrote it).
func TestCachegrindTotal(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	full := write("full", "desc: I1 cache: 32768 B\ncmd: otpq worker\nevents: Ir\nfl=/x.go\nfn=main\n3 10\nsummary: 1965583200\n")
	n, err := cachegrindTotal(full)
	require.NoError(t, err)
	require.Equal(t, int64(1965583200), n)
	_, err = cachegrindTotal(write("cut", "events: Ir\nfl=/x.go\nfn=main\n3 10\n"))
	require.ErrorIs(t, err, errNoSummary)
	_, err = cachegrindTotal(write("bad", "summary: many\n"))
	require.Error(t, err)
	_, err = cachegrindTotal(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// The instruction count compares medians of the rounds, so one odd round
// of either build does not move it.
func TestInstrResult(t *testing.T) {
	r := instrResult{queue: "critical", tasks: 4000, base: []int64{491395, 493485, 900000}, off: []int64{498872, 486837, 100}, baseEmpty: 150_000_000, offEmpty: 160_000_000}
	require.InDelta(t, 486837.0/493485.0, r.ratio(), 1e-12)
	require.Equal(t, "tracing off -1.3% instructions per delivery; median of 3 rounds of 4,000 tasks, each build alternating "+
		"(off: 498,872, 486,837, 100; notrace: 491,395, 493,485, 900,000); an empty drain (start, 2 s idle, SIGTERM): "+
		"160,000,000 instructions off vs 150,000,000 notrace, included in each round", r.note())
	require.Zero(t, instrResult{}.ratio(), "no rounds, no ratio")
}

// With an instruction count, the tracing target is met when tracing off
// executes at most 2% more instructions per delivery than the notrace
// build on every queue, whatever the noisy rates say; without one it falls
// back to the rates and says why the count is missing.
func TestTracingTargetByInstructions(t *testing.T) {
	r := newReport(Config{})
	r.tracing = []tracingResult{{queue: "critical", overhead: overhead{rate: 900, baseRate: 1000}}, {queue: "bulk", overhead: overhead{rate: 950, baseRate: 1000}}}
	r.instrSkipped = "not run: valgrind not found (apt-get install valgrind)"
	ts := r.tracingTargets()
	require.Len(t, ts, 1)
	require.False(t, ts[0].met, "rates 0.90×/0.95× and no instruction count")
	require.Contains(t, ts[0].bound, "valgrind not found")
	r.instr = []instrResult{
		{queue: "critical", base: []int64{1000}, off: []int64{1015}},
		{queue: "bulk", base: []int64{1000}, off: []int64{1020}},
	}
	ts = r.tracingTargets()
	require.True(t, ts[0].met)
	require.Equal(t, "instructions critical 1.015× (1,015 vs 1,000); bulk 1.020× (1,020 vs 1,000); "+
		"e2e delivered/s critical 0.90× (900/s vs 1,000/s); bulk 0.95× (950/s vs 1,000/s)", ts[0].measured)
	r.instr[1].off = []int64{1021}
	require.False(t, r.tracingTargets()[0].met, "2.1% more instructions on bulk")
}
