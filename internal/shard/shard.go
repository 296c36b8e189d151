// Package shard spreads otpq's two queue classes, critical and bulk, over
// several asynq queues, so that a Redis Cluster spreads them over its
// masters.
//
// # Why
//
// asynq keeps every key of a queue under the queue's hash tag
// (asynq:{critical}:…), so one cluster slot, and so one master, carries a
// whole queue. A class with N shards is N asynq queues with N hash tags.
//
// # Queue names
//
// Shard 0 of a class is the class itself ("critical", "bulk"): one shard,
// the default, is the layout otpq always had. Shard i > 0 is named
// "<class>-<i><suffix>", the suffix being the first of "", "a"…"z",
// "aa"…"zz" that puts the name's cluster slot (CRC16 of the name, mod
// 16384, as Redis hashes a hash tag) within 256 slots of
// slot(class) + frac(i·0.618…)·16384: the golden-ratio sequence, so that
// the first N shards of a class spread evenly over any number of equal
// slot ranges, for every N. Over the three ranges of a 3-master cluster
// made by redis-cli --cluster create (0-5460, 5461-10922, 10923-16383):
//
//	shards  critical   bulk
//	4       1/2/1      2/1/1
//	16      5/5/6      5/6/5
//	64      21/21/22   22/21/21
//
// (TestNamesSpreadOverMasters checks it.) The first names:
//
//	shard  critical           bulk
//	0      critical (8090)    bulk (5320)
//	1      critical-1dp       bulk-1s
//	2      critical-2ds       bulk-2dz
//	3      critical-3a        bulk-3r
//
// Names never change with the shard count: shard 3 is critical-3a whether
// there are 4 shards or 16, so a worker serving 16 shards serves every
// queue a 4-shard producer wrote to.
//
// # Routing
//
// A task goes to shard xxHash64(task ID) mod N of its class. The task ID
// is the DedupKey when there is one, so a repeated DedupKey always lands on
// the same shard (and is refused there, as on one queue), and Status finds
// a task with one lookup per class. Everything else a task owns (its code
// key, result, receipt link and receipt) carries the shard queue's hash
// tag, as it carried the queue's before. The destination guard and the
// rate limit are not per queue: their keys do not change.
//
// # The shard count in Redis
//
// Producers and workers must agree on N, so Redis records it (Registry):
// the hash otpq:shards holds the count, the highest count ever set
// ("served": workers serve that many shards, so that lowering the count
// strands nothing) and every count set so far (Status looks under each).
// The first process with N > 1 records it on a Redis that holds no otpq
// queue yet; a process with another N refuses, naming both values; Set
// (otpq shards N) changes it. With no record the count is 1, and a process
// with N = 1 writes nothing: a single-queue deployment sees no difference.
package shard

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/otpq/otpq/internal/task"
)

// MaxShards is the highest shard count.
const MaxShards = 128

// Classes are the two queue classes, critical first: workers serve every
// critical shard before any bulk one.
var Classes = []string{task.QueueCritical, task.QueueBulk}

// slots is the number of Redis Cluster hash slots.
const slots = 16384

// names[class][i] is shard i's queue name; classes[name] its class.
var (
	names   = map[string][]string{}
	classes = map[string]string{}
)

func init() {
	for _, c := range Classes {
		names[c] = spread(c)
		for _, n := range names[c] {
			classes[n] = c
		}
	}
}

// window is how far (in slots) a shard's slot may be from its target.
const window = 256

// spread names the MaxShards shards of class.
func spread(class string) []string {
	out := []string{class}
	golden := (math.Sqrt(5) - 1) / 2
	base := Slot(class)
	for i := 1; i < MaxShards; i++ {
		_, frac := math.Modf(float64(i) * golden)
		target := (base + int(frac*slots)) % slots
		name := ""
		for _, suf := range suffixes() {
			cand := class + "-" + strconv.Itoa(i) + suf
			d := Slot(cand) - target
			if d < 0 {
				d = -d
			}
			if min(d, slots-d) < window {
				name = cand
				break
			}
		}
		if name == "" { // never happens for MaxShards (TestNames)
			panic(fmt.Sprintf("shard: no name for shard %d of %s", i, class))
		}
		out = append(out, name)
	}
	return out
}

// suffixes lists "", "a"…"z", "aa"…"zz" in order.
func suffixes() []string {
	out := []string{""}
	for a := 'a'; a <= 'z'; a++ {
		out = append(out, string(a))
	}
	for a := 'a'; a <= 'z'; a++ {
		for b := 'a'; b <= 'z'; b++ {
			out = append(out, string(a)+string(b))
		}
	}
	return out
}

// Name is the queue of shard i of class (i from 0 to MaxShards-1). It
// panics for an unknown class or an i out of range.
func Name(class string, i int) string {
	ns, ok := names[class]
	if !ok || i < 0 || i >= len(ns) {
		panic(fmt.Sprintf("shard: no shard %d of class %q", i, class))
	}
	return ns[i]
}

// Names are the queues of the first n shards of class (n at least 1).
func Names(class string, n int) []string {
	n = min(max(n, 1), MaxShards)
	return append([]string(nil), names[class][:n]...)
}

// All are the queues of the first n shards of every class, critical's
// first: what workers serve, and where a task of either class may be.
func All(n int) []string {
	var qs []string
	for _, c := range Classes {
		qs = append(qs, Names(c, n)...)
	}
	return qs
}

// Index is the shard of a task ID among n shards.
func Index(id string, n int) int {
	if n <= 1 {
		return 0
	}
	// xxHash64, not FNV-1a: FNV-1a's low k bits depend only on the low k
	// bits of each byte, and its high bits barely move when only the last
	// byte does, so sequential IDs ("…:1", "…:5", "…:9") shared a shard.
	return int(xxhash.Sum64String(id) % uint64(n))
}

// Queue is the queue a task of class with that ID goes to among n shards.
func Queue(class, id string, n int) string { return Name(class, Index(id, n)) }

// ClassOf is the class of a queue name: "critical" for critical and its
// shards, "bulk" for bulk and its shards, "" for anything else.
func ClassOf(queue string) string { return classes[queue] }

// Slot is the Redis Cluster hash slot of a key or hash tag content: CRC16
// (XMODEM) of its hash tag, or of the whole key without one, mod 16384.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % slots
}
