package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redact"
)

// Flags are accepted after arguments, as in kubectl and gh.
func TestFlagsAfterArguments(t *testing.T) {
	b := setup(t)
	r := b.run(t, context.Background(), "send", "--to", "+8618701235678", "--template", "login", "--code", canaryCode)
	require.Equal(t, ExitOK, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)

	r = b.run(t, context.Background(), "status", id, "--json")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.Equal(t, id, st["id"])

	file := filepath.Join(t.TempDir(), "rows.csv")
	require.NoError(t, os.WriteFile(file, []byte("to,code,template\n+8618701235679,"+canaryCode+",login\n"), 0o600))
	r = b.run(t, context.Background(), "bulk", file, "--dry-run", "--format", "csv")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Zero(t, b.pending(t, "bulk"), "--dry-run after FILE was honoured")
}

// Help goes to stdout with exit 0, by every route; bare otpq prints the
// top-level help and exits 0 (as kubectl and gh do).
func TestHelpOnStdout(t *testing.T) {
	b := bundle{}
	for _, args := range [][]string{{}, {"--help"}, {"-h"}, {"help"}} {
		r := b.run(t, context.Background(), args...)
		require.Equal(t, ExitOK, r.code, "%v: %s", args, r.stderr)
		require.Empty(t, r.stderr, args)
		require.Contains(t, r.stdout, "Usage:\n  otpq COMMAND [flags]", args)
		for _, name := range []string{"worker", "send", "status", "bulk", "dev", "fake-engagelab", "healthcheck", "version", "completion"} {
			require.Contains(t, r.stdout, "\n  "+name+" ", "%v lists %s", args, name)
		}
		require.NotContains(t, r.stdout, "\n  bench ", "otpq bench moved to otpq-bench")
		require.Contains(t, r.stdout, "Exit codes:")
		require.Contains(t, r.stdout, "ENGAGELAB_DEV_KEY, ENGAGELAB_DEV_SECRET")
	}
	for _, name := range []string{"worker", "send", "status", "bulk", "dev", "fake-engagelab", "healthcheck"} {
		viaHelp := b.run(t, context.Background(), "help", name)
		require.Equal(t, ExitOK, viaHelp.code, viaHelp.stderr)
		require.Empty(t, viaHelp.stderr)
		require.Contains(t, viaHelp.stdout, "Usage:\n  otpq "+name)
		require.Contains(t, viaHelp.stdout, "\nFlags:\n", name)
		for _, flag := range []string{"--help", "-h"} {
			r := b.run(t, context.Background(), name, flag)
			require.Equal(t, ExitOK, r.code, r.stderr)
			require.Equal(t, viaHelp.stdout, r.stdout, "otpq help %s and otpq %s %s print the same", name, name, flag)
		}
	}
	r := b.run(t, context.Background(), "help", "send")
	require.Contains(t, r.stdout, "      --to string ", "double-dash flags")
	require.NotRegexp(t, `(?m)^\s+-[a-z][a-z-]+ `, r.stdout, "no single-dash long flags")
}

// Usage mistakes exit 2 with the reason and where to find help, on stderr.
func TestUsageErrors(t *testing.T) {
	b := bundle{}
	for args, want := range map[string]string{
		"sned":                 `unknown command "sned" (did you mean send?)`,
		"send --nope":          "unknown flag: --nope",
		"send --to":            "flag needs an argument: --to",
		"worker --concurrency": "flag needs an argument: --concurrency",
		"status --json":        "status takes exactly one task ID, got 0 arguments",
		"status a b":           "status takes exactly one task ID, got 2 arguments",
		"dev extra":            "dev takes no arguments",
		"worker --servers x":   `invalid argument "x" for "--servers"`,
	} {
		r := b.run(t, context.Background(), strings.Fields(args)...)
		require.Equal(t, ExitUsage, r.code, "%s: %s", args, r.stderr)
		require.Contains(t, r.stderr, want, args)
		require.Contains(t, r.stderr, "--help' for usage.", args)
		require.Empty(t, r.stdout, args)
	}
}

func TestVersion(t *testing.T) {
	b := bundle{}
	flag := b.run(t, context.Background(), "--version")
	cmd := b.run(t, context.Background(), "version")
	require.Equal(t, ExitOK, flag.code, flag.stderr)
	require.Equal(t, ExitOK, cmd.code, cmd.stderr)
	require.Equal(t, flag.stdout, cmd.stdout)
	require.Regexp(t, `^otpq \S+ \(revision \S+.*\)\n$`, cmd.stdout)

	m := &Main{buildInfo: func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/otpq/otpq", Version: "v1.4.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-11-26T07:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		}}, true
	}}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out strings.Builder
		m.Stdout = &out
		require.Equal(t, ExitOK, m.Run(context.Background(), args))
		require.Equal(t, "otpq v1.4.0 (revision 0123abcd, modified, committed 2026-11-26T07:00:00Z)\n", out.String(), args)
	}
}

