package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is what otpq --version and otpq version print: the module version
// and the VCS revision the binary was built from, from its build
// information ("(devel)" and "unknown" for a build without them, such as
// go run or a build with -buildvcs=false).
func (m *Main) version() string {
	read := m.buildInfo
	if read == nil {
		read = debug.ReadBuildInfo
	}
	version, revision, modified, at := "unknown", "unknown", false, ""
	if bi, ok := read(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				at = s.Value
			}
		}
	}
	out := fmt.Sprintf("otpq %s (revision %s", version, revision)
	if modified {
		out += ", modified"
	}
	if at != "" {
		out += ", committed " + at
	}
	return out + ")"
}

func (m *Main) versionCmd() *cobra.Command {
	return command("version", "Print the module version and VCS revision.",
		"Prints the module version and the VCS revision otpq was built from (same as otpq --version).",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), m.version())
			return err
		})
}
