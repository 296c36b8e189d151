package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/producer"
)

// paramsFlag collects repeated --param k=v.
type paramsFlag map[string]string

func (p paramsFlag) String() string { return "" }

// Type is the placeholder help shows after --param.
func (p paramsFlag) Type() string { return "key=value" }

func (p paramsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	p[k] = v
	return nil
}

// queueFlag, expiresFlag and guardFlags are the flags send and bulk share:
// one definition, so one meaning per OTPQ_ variable.
func queueFlag(f flagSet, def string) *string {
	return f.String("queue", def, "queue: critical (interactive; workers always serve it first) or bulk")
}

func expiresFlag(f flagSet) *time.Duration {
	return f.Duration("expires-in", producer.DefaultExpiry, "how long the code stays valid after it is enqueued; it is never sent after")
}

type guardFlags struct {
	limit  *int
	window *time.Duration
}

func newGuardFlags(f flagSet) guardFlags {
	return guardFlags{
		limit: f.Int("destination-limit", producer.DefaultDestinationLimit,
			"per-destination guard: most sends to one number/address per --destination-window, counted across all producers (send: exit 5 beyond; bulk: the row is rejected); negative = off"),
		window: f.Duration("destination-window", producer.DefaultDestinationWindow, "window of --destination-limit"),
	}
}

func (m *Main) sendCmd() *cobra.Command {
	cmd := command("send --to TO --template ID [--code CODE | --code-file FILE]",
		"Enqueue one send; print its task ID alone on standard output.",
		`Validates the send, enqueues it and prints the task ID alone on standard
output. Invalid input is reported on standard error naming the field, with
exit 2, and nothing is enqueued. A duplicate --id prints the existing ID and
exits 3. A destination that already had --destination-limit sends within
--destination-window is refused with exit 5. With OTPQ_PAYLOAD_KEY (or
OTPQ_PAYLOAD_KEY_FILE) set, the code is stored encrypted.`, noArgs, nil)
	f := flagsOf(cmd)
	redisURL := redisFlag(f)
	to := f.String("to", "", "destination: E.164 phone number (+8613800138000) or e-mail address", "required")
	code := f.String("code", "", "the one-time code; prefer OTPQ_CODE or --code-file: a flag is visible in ps", "required (or --code-file)")
	codeFile := f.String("code-file", "", "read the code from this file ('-' for standard input)")
	tpl := f.String("template", "", "EngageLab template ID", "required")
	lang := f.String("language", "", "template language: default, zh_CN, zh_HK, en, ja, th, es", "the template's default")
	params := paramsFlag{}
	f.Var(params, "param", "template parameter key=value (repeatable)")
	queue := queueFlag(f, producer.QueueCritical)
	expires := expiresFlag(f)
	delay := f.Duration("delay", 0, "hold the send back this long", "none")
	id := f.String("id", "", "deduplication key: a second send with the same key is not enqueued (exit 3)", "a new random ID")
	guard := newGuardFlags(f)
	shards := shardsFlag(f)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkRedisURL(cmd, *redisURL); err != nil {
			return err
		}
		if err := checkShards(*shards); err != nil {
			return err
		}
		c, err := m.readCode(*code, *codeFile)
		if err != nil {
			return err
		}
		req := producer.Request{To: *to, Code: c, TemplateID: *tpl, Language: *lang, Params: params}
		if len(params) == 0 {
			req.Params = nil
		}
		if err := req.Validate(); err != nil {
			return usagef("%v", err)
		}
		opts := []producer.Option{producer.Queue(*queue), producer.ExpiresIn(*expires)}
		if *delay != 0 {
			opts = append(opts, producer.Delay(*delay))
		}
		if *id != "" {
			opts = append(opts, producer.DedupKey(*id))
		}
		ropt, err := m.redisOption(*redisURL)
		if err != nil {
			return err
		}
		keys, err := m.payloadKeys()
		if err != nil {
			return err
		}
		tp, err := m.tracerProvider("send")
		if err != nil {
			return err
		}
		pcfg := producer.Config{Redis: ropt, PayloadKeys: keys, DestinationLimit: *guard.limit, DestinationWindow: *guard.window, Shards: *shards}
		if tp != nil {
			pcfg.TracerProvider = tp
			defer flushTracing(tp, slog.New(slog.NewTextHandler(m.Stderr, nil)))
		}
		p, err := producer.New(pcfg)
		if err != nil {
			return usagef("%v", err)
		}
		defer p.Close()
		if err := reach(cmd.Context(), p, ropt); err != nil {
			return err
		}
		if err := p.CheckShards(cmd.Context()); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		ctx, span := rootSpan(ctx, tp, "otpq send")
		defer span.End()
		taskID, err := p.Send(ctx, req, opts...)
		switch {
		case errors.Is(err, producer.ErrDuplicate):
			fmt.Fprintln(m.Stdout, taskID)
			return &exitError{code: ExitDuplicate, msg: "duplicate: a send with this --id is already queued; nothing enqueued"}
		case errors.Is(err, producer.ErrInvalid):
			return usagef("%v", err)
		case errors.Is(err, producer.ErrDestinationLimited):
			return &exitError{code: ExitLimited, msg: err.Error() + "; nothing enqueued"}
		case err != nil:
			return reachOr(cmd.Context(), p, ropt, err)
		}
		fmt.Fprintln(m.Stdout, taskID)
		return nil
	}
	return cmd
}