func TestCompletion(t *testing.T) {
	b := bundle{}
	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef otpq", "fish": "complete -c otpq"} {
		r := b.run(t, context.Background(), "completion", shell)
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, want, shell)
	}
}

// visibleCommands walks the command tree: every command a user can run,
// cobra's own (help, completion) included.
func visibleCommands(root *cobra.Command) []*cobra.Command {
	var all []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden {
				continue
			}
			all = append(all, sub)
			walk(sub)
		}
	}
	walk(root)
	return all
}

// cobraOwn are the commands and flags cobra adds; they read no variable.
func cobraOwn(c *cobra.Command, f *pflag.Flag) bool {
	for p := c; p != nil; p = p.Parent() {
		if p.Name() == "completion" || p.Name() == "help" {
			return true
		}
	}
	return f != nil && (f.Name == "help" || f.Name == "version")
}

// Every flag's help line names its OTPQ_ variable and its effective
// default, with real values rather than 0 or 0s.
func TestHelpNamesEnvAndDefault(t *testing.T) {
	b := bundle{}
	root := (&Main{}).root()
	checked := 0
	for _, c := range visibleCommands(root) {
		if cobraOwn(c, nil) {
			continue
		}
		r := b.run(t, context.Background(), "help", c.Name())
		require.Equal(t, ExitOK, r.code)
		help := strings.Join(strings.Fields(r.stdout), " ") // undo the wrapping
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || cobraOwn(c, f) {
				return
			}
			env := envName(f.Name)
			require.Equal(t, env, flagEnv(f), "otpq %s --%s has its variable", c.Name(), f.Name)
			require.Regexp(t, fmt.Sprintf(`--%s .*\(env %s; default: [^)]+\)`, f.Name, env), help, "otpq %s --%s", c.Name(), f.Name)
			checked++
		})
		require.NotRegexp(t, `default: 0s?\)`, help, "a zero standing for something else is shown as what it means: %s", c.Name())
	}
	require.Greater(t, checked, 40)

	r := b.run(t, context.Background(), "worker", "--help")
	help := strings.Join(strings.Fields(r.stdout), " ")
	require.Contains(t, help, fmt.Sprintf("(env OTPQ_SERVERS; default: one per CPU (%d here))", runtime.GOMAXPROCS(0)))
	require.Contains(t, help, "(env OTPQ_RETRY_MIN_DELAY; default: 1s)")
	require.Contains(t, help, "(env OTPQ_SHUTDOWN_TIMEOUT; default: http-timeout + 5s)")
	r = b.run(t, context.Background(), "send", "--help")
	help = strings.Join(strings.Fields(r.stdout), " ")
	require.Contains(t, help, "(env OTPQ_DESTINATION_LIMIT; default: 5)")
	require.Contains(t, help, "(env OTPQ_DESTINATION_WINDOW; default: 15m)")
	require.Contains(t, help, "(env OTPQ_CODE; default: required (or --code-file))")
	r = b.run(t, context.Background(), "bulk", "--help")
	require.NotContains(t, r.stdout, "cpuprofile", "a benchmark flag, not for users")
}

// envCollisions lists the variables that stand for flags of different
// meanings (names or descriptions differ) in different commands, or that a
// flag shares with an environment-only setting.
func envCollisions(root *cobra.Command) []string {
	type use struct{ cmd, flag, usage string }
	seen := map[string]use{}
	for _, v := range envOnly {
		for _, name := range strings.Split(v.names, ", ") {
			seen[name] = use{cmd: "(environment only)", flag: "", usage: v.meaning}
		}
	}
	var problems []string
	for _, c := range visibleCommands(root) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			env := flagEnv(f)
			if env == "" {
				return
			}
			u := use{cmd: c.CommandPath(), flag: f.Name, usage: f.Usage}
			prev, ok := seen[env]
			if !ok {
				seen[env] = u
				return
			}
			if prev.flag != u.flag || prev.usage != u.usage {
				problems = append(problems, fmt.Sprintf("%s: %s --%s (%q) vs %s --%s (%q)", env, prev.cmd, prev.flag, prev.usage, u.cmd, u.flag, u.usage))
			}
		})
	}
	return problems
}

