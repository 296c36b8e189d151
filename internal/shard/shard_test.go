package shard_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/shard"
)

// Slot is Redis Cluster's: the values Redis documents for CLUSTER KEYSLOT
// (foo 12182, somekey 11058), and a hash tag's content alone counts.
func TestSlotIsRedisCluster(t *testing.T) {
	require.Equal(t, 12182, shard.Slot("foo"))
	require.Equal(t, 11058, shard.Slot("somekey"))
	require.Equal(t, shard.Slot("critical"), shard.Slot("asynq:{critical}:pending"))
	require.Equal(t, 8090, shard.Slot("critical"))
	require.Equal(t, 5320, shard.Slot("bulk"))
}

// Shard 0 is the class itself (one shard is the old layout); the names are
// part of the layout in Redis and never change (the package doc's table).
func TestNames(t *testing.T) {
	require.Equal(t, []string{"critical"}, shard.Names("critical", 1))
	require.Equal(t, []string{"critical"}, shard.Names("critical", 0))
	require.Equal(t, []string{"critical", "critical-1dp", "critical-2ds", "critical-3a"}, shard.Names("critical", 4))
	require.Equal(t, []string{"bulk", "bulk-1s", "bulk-2dz", "bulk-3r"}, shard.Names("bulk", 4))
	seen := map[string]bool{}
	for _, c := range shard.Classes {
		names := shard.Names(c, shard.MaxShards)
		require.Len(t, names, shard.MaxShards)
		for i, n := range names {
			require.False(t, seen[n], "%s named twice", n)
			seen[n] = true
			require.Equal(t, c, shard.ClassOf(n))
			require.Equal(t, n, shard.Name(c, i))
		}
	}
	for _, q := range []string{"", "critical-1", "critical-", "bulk-3", "other", "critical-3a-x"} {
		require.Empty(t, shard.ClassOf(q), q)
	}
}

// The first N shards of a class spread over a 3-master cluster's slot
// ranges (redis-cli --cluster create's split) with at most one shard more
// on the busiest master than a perfect split, for every N from 3 up.
func TestNamesSpreadOverMasters(t *testing.T) {
	ranges := []int{5461, 10923, 16384} // masters own [0,5461), [5461,10923), [10923,16384)
	for _, c := range shard.Classes {
		for n := 3; n <= shard.MaxShards; n++ {
			per := make([]int, 3)
			for _, q := range shard.Names(c, n) {
				s := shard.Slot(q)
				for m, hi := range ranges {
					if s < hi {
						per[m]++
						break
					}
				}
			}
			for m := range per {
				require.LessOrEqual(t, per[m], (n+2)/3+1, "%s, %d shards: %v per master", c, n, per)
			}
		}
	}
}

// A task goes to the shard of its ID: stable values (they are the layout
// in Redis), the same ID always on the same shard, and IDs spread evenly.
func TestRouting(t *testing.T) {
	require.Equal(t, 0, shard.Index("task-1", 1))
	require.Equal(t, 1, shard.Index("task-1", 4))
	require.Equal(t, 5, shard.Index("task-1", 16))
	require.Equal(t, 6, shard.Index("login:42:7", 16))
	require.Equal(t, "critical", shard.Queue("critical", "task-1", 1))
	require.Equal(t, "critical-1dp", shard.Queue("critical", "task-1", 4))
	require.Equal(t, "bulk-1s", shard.Queue("bulk", "task-1", 4))
	per := make([]int, 16)
	for i := range 16000 {
		per[shard.Index("id-"+strconv.Itoa(i), 16)]++
	}
	for i, n := range per {
		require.InDelta(t, 1000, n, 150, "shard %d of 16 got %d of 16000 IDs", i, n)
	}
	// IDs that differ in one character whose low bits agree ('1', '5',
	// '9', 'A', … all end in binary 01) spread too: the shard is not
	// taken from the hash's low bits, which depend on the bytes' low bits
	// only (with h mod 4 each group below sat on one shard).
	for p := range 200 {
		used := map[int]bool{}
		for _, c := range "159AEIMQUYaeimquy" {
			used[shard.Index(fmt.Sprintf("login:%d:%c", p, c), 4)] = true
		}
		require.GreaterOrEqual(t, len(used), 3, "IDs login:%d:<c> over 4 shards", p)
	}
}

func TestAllIsEveryClassShards(t *testing.T) {
	require.Equal(t, []string{"critical", "critical-1dp", "critical-2ds", "bulk", "bulk-1s", "bulk-2dz"}, shard.All(3))
	require.Equal(t, []string{"critical", "bulk"}, shard.All(1), "one shard: today's two queues")
}
