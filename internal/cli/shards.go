package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/shard"
)

func (m *Main) shardsCmd() *cobra.Command {
	cmd := command("shards [N]", "Show, or change to N, the number of queue shards per class recorded in Redis.",
		`Without N, prints the shard count Redis records: the count producers
route to, the shards workers serve and every count set so far.

With N, records N shards per class (critical, bulk). Processes started
afterwards must use --shards N (OTPQ_SHARDS); running ones keep their
count until restarted. Workers keep serving every shard an earlier,
higher count used, so lowering the count strands nothing. To change it:
run otpq shards N, restart the workers with --shards N, then the
producers (send, bulk, api, your Go code). See README "Scaling past one
Redis".`, atMostOneArg("N"), nil)
	f := flagsOf(cmd)
	redisURL := redisFlag(f)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkRedisURL(cmd, *redisURL); err != nil {
			return err
		}
		set := 0
		if len(args) == 1 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > shard.MaxShards {
				return usagef("shards: N must be a number from 1 to %d, got %q", shard.MaxShards, args[0])
			}
			set = n
		}
		ropt, err := m.redisOption(*redisURL)
		if err != nil {
			return err
		}
		rdb, err := redisconn.NewClient(ropt)
		if err != nil {
			return usagef("%v", err)
		}
		defer rdb.Close()
		if err := reach(cmd.Context(), clientPinger{rdb}, ropt); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		before, err := shard.Read(ctx, rdb)
		if err != nil {
			return err
		}
		l := before
		if set > 0 {
			if l, err = shard.Set(ctx, rdb, set); err != nil {
				return err
			}
			fmt.Fprintf(m.Stdout, "recorded %d shards per class (was %d); restart the workers with --shards %d, then the producers\n", l.Count, before.Count, l.Count)
		}
		printLayout(m, l)
		return nil
	}
	return cmd
}

// atMostOneArg allows no argument or one, described by what.
func atMostOneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 1 {
			return usagef("%s takes at most one argument (%s), got %d", cmd.Name(), what, len(args))
		}
		return nil
	}
}

// clientPinger is a Redis client as reach wants it.
type clientPinger struct{ rdb redis.UniversalClient }

func (c clientPinger) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

// printLayout writes a layout as "key: value" lines.
func printLayout(m *Main, l shard.Layout) {
	counts := make([]string, len(l.Counts))
	for i, c := range l.Counts {
		counts[i] = strconv.Itoa(c)
	}
	recorded := "recorded in " + shard.Key
	if !l.Recorded {
		recorded = "nothing recorded: one queue per class"
	}
	fmt.Fprintf(m.Stdout, "shards:  %d per class (%s)\nserved:  %d per class (workers serve them all: nothing queued under an earlier count is stranded)\ncounts:  %s\n",
		l.Count, recorded, l.Served, strings.Join(counts, ", "))
}
