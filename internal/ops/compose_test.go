package ops_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
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
// the fake provider only on request, and only otpq commands that exist.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t, nil)
	require.ElementsMatch(t, []string{"redis", "worker"}, p.ServiceNames(), "the fake, the otpq tool and prometheus are behind profiles")

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
	require.Equal(t, "https://otp.api.engagelab.cc", *w.Environment["ENGAGELAB_BASE_URL"], "real credentials never go to the fake by default")
	require.Empty(t, *w.Environment["ENGAGELAB_DEV_KEY"], "no made-up credentials: the worker refuses to start without real ones")
	require.Equal(t, "true", *w.Environment["OTPQ_UI_READ_ONLY"], "the UI listens on 0.0.0.0 in the container: read-only unless credentials are set")
	require.Contains(t, w.DependsOn, "redis")
	require.Len(t, w.Ports, 1)
	require.Equal(t, "127.0.0.1", w.Ports[0].HostIP)
	require.Equal(t, uint32(8080), w.Ports[0].Target)

	fake := loadCompose(t, nil, "fake").Services["fake-engagelab"]
	require.Equal(t, []string{"fake"}, fake.Profiles, "the fake provider is opt-in")
	require.Equal(t, "fake-engagelab", fake.Command[0])
	otpqAccepts(t, fake.Command)
	require.Equal(t, w.Image, fake.Image, "one image for both")
}

// TestComposeFake: make compose-fake points the worker at the fake, and
// only then does the fake run.
func TestComposeFake(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	require.NoError(t, err)
	_, target, ok := strings.Cut(string(mk), "\ncompose-fake:")
	require.True(t, ok, "make compose-fake exists")
	target, _, _ = strings.Cut(target, "\n\n")
	require.Contains(t, target, "ENGAGELAB_BASE_URL=http://fake-engagelab:8090")
	require.Contains(t, target, "docker compose --profile fake up")
	p := loadCompose(t, []string{"ENGAGELAB_BASE_URL=http://fake-engagelab:8090", "ENGAGELAB_DEV_KEY=k", "ENGAGELAB_DEV_SECRET=s"}, "fake")
	require.Contains(t, p.ServiceNames(), "fake-engagelab")
	require.Equal(t, "http://fake-engagelab:8090", *p.Services["worker"].Environment["ENGAGELAB_BASE_URL"])
}

// TestComposeEnqueue: the documented way to enqueue a code into the
// stack, docker compose run --rm otpq send …, names a service that runs the
// otpq image against the stack's Redis, takes the code from OTPQ_CODE, and
// a command line otpq accepts.
func TestComposeEnqueue(t *testing.T) {
	p := loadCompose(t, []string{"OTPQ_CODE=398210"}, "tools")
	tool, ok := p.Services["otpq"]
	require.True(t, ok, "an otpq service for docker compose run")
	require.Equal(t, []string{"tools"}, tool.Profiles, "never started by docker compose up")
	require.Equal(t, p.Services["worker"].Image, tool.Image)
	require.Equal(t, "redis://redis:6379/0", *tool.Environment["OTPQ_REDIS_URL"])
	require.Equal(t, "398210", *tool.Environment["OTPQ_CODE"], "the code passes through the environment, not a flag")
	require.Contains(t, tool.DependsOn, "redis")

	for _, doc := range []string{"docker-compose.yml", "README.md"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), doc))
		require.NoError(t, err)
		_, line, ok := strings.Cut(string(b), "docker compose run --rm otpq send ")
		require.True(t, ok, "%s documents docker compose run --rm otpq send", doc)
		line, _, _ = strings.Cut(line, "\n")
		line, _, _ = strings.Cut(line, "`")
		otpqAccepts(t, append([]string{"send"}, strings.Fields(line)...))
	}
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
	require.NotEmpty(t, prom.Volumes)
	for _, v := range prom.Volumes {
		_, err := os.Stat(v.Source)
		require.NoError(t, err, "the Prometheus files the compose file mounts exist")
	}
}

// TestDockerfile: multi-stage, static, non-root, health-checked by otpq
// itself with a command otpq accepts, built with go.mod's exact Go; the
// Prometheus image is pinned too.
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

	mod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+\.\d+)$`).FindStringSubmatch(string(mod))
	require.NotNil(t, m, "go.mod names an exact Go version")
	require.Contains(t, df, "\nFROM golang:"+m[1]+"-", "the image builds with go.mod's Go, exactly")

	prom := loadCompose(t, nil, "metrics").Services["prometheus"]
	require.Regexp(t, `^prom/prometheus:v\d+\.\d+\.\d+$`, prom.Image, "a fixed version, not latest")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
