package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/otpq/otpq/producer"
)

// paramsFlag collects repeated --param k=v.
type paramsFlag map[string]string

func (p paramsFlag) String() string { return "" }

func (p paramsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	p[k] = v
	return nil
}

func (m *Main) sendCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq send", flag.ContinueOnError)
	redisURL := redisFlag(fs)
	to := fs.String("to", "", "destination: E.164 phone number (+8613800138000) or e-mail address (required)")
	code := fs.String("code", "", "the one-time code (required; prefer OTPQ_CODE or --code-file: a flag is visible in ps)")
	codeFile := fs.String("code-file", "", "read the code from this file ('-' for standard input)")
	tpl := fs.String("template", "", "EngageLab template ID (required)")
	lang := fs.String("language", "", "template language: default, zh_CN, zh_HK, en, ja, th, es")
	params := paramsFlag{}
	fs.Var(params, "param", "template parameter key=value (repeatable)")
	queue := fs.String("queue", producer.QueueCritical, "queue: critical (interactive) or bulk")
	expires := fs.Duration("expires-in", producer.DefaultExpiry, "how long the code stays valid; it is never sent after")
	delay := fs.Duration("delay", 0, "hold the send back this long")
	id := fs.String("id", "", "deduplication key: a second send with the same key is not enqueued (exit 3)")
	destLimit := fs.Int("destination-limit", 0, "most sends to one destination per --destination-window, across all producers (exit 5 beyond); 0 = 5, negative = off")
	destWindow := fs.Duration("destination-window", 0, "window of --destination-limit; 0 = 15m")
	return m.newCommand("send", "otpq send --to … --template … [--code …|--code-file …] [flags]",
		"Enqueue one OTP send and print its task ID.",
		`Validates the send, enqueues it and prints the task ID alone on standard
output. Invalid input is reported on standard error naming the field, with
exit 2, and nothing is enqueued. A duplicate --id prints the existing ID and
exits 3. A destination that already had --destination-limit sends within
--destination-window is refused with exit 5. With OTPQ_PAYLOAD_KEY (or
OTPQ_PAYLOAD_KEY_FILE) set, the code is stored encrypted.`, fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("send takes no arguments, got %q", args)
			}
			if err := m.checkRedisURL(*redisURL); err != nil {
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
			p, err := producer.New(producer.Config{Redis: ropt, PayloadKeys: keys, DestinationLimit: *destLimit, DestinationWindow: *destWindow})
			if err != nil {
				return usagef("%v", err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
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
				return err
			}
			fmt.Fprintln(m.Stdout, taskID)
			return nil
		})
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

func (m *Main) statusCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq status", flag.ContinueOnError)
	redisURL := redisFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	return m.newCommand("status", "otpq status [--json] TASK_ID", "Show a task's state, attempts, message ID and last error.",
		`Looks the task up in the critical and bulk queues. Exit 1 when no queue
holds it (never enqueued, or deleted after its retention).`, fs,
		func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("status takes exactly one task ID")
			}
			if err := m.checkRedisURL(*redisURL); err != nil {
				return err
			}
			ropt, err := m.redisOption(*redisURL)
			if err != nil {
				return err
			}
			p, err := producer.New(producer.Config{Redis: ropt})
			if err != nil {
				return usagef("%v", err)
			}
			defer p.Close()
			st, err := p.Status(ctx, args[0])
			if err != nil {
				return err
			}
			if *asJSON {
				enc := json.NewEncoder(m.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			w := m.Stdout
			fmt.Fprintf(w, "id:           %s\nqueue:        %s\nstate:        %s\nattempts:     %d\n", st.ID, st.Queue, st.State, st.Attempts)
			if st.MessageID != "" {
				fmt.Fprintf(w, "message_id:   %s\nsend_channel: %s\n", st.MessageID, st.SendChannel)
			}
			if st.LastError != "" {
				fmt.Fprintf(w, "last_error:   %s\n", st.LastError)
			}
			if !st.NextProcess.IsZero() {
				fmt.Fprintf(w, "next_attempt: %s\n", st.NextProcess.Format(time.RFC3339))
			}
			if !st.CompletedAt.IsZero() {
				fmt.Fprintf(w, "completed_at: %s\n", st.CompletedAt.Format(time.RFC3339))
			}
			return nil
		})
}
