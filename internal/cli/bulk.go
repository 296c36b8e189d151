package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"

	"github.com/otpq/otpq/internal/bulk"
	"github.com/otpq/otpq/producer"
)

func (m *Main) bulkCmd() *cobra.Command {
	cmd := command("bulk FILE|-", "Enqueue every row of a CSV or JSON Lines file (see Bulk sends).",
		`Reads FILE (or standard input for -) row by row, validates each row like
otpq send, and enqueues the valid ones into the bulk queue, Redis-pipelined.
CSV header: to,code,template[,language][,id][,param.NAME…]. JSON Lines:
{"to":…,"code":…,"template":…,"language":…,"params":{…},"id":…}.

Bad rows are reported with their line number and field (standard error, or
--rejects FILE) and skipped. Each row's deduplication key is its id column,
else a hash of to, template, language and params (never the code): running
the same file again enqueues nothing twice and counts the rows already
queued as duplicates, so an interrupted run is resumed by running it again.

Prints a summary on standard output. Exit 0 when every row was accepted or
already queued, 4 when some rows were rejected, 1 when Redis failed or the
run was interrupted (run it again), 2 for unusable input (unreadable file,
bad CSV header, a CSV quote never closed).`, exactArgs(1, "one FILE (or - for standard input)"), nil)
	f := flagsOf(cmd)
	redisURL := redisFlag(f)
	format := f.String("format", "auto", "file format: csv, jsonl, or auto (from the file name, else the first byte)")
	queue := queueFlag(f, producer.QueueBulk)
	expires := expiresFlag(f)
	retention := f.Duration("retention", producer.DefaultRetention, "how long finished rows are remembered, so that a re-run does not send them again")
	ratePer := f.Float64("enqueue-rate", 0, "enqueue at most this many rows per second", "as fast as Redis takes them")
	dryRun := f.Bool("dry-run", false, "validate every row, enqueue nothing")
	rejects := f.String("rejects", "", "write rejected rows (line number, field, reason) to this file", "standard error")
	idPrefix := f.String("id-prefix", "", "prefix of every row's deduplication key, to tell campaigns with the same rows apart")
	every := f.Duration("progress-interval", 10*time.Second, "period of progress lines when standard error is not a terminal (0 = none)")
	guard := newGuardFlags(f)
	shards := shardsFlag(f)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkRedisURL(cmd, *redisURL); err != nil {
			return err
		}
		if err := checkShards(*shards); err != nil {
			return err
		}
		if *ratePer < 0 {
			return usagef("--enqueue-rate: must not be negative, got %v", *ratePer)
		}
		if err := positive("expires-in", *expires); err != nil {
			return err
		}
		if err := positive("retention", *retention); err != nil {
			return err
		}
		if *queue != producer.QueueBulk && *queue != producer.QueueCritical {
			return usagef("--queue: %q is not %q or %q", *queue, producer.QueueBulk, producer.QueueCritical)
		}
		f := bulk.Format(strings.ToLower(*format))
		switch f {
		case "auto":
			f = bulk.FormatAuto
		case bulk.FormatCSV, bulk.FormatJSONL:
		default:
			return usagef("--format: %q is not csv, jsonl or auto", *format)
		}
		return m.runBulk(cmd.Context(), bulkRun{
			path: args[0], format: f, redisURL: *redisURL, dryRun: *dryRun, rejects: *rejects,
			idPrefix: *idPrefix, rate: *ratePer, every: *every, destLimit: *guard.limit, destWindow: *guard.window,
			opts:      []producer.Option{producer.Queue(*queue), producer.ExpiresIn(*expires)},
			retention: *retention, shards: *shards,
		})
	}
	return cmd
}

type bulkRun struct {
	path, redisURL, rejects, idPrefix string
	shards                            int
	format                            bulk.Format
	destLimit                         int
	destWindow                        time.Duration
	dryRun                            bool
	rate                              float64
	every                             time.Duration
	opts                              []producer.Option
	retention                         time.Duration
}

func (m *Main) runBulk(ctx context.Context, b bulkRun) error {
	var in io.Reader = m.Stdin
	var size int64
	if b.path != "-" {
		f, err := os.Open(b.path)
		if err != nil {
			return usagef("bulk: %v", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = st.Size()
		}
		in = f
	}
	rd, err := bulk.NewReader(in, b.path, b.format, b.idPrefix)
	if err != nil {
		return usagef("bulk: %s: %v", b.path, err)
	}
	rejectsTo := m.Stderr
	if b.rejects != "" {
		rf, err := os.Create(b.rejects)
		if err != nil {
			return usagef("--rejects: %v", err)
		}
		defer rf.Close()
		rejectsTo = rf
	}
	cfg := bulk.Config{
		Reader: rd, Size: size, DryRun: b.dryRun, Options: b.opts, Rate: b.rate,
		Rejects: rejectsTo, ProgressEvery: b.every,
	}
	if b.every > 0 {
		cfg.Progress = m.Stderr
	}
	if f, ok := m.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		cfg.Progress, cfg.Terminal = m.Stderr, true
	}
	if !b.dryRun {
		keys, err := m.payloadKeys() // bulk codes are sealed like single sends
		if err != nil {
			return err
		}
		ropt, err := m.redisOption(b.redisURL)
		if err != nil {
			return err
		}
		tp, err := m.tracerProvider("bulk")
		if err != nil {
			return err
		}
		pcfg := producer.Config{Redis: ropt, PayloadKeys: keys, Retention: b.retention, DestinationLimit: b.destLimit, DestinationWindow: b.destWindow, Shards: b.shards}
		if tp != nil {
			pcfg.TracerProvider = tp
			defer flushTracing(tp, slog.New(slog.NewTextHandler(m.Stderr, nil)))
		}
		p, err := producer.New(pcfg)
		if err != nil {
			return usagef("%v", err)
		}
		defer p.Close()
		if err := reach(ctx, p, ropt); err != nil {
			return err
		}
		if err := p.CheckShards(ctx); err != nil {
			return err
		}
		cfg.Sender = p
		var span trace.Span
		ctx, span = rootSpan(ctx, tp, "otpq bulk")
		defer span.End()
	}
	sum, err := bulk.Run(ctx, cfg)
	fmt.Fprintln(m.Stdout, sum.String())
	switch {
	case errors.Is(err, bulk.ErrBadInput):
		return usagef("bulk: %s: %v (rows before it were processed)", b.path, err)
	case err != nil:
		return fmt.Errorf("bulk: %s: %w (rows before it were processed)", b.path, err)
	case sum.Failed > 0:
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("%d rows were not enqueued (Redis failed); run the same file again", sum.Failed)}
	case sum.Interrupted:
		return &exitError{code: ExitFailure, msg: "interrupted; run the same file again to send the rest"}
	case sum.Rejected > 0:
		return &exitError{code: ExitRejected, msg: fmt.Sprintf("%s rejected (see the reasons above%s)", bulk.Count(sum.Rejected, "row"), map[bool]string{true: " in " + b.rejects, false: ""}[b.rejects != ""])}
	}
	return nil
}
