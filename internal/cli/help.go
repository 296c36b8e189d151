package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// envVar is a setting read only from the environment: a secret, or a
// setting without a flag.
type envVar struct{ names, def, meaning string }

// envOnly lists the variables without a flag, for help and the README.
var envOnly = []envVar{
	{"ENGAGELAB_DEV_KEY, ENGAGELAB_DEV_SECRET", "none (required by worker)", "EngageLab Basic-auth credentials; missing: exit 2 before Redis is touched"},
	{"ENGAGELAB_BASE_URL", "https://otp.api.engagelab.cc", "EngageLab API endpoint (worker): http(s)://host[:port][/path], no user:pass@, query or fragment; anything else: exit 2 at start"},
	{"OTPQ_REDIS_PASSWORD_FILE", "none", "read the Redis password from this file (wins over a password in the URL)"},
	{"OTPQ_REDIS_CA_FILE", "system roots", "PEM CA that signs the Redis server's certificate; turns TLS on"},
	{"OTPQ_PAYLOAD_KEY, OTPQ_PAYLOAD_KEY_FILE", "none (codes stored in plaintext; the worker warns at start)", "kid:base64(32 bytes)[,kid2:…], or a file holding it: codes stored AES-256-GCM encrypted; the first key encrypts, all decrypt"},
	{"OTPQ_API_KEYS_FILE", "none (otpq api refuses to start, unless --insecure-no-auth on loopback)", "keys of otpq api, one name:key:secret per line (Basic auth key:secret; several lines rotate keys; the name shows in logs and metrics)"},
	{"OTPQ_UI_USER, OTPQ_UI_PASSWORD", "none", "HTTP basic auth of the web UI (worker, dev)"},
	{"OTPQ_CALLBACK_USER, OTPQ_CALLBACK_SECRET (or _FILE)", "none (the worker does not serve the callback route)", "username/secret of the EngageLab status callback: X-CALLBACK-ID verified (worker), callbacks signed (fake-engagelab)"},
	{"OTPQ_CALLBACK_AUTHORIZATION (or _FILE)", "none", "exact Authorization header the EngageLab callback must carry (worker; alone, without USER/SECRET, only with --callback-authorization-only), or sends (fake-engagelab)"},
	{"OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "none (tracing off)", "OTLP/HTTP collector of the traces (worker, api, send, bulk); the other standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER…) apply: see the README, Tracing"},
}

// exitCodes is the exit code list help and the README print.
const exitCodes = `Exit codes: 0 ok, 1 runtime failure (Redis down…), 2 bad usage or invalid
input (nothing done), 3 duplicate send (the existing ID is printed), 4 some
bulk rows rejected, 5 destination send limit reached (nothing enqueued).`

// helpWidth is where help wraps flag descriptions.
const helpWidth = 100

// helpText is a command's help: description, usage, subcommands, flags;
// the root adds the environment-only variables and the exit codes.
// withHere shows machine-dependent defaults ("one per CPU (2 here)").
func helpText(cmd *cobra.Command, withHere bool) string {
	var b strings.Builder
	desc := cmd.Long
	if desc == "" {
		desc = cmd.Short
	}
	b.WriteString(strings.TrimSpace(desc) + "\n\nUsage:\n")
	if cmd.Runnable() && (cmd.HasParent() || !cmd.HasAvailableSubCommands()) {
		b.WriteString("  " + cmd.UseLine() + "\n")
	}
	if cmd.HasAvailableSubCommands() {
		b.WriteString("  " + cmd.CommandPath() + " COMMAND [flags]\n\nCommands:\n")
		width := 0
		for _, c := range cmd.Commands() {
			width = max(width, len(c.Name()))
		}
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() || c.Name() == "help" {
				fmt.Fprintf(&b, "  %-*s  %s\n", width, c.Name(), c.Short)
			}
		}
	}
	if cmd.Example != "" {
		b.WriteString("\nExamples:\n" + cmd.Example + "\n")
	}
	if lines := flagLines(cmd, withHere); len(lines) > 0 {
		b.WriteString("\nFlags:\n")
		writeFlagLines(&b, lines, helpWidth)
	}
	if !cmd.HasParent() {
		b.WriteString("\nEnvironment only (secrets, and settings without a flag):\n")
		for _, v := range envOnly {
			fmt.Fprintf(&b, "  %s\n      %s (default: %s)\n", v.names, v.meaning, v.def)
		}
		b.WriteString("\n" + exitCodes + "\n")
	}
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\nRun '%s help COMMAND' (or '%s COMMAND --help') for a command's flags.\n", cmd.Root().Name(), cmd.Root().Name())
	}
	return b.String()
}