// readCode takes the code from --code / OTPQ_CODE or from a file.
func (m *Main) readCode(code, file string) (string, error) {
	if file == "" {
		return code, nil
	}
	if code != "" {
		return "", usagef("--code and --code-file are exclusive")
	}
	data, err := readFileOrStdin(file, m.Stdin, 64)
	if err != nil {
		return "", usagef("--code-file: %v", err)
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}

func (m *Main) statusCmd() *cobra.Command {
	cmd := command("status TASK_ID", "Show a task's state, attempts, message ID, next attempt and last error.",
		`Looks the task up in the critical and bulk queues. Exit 1 when no queue
holds it (never enqueued, or deleted after its retention).`, exactArgs(1, "one task ID"), nil)
	f := flagsOf(cmd)
	redisURL := redisFlag(f)
	asJSON := f.Bool("json", false, "print JSON")
	shards := shardsFlag(f)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkRedisURL(cmd, *redisURL); err != nil {
			return err
		}
		if err := checkShards(*shards); err != nil {
			return err
		}
		ropt, err := m.redisOption(*redisURL)
		if err != nil {
			return err
		}
		p, err := producer.New(producer.Config{Redis: ropt, Shards: *shards})
		if err != nil {
			return usagef("%v", err)
		}
		defer p.Close()
		if err := reach(cmd.Context(), p, ropt); err != nil {
			return err
		}
		if err := p.CheckShards(cmd.Context()); err != nil {
			return err
		}
		st, err := p.Status(cmd.Context(), args[0])
		if errors.Is(err, producer.ErrNotFound) {
			return fmt.Errorf("%w in the critical and bulk queues of the Redis at %s%s", err, redisDB(ropt), defaultHint(cmd, m))
		}
		if err != nil {
			return reachOr(cmd.Context(), p, ropt, err)
		}
		if *asJSON {
			enc := json.NewEncoder(m.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printStatus(m.Stdout, st, time.Now())
		return nil
	}
	return cmd
}

// printStatus writes a task's status as aligned "key: value" lines, the
// attempts counted as the provider saw them: while the 2nd attempt runs,
// "1 done, the 2nd in progress", next to the 1st attempt's error.
func printStatus(w io.Writer, st *producer.Status, now time.Time) {
	at := func(t time.Time) string {
		s := t.UTC().Format(time.RFC3339)
		switch d := t.Sub(now).Round(time.Second); {
		case d > 0:
			s += fmt.Sprintf(" (in %s)", d)
		case d < 0:
			s += fmt.Sprintf(" (%s ago)", -d)
		default:
			s += " (now)"
		}
		return s
	}
	attempts := fmt.Sprintf("%d done", st.Attempts)
	if st.InProgress {
		attempts += fmt.Sprintf(", attempt %d in progress", st.Attempts+1)
	}
	fmt.Fprintf(w, "verdict:        %s\n", factsOf(st).Summary())
	fmt.Fprintf(w, "id:             %s\nqueue:          %s\nstate:          %s\nattempts:       %s\n", st.ID, st.Queue, st.State, attempts)
	if st.Outcome != "" {
		fmt.Fprintf(w, "outcome:        %s\n", st.Outcome)
	}
	if st.MessageID != "" {
		fmt.Fprintf(w, "message_id:     %s\nsend_channel:   %s\n", st.MessageID, st.SendChannel)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "last_error:     %s\n", st.LastError)
		if !st.LastFailedAt.IsZero() {
			fmt.Fprintf(w, "last_failed_at: %s\n", at(st.LastFailedAt))
		}
	}
	if !st.NextProcess.IsZero() {
		fmt.Fprintf(w, "next_attempt:   %s\n", at(st.NextProcess))
	}
	if !st.DeadLetteredAt.IsZero() {
		fmt.Fprintf(w, "dead_lettered:  %s\n", at(st.DeadLetteredAt))
	}
	if !st.CompletedAt.IsZero() {
		fmt.Fprintf(w, "completed_at:   %s\n", at(st.CompletedAt))
	}
	printReceipt(w, st.Receipt)
}

// redisDB names a Redis connection with its database: 127.0.0.1:6379 db 0.
func redisDB(opt asynq.RedisConnOpt) string {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return fmt.Sprintf("%s db %d", o.Addr, o.DB)
	case asynq.RedisFailoverClientOpt:
		return fmt.Sprintf("%s db %d", redisconn.Addr(opt), o.DB)
	}
	return redisconn.Addr(opt)
}

// defaultHint says, when neither --redis-url nor OTPQ_REDIS_URL chose the
// Redis, that the default was searched and how to pick another.
func defaultHint(cmd *cobra.Command, m *Main) string {
	if cmd.Flags().Changed("redis-url") || m.Getenv(envName("redis-url")) != "" {
		return ""
	}
	return " (the default: set OTPQ_REDIS_URL or --redis-url to search another)"
}
