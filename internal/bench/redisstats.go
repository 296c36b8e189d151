package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// redisWork is what Redis did between two snapshots: calls per command
// from INFO commandstats — which counts the commands a script runs as well
// as the EVALSHA that runs it — and socket reads from INFO stats'
// total_reads_processed. Redis reads a client's socket once per request it
// receives, so a lone command and a whole pipeline each cost one read:
// reads count round trips, commands count work.
type redisWork struct {
	calls map[string]int64
	usec  map[string]int64 // time Redis spent in each command (a script's includes its inner commands')
	reads int64
}

// ownCommands are the benchmark's own probes, left out of every count.
var ownCommands = map[string]bool{"info": true}

// redisWork snapshots the counters (cumulative since the server started).
func (e *env) redisWork(ctx context.Context) (redisWork, error) {
	info, err := e.rdb.InfoMap(ctx, "stats", "commandstats").Result()
	if err != nil {
		return redisWork{}, err
	}
	return parseRedisWork(info), nil
}

func parseRedisWork(info map[string]map[string]string) redisWork {
	w := redisWork{calls: map[string]int64{}, usec: map[string]int64{}}
	w.reads, _ = strconv.ParseInt(info["Stats"]["total_reads_processed"], 10, 64)
	for k, v := range info["Commandstats"] {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok || ownCommands[name] {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(f, "calls="); ok {
				w.calls[name], _ = strconv.ParseInt(n, 10, 64)
			}
			if n, ok := strings.CutPrefix(f, "usec="); ok {
				w.usec[name], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	return w
}

// since is the work done from earlier to w, less the one read of the
// INFO that took w.
func (w redisWork) since(earlier redisWork) redisWork {
	d := redisWork{calls: map[string]int64{}, usec: map[string]int64{}, reads: max(0, w.reads-earlier.reads-1)}
	for k, v := range w.calls {
		if n := v - earlier.calls[k]; n > 0 {
			d.calls[k] = n
		}
	}
	for k, v := range w.usec {
		if n := v - earlier.usec[k]; n > 0 {
			d.usec[k] = n
		}
	}
	return d
}

func (w redisWork) commands() int64 {
	var n int64
	for _, v := range w.calls {
		n += v
	}
	return n
}

// per divides the commands and round trips by n (deliveries, seconds).
func (w redisWork) per(n float64) (commands, trips float64) {
	if n <= 0 {
		return 0, 0
	}
	return float64(w.commands()) / n, float64(w.reads) / n
}

// top lists the k most called commands, each per n: "EVALSHA 4.80, HSET 4.00".
func (w redisWork) top(k int, n float64) string {
	return ranked(w.calls, k, n, "%s %.2f")
}

// topTime lists the k commands Redis spent most time in, each in µs per n:
// "EVALSHA 16.07 µs, SET 2.78 µs". A script's time includes the time of
// the commands it ran, which are listed on their own as well.
func (w redisWork) topTime(k int, n float64) string {
	return ranked(w.usec, k, n, "%s %.2f µs")
}

// ranked lists the k largest entries of m, largest first (ties by name),
// each as format of its upper-case name and its value ÷ n.
func ranked(m map[string]int64, k int, n float64, format string) string {
	if n <= 0 || len(m) == 0 {
		return "—"
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	parts := make([]string, 0, k)
	for _, name := range names[:min(k, len(names))] {
		parts = append(parts, fmt.Sprintf(format, strings.ToUpper(name), float64(m[name])/n))
	}
	return strings.Join(parts, ", ")
}
