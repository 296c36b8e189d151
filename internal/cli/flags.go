package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flag annotations: every otpq flag names its environment variable and the
// default it shows in help and in the README.
const (
	annotEnv     = "otpq_env"     // OTPQ_ variable read when the flag is not on the command line
	annotDefault = "otpq_default" // the effective default, in words when the zero value means something else
	annotHere    = "otpq_here"    // the default's value on this machine (help only; not in the README)
)

// flagSet registers flags that also read an OTPQ_ variable, each in one
// line: fs.String("callback-addr", "", "address of the receiver", "off").
// The optional last argument is the default as users should read it, when
// the zero value stands for something else ("one per CPU", "off"); without
// it the default value itself is shown.
type flagSet struct{ fs *pflag.FlagSet }

func flagsOf(cmd *cobra.Command) flagSet { return flagSet{fs: cmd.Flags()} }

// String registers a string flag.
func (f flagSet) String(name, def, usage string, show ...string) *string {
	p := f.fs.String(name, def, usage)
	f.annotate(name, def, show)
	return p
}

// Int registers an int flag.
func (f flagSet) Int(name string, def int, usage string, show ...string) *int {
	p := f.fs.Int(name, def, usage)
	f.annotate(name, fmt.Sprint(def), show)
	return p
}

// Float64 registers a float flag.
func (f flagSet) Float64(name string, def float64, usage string, show ...string) *float64 {
	p := f.fs.Float64(name, def, usage)
	f.annotate(name, fmt.Sprint(def), show)
	return p
}

// Bool registers a boolean flag.
func (f flagSet) Bool(name string, def bool, usage string, show ...string) *bool {
	p := f.fs.Bool(name, def, usage)
	f.annotate(name, fmt.Sprint(def), show)
	return p
}

// Duration registers a duration flag; its default shows as 15m, not 15m0s.
func (f flagSet) Duration(name string, def time.Duration, usage string, show ...string) *time.Duration {
	p := f.fs.Duration(name, def, usage)
	f.annotate(name, shortDuration(def), show)
	return p
}

// Var registers a flag of a custom type.
func (f flagSet) Var(v pflag.Value, name, usage string, show ...string) {
	f.fs.Var(v, name, usage)
	f.annotate(name, v.String(), show)
}

// here adds the value a worded default takes on this machine, shown in
// help only ("one per CPU (2 here)").
func (f flagSet) here(name, value string) {
	_ = f.fs.SetAnnotation(name, annotHere, []string{value})
}

func (f flagSet) annotate(name, def string, show []string) {
	if len(show) > 0 {
		def = show[0]
	}
	if def == "" {
		def = "none"
	}
	_ = f.fs.SetAnnotation(name, annotEnv, []string{envName(name)})
	_ = f.fs.SetAnnotation(name, annotDefault, []string{def})
}

// envName is the environment variable of a flag: --retry-min-delay ↔
// OTPQ_RETRY_MIN_DELAY.
func envName(flagName string) string {
	return "OTPQ_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// shortDuration prints 15m rather than 15m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func annotation(f *pflag.Flag, key string) string {
	if v := f.Annotations[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// flagEnv is a flag's OTPQ_ variable ("" for cobra's own flags).
func flagEnv(f *pflag.Flag) string { return annotation(f, annotEnv) }

// flagDefault is the default as help shows it; withHere adds this
// machine's value of a worded default.
func flagDefault(f *pflag.Flag, withHere bool) string {
	def := annotation(f, annotDefault)
	if h := annotation(f, annotHere); withHere && h != "" {
		def += " (" + h + " here)"
	}
	return def
}

// flagsFromEnv gives every flag of cmd not set on the command line the value
// of its OTPQ_ variable, read through m.Getenv (not os.Getenv), so tests and
// embedding programs control the environment. The command line wins.
func (m *Main) flagsFromEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		key := flagEnv(f)
		if err != nil || key == "" || f.Changed {
			return
		}
		v := m.Getenv(key)
		if v == "" {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = usagef("%s: invalid value for --%s: %v", key, f.Name, e)
		}
	})
	return err
}

// flagLine is one flag as help prints it: the left column (names and
// type) and the text (usage, variable, default).
type flagLine struct{ left, text string }

// flagLines lists cmd's visible flags in help form.
func flagLines(cmd *cobra.Command, withHere bool) []flagLine {
	var lines []flagLine
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		left := "    --" + f.Name
		if f.Shorthand != "" {
			left = "-" + f.Shorthand + ", --" + f.Name
		}
		if t := flagType(f); t != "" {
			left += " " + t
		}
		text := f.Usage
		if env := flagEnv(f); env != "" {
			text += fmt.Sprintf(" (env %s; default: %s)", env, flagDefault(f, withHere))
		}
		lines = append(lines, flagLine{left: left, text: text})
	})
	return lines
}

// flagType is the placeholder shown after a flag name: none for booleans.
func flagType(f *pflag.Flag) string {
	switch t := f.Value.Type(); t {
	case "bool":
		return ""
	case "float64":
		return "float"
	default:
		return t
	}
}

// writeFlagLines prints flags in two columns, wrapping the text at width.
func writeFlagLines(b *strings.Builder, lines []flagLine, width int) {
	col := 0
	for _, l := range lines {
		col = max(col, len(l.left))
	}
	col += 4
	for _, l := range lines {
		b.WriteString("  " + l.left + strings.Repeat(" ", col-len(l.left)))
		line := 2 + col
		for i, w := range strings.Fields(l.text) {
			if i > 0 && line+1+len(w) > width {
				b.WriteString("\n" + strings.Repeat(" ", 2+col))
				line = 2 + col
			} else if i > 0 {
				b.WriteString(" ")
				line++
			}
			b.WriteString(w)
			line += len(w)
		}
		b.WriteString("\n")
	}
}
