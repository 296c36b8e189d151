package ops_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	otpqcli "github.com/otpq/otpq/internal/cli"
)

// repoRoot is the repository root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// loadCompose parses docker-compose.yml with the compose-spec loader (what
// `docker compose config` uses), with the given environment.
func loadCompose(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(env), cli.WithProfiles(profiles))
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "docker-compose.yml does not load")
	return p
}

// otpqAccepts runs an otpq command line with -h appended: exit 0 only when
// the subcommand and every flag before -h exist.
func otpqAccepts(t *testing.T, args []string) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := otpqcli.Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	code := m.Run(context.Background(), append(append([]string{}, args...), "-h"))
	require.Equal(t, otpqcli.ExitOK, code, "otpq %s: %s", strings.Join(args, " "), errOut.String())
}

// TestComposeFile: the compose file parses, runs Redis with AOF and
// noeviction, the worker with its /readyz health check and the UI protected,
// the fake provider, and only otpq commands that exist.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t, nil)
	require.ElementsMatch(t, []string{"redis", "worker", "fake-engagelab"}, p.ServiceNames(), "prometheus is behind a profile")

	redis := p.Services["redis"]
	cmd := strings.Join(redis.Command, " ")
	require.Contains(t, cmd, "--appendonly yes")
	require.Contains(t, cmd, "--maxmemory-policy noeviction")

	w := p.Services["worker"]
	require.Equal(t, "worker", w.Command[0])
	otpqAccepts(t, w.Command)
	require.NotNil(t, w.HealthCheck)
	hc := []string(w.HealthCheck.Test)
	require.Equal(t, "CMD", hc[0])
	require.Equal(t, "/usr/local/bin/otpq", hc[1])
	require.Contains(t, hc, "http://127.0.0.1:8080/readyz")
	otpqAccepts(t, hc[2:])
	require.Equal(t, "redis://redis:6379/0", *w.Environment["OTPQ_REDIS_URL"])
	require.Equal(t, "http://fake-engagelab:8090", *w.Environment["ENGAGELAB_BASE_URL"], "compose up works without real credentials")
	require.Equal(t, "true", *w.Environment["OTPQ_UI_READ_ONLY"], "the UI listens on 0.0.0.0 in the container: read-only unless credentials are set")
	require.Contains(t, w.DependsOn, "redis")
	require.Len(t, w.Ports, 1)
	require.Equal(t, "127.0.0.1", w.Ports[0].HostIP)
	require.Equal(t, uint32(8080), w.Ports[0].Target)

	fake := p.Services["fake-engagelab"]
	require.Equal(t, "fake-engagelab", fake.Command[0])
	otpqAccepts(t, fake.Command)
	require.Equal(t, w.Image, fake.Image, "one image for both")
}

// TestComposeFileEnvironment: operators override the provider and the UI
// credentials from the environment, and the Prometheus profile loads.
func TestComposeFileEnvironment(t *testing.T) {
	p := loadCompose(t, []string{
		"ENGAGELAB_BASE_URL=https://otp.example.test", "OTPQ_UI_USER=ops", "OTPQ_UI_PASSWORD=pw", "OTPQ_UI_READ_ONLY=false",
	}, "metrics")
	w := p.Services["worker"]
	require.Equal(t, "https://otp.example.test", *w.Environment["ENGAGELAB_BASE_URL"])
	require.Equal(t, "ops", *w.Environment["OTPQ_UI_USER"])
	require.Equal(t, "false", *w.Environment["OTPQ_UI_READ_ONLY"])
	prom, ok := p.Services["prometheus"]
	require.True(t, ok)
	require.Len(t, prom.Volumes, 1)
	_, err := os.Stat(prom.Volumes[0].Source)
	require.NoError(t, err, "the Prometheus config the compose file mounts exists")
}

// TestDockerfile: multi-stage, static, non-root, health-checked by otpq
// itself with a command otpq accepts.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	require.NoError(t, err)
	df := string(b)
	require.Equal(t, 2, strings.Count(df, "\nFROM ")+boolInt(strings.HasPrefix(df, "FROM ")), "two stages")
	require.Contains(t, df, "CGO_ENABLED=0 go build")
	require.Contains(t, df, "\nFROM scratch\n")
	require.Contains(t, df, "\nUSER 65532:65532\n")
	require.Contains(t, df, `CMD ["/usr/local/bin/otpq", "healthcheck", "--url", "http://127.0.0.1:8080/readyz"]`)
	otpqAccepts(t, []string{"healthcheck", "--url", "http://127.0.0.1:8080/readyz"})
	otpqAccepts(t, []string{"worker", "--http-addr", "0.0.0.0:8080"})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