// No OTPQ_ variable means two things (OTPQ_RATE was the worker's provider
// rate and bulk's enqueue pace).
func TestEnvVariablesHaveOneMeaning(t *testing.T) {
	root := (&Main{}).root()
	require.Empty(t, envCollisions(root))

	// The check catches a collision: a second meaning of --rate.
	bad := command("pace", "", "", noArgs, nil)
	flagsOf(bad).Float64("rate", 0, "enqueue at most this many rows per second")
	root.AddCommand(bad)
	problems := envCollisions(root)
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "OTPQ_RATE: ")
	require.Contains(t, problems[0], "otpq worker --rate")
	require.Contains(t, problems[0], "otpq pace --rate")

	root = (&Main{}).root()
	bad = command("pace", "", "", noArgs, nil)
	flagsOf(bad).String("ui-password", "", "web UI password")
	root.AddCommand(bad)
	require.Len(t, envCollisions(root), 1, "a flag must not take over an environment-only variable")
}

// bulk's pace is --enqueue-rate / OTPQ_ENQUEUE_RATE; OTPQ_RATE (the
// worker's provider rate) does not reach it.
func TestBulkEnqueueRate(t *testing.T) {
	b := setup(t)
	file := filepath.Join(t.TempDir(), "rows.csv")
	require.NoError(t, os.WriteFile(file, []byte("to,code,template\n+8618701235679,"+canaryCode+",login\n"), 0o600))
	b.env["OTPQ_RATE"] = "not-a-number"
	r := b.run(t, context.Background(), "bulk", "--dry-run", file)
	require.Equal(t, ExitOK, r.code, "OTPQ_RATE is not read by bulk: %s", r.stderr)
	b.env["OTPQ_ENQUEUE_RATE"] = "-3"
	r = b.run(t, context.Background(), "bulk", "--dry-run", file)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "--enqueue-rate: must not be negative")
	r = b.run(t, context.Background(), "bulk", "--dry-run", "--rate", "5", file)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "unknown flag: --rate")
}

// The README's command and configuration tables are what help prints:
// regenerate them with `make docs` when this fails.
func TestReadmeTablesMatchHelp(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	want, err := replaceSections(string(data), docSections((&Main{}).root()))
	require.NoError(t, err)
	require.Equal(t, want, string(data), "README.md's generated tables are stale: run make docs")

	_, err = replaceSections("no markers", docSections((&Main{}).root()))
	require.Error(t, err)
}

// The README's --log-level defaults are the levels the commands really log
// at when neither the flag nor OTPQ_LOG_LEVEL is given: the table once said
// info for otpq dev, which lowered itself to errors only at run time.
func TestReadmeLogLevelDefaultsAreReal(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `--log-level` / `OTPQ_LOG_LEVEL` \\| ([^|]+) \\| ([^|]+) \\|").FindStringSubmatch(string(data))
	require.NotNil(t, row, "README has the --log-level row")
	commands := strings.Split(strings.TrimSpace(row[1]), ", ")
	documented := map[string]string{}
	for _, part := range strings.Split(strings.TrimSpace(row[2]), ", ") {
		name, level, perCommand := strings.Cut(part, ": ")
		if !perCommand { // one default for every command
			for _, c := range commands {
				documented[c] = part
			}
			break
		}
		documented[name] = level
	}
	require.Len(t, documented, len(commands), "a default for each command: %q", row[2])
	require.Equal(t, "error", documented["dev"], "otpq dev logs errors only")
	for _, c := range commands {
		require.Equal(t, documented[c], loggedLevel(t, c), "otpq %s: the README's default log level is not the one it logs at", c)
	}
}

// loggedLevel is the lowest level the logger of `otpq cmd` writes, run
// with no flags and no OTPQ_LOG_LEVEL. The command is stopped as soon as
// its logger is built (OnLogger panics), before it starts anything.
func loggedLevel(t *testing.T, cmd string) string {
	t.Helper()
	type built struct{}
	var got *slog.Logger
	env := map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s", "OTPQ_REDIS_URL": "redis://127.0.0.1:1/0"}
	m := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, Getenv: func(k string) string { return env[k] },
		OnLogger: func(l *slog.Logger) { got = l; panic(built{}) }}
	func() {
		defer func() {
			if x := recover(); x != nil {
				if _, ok := x.(built); !ok {
					panic(x)
				}
			}
		}()
		m.Run(context.Background(), []string{cmd})
	}()
	require.NotNil(t, got, "otpq %s built no logger", cmd)
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if got.Enabled(context.Background(), l) {
			return strings.ToLower(l.String())
		}
	}
	return "none"
}

// TestReadmeSaysThingsOnce: a paragraph written twice drifts (two masks of
// one number); each bold lead-in appears once, and the mask shown is the
// one redact produces.
func TestReadmeSaysThingsOnce(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	leads := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\*\*[^*]+\*\*`).FindAllString(string(data), -1) {
		leads[m]++
	}
	for lead, n := range leads {
		require.Equal(t, 1, n, "%s appears %d times in README.md", lead, n)
	}
	require.Contains(t, string(data), redact.Destination("+8618701235678"))
	require.NotContains(t, string(data), "+86187****5678")
}
