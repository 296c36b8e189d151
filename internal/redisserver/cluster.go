package redisserver

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SlotRanges is how redis-cli --cluster create splits the 16384 slots over
// masters masters (clusterManagerCommandCreate): 16384/masters each, the
// bounds rounded, the last master up to the last slot. Range i is
// [first, last] of master i; 3 masters: 0-5460, 5461-10922, 10923-16383.
func SlotRanges(masters int) [][2]int {
	out := make([][2]int, 0, masters)
	per, cursor, first := 16384.0/float64(masters), 0.0, 0
	for i := range masters {
		last := int(math.Round(cursor + per - 1))
		if i == masters-1 {
			last = 16383
		}
		out = append(out, [2]int{first, last})
		first, cursor = last+1, cursor+per
	}
	return out
}

// FormCluster makes a Redis Cluster of running cluster-mode servers
// (Config.Cluster): the masters get the slots as SlotRanges splits them,
// every node meets the first, and replicas[i] replicates
// masters[i % len(masters)]. It returns once every node sees the cluster
// ok with every replica's link up, or an error naming what it waited for
// (30 s at most, or until ctx ends).
func FormCluster(ctx context.Context, masters, replicas []*Server) error {
	clients := map[*Server]*redis.Client{}
	client := func(s *Server) *redis.Client {
		if clients[s] == nil {
			clients[s] = redis.NewClient(&redis.Options{Addr: s.Addr})
		}
		return clients[s]
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	do := func(s *Server, args ...any) (string, error) {
		v, err := client(s).Do(ctx, args...).Text()
		if err != nil {
			return "", fmt.Errorf("redisserver: cluster node %s: %v: %w", s.Addr, args, err)
		}
		return v, nil
	}
	for i, r := range SlotRanges(len(masters)) {
		if _, err := do(masters[i], "CLUSTER", "ADDSLOTSRANGE", r[0], r[1]); err != nil {
			return err
		}
	}
	all := append(append([]*Server(nil), masters...), replicas...)
	for _, s := range all[1:] {
		if _, err := do(s, "CLUSTER", "MEET", "127.0.0.1", all[0].Port, all[0].BusPort); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, "every node to know the others", func() bool {
		for _, s := range all {
			nodes, err := client(s).ClusterNodes(ctx).Result()
			if err != nil || strings.Count(strings.TrimSpace(nodes), "\n")+1 != len(all) {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	for i, r := range replicas {
		id, err := do(masters[i%len(masters)], "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		if _, err := do(r, "CLUSTER", "REPLICATE", id); err != nil {
			return err
		}
	}
	return waitFor(ctx, "the cluster to be ok with its replicas in sync", func() bool {
		for _, s := range all {
			info, err := client(s).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		for _, r := range replicas {
			info, err := client(r).Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(info, "master_link_status:up") {
				return false
			}
		}
		return true
	})
}

// waitFor polls ok for up to 30 s.
func waitFor(ctx context.Context, what string, ok func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redisserver: cluster: waited 30s for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
