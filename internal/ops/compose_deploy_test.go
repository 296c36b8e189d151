package ops_test

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/receipts"
)

// mounts maps the container paths of a service's bind mounts to their
// host paths, and requires each host path to exist.
func mounts(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		_, err := os.Stat(v.Source)
		require.NoError(t, err, "%s mounts %s, which does not exist", s.Name, v.Source)
		require.True(t, v.ReadOnly, "%s mounts %s read-only", s.Name, v.Source)
		m[v.Target] = v.Source
	}
	return m
}

// TestComposeMetrics: the metrics profile runs Prometheus with the config
// and every rule file it names mounted side by side, and Grafana with the
// data source pointing at that Prometheus and the dashboard mounted where
// the dashboard provider reads; both pinned, both on loopback only.
func TestComposeMetrics(t *testing.T) {
	p := loadCompose(t, nil, "metrics")
	prom, graf := p.Services["prometheus"], p.Services["grafana"]
	require.Equal(t, []string{"metrics"}, prom.Profiles)
	require.Equal(t, []string{"metrics"}, graf.Profiles)
	require.Regexp(t, `^grafana/grafana:\d+\.\d+\.\d+$`, graf.Image, "a fixed version, not latest")
	for _, s := range []types.ServiceConfig{prom, graf} {
		require.Len(t, s.Ports, 1)
		require.Equal(t, "127.0.0.1", s.Ports[0].HostIP, "%s is published on loopback only", s.Name)
	}

	pm := mounts(t, prom)
	cfgFile, ok := pm["/etc/prometheus/prometheus.yml"]
	require.True(t, ok, "prometheus.yml is mounted where the image reads it")
	cfg, err := os.ReadFile(cfgFile)
	require.NoError(t, err)
	_, ruleList, ok := strings.Cut(string(cfg), "\nrule_files:\n")
	require.True(t, ok, "the Prometheus config loads the alert rules")
	rules := regexp.MustCompile(`(?m)^  - (\S+)$`).FindAllStringSubmatch(ruleList, -1)
	require.NotEmpty(t, rules)
	for _, r := range rules {
		src, ok := pm[path.Join("/etc/prometheus", r[1])]
		require.True(t, ok, "rule file %s is mounted next to prometheus.yml", r[1])
		require.Equal(t, filepath.Base(src), r[1])
	}
	require.Contains(t, string(cfg), `targets: ["worker:8080"]`, "scrapes the worker service's --http-addr")

	gm := mounts(t, graf)
	prov, ok := gm["/etc/grafana/provisioning"]
	require.True(t, ok, "Grafana's provisioning directory is mounted")
	ds, err := os.ReadFile(filepath.Join(prov, "datasources", "prometheus.yml"))
	require.NoError(t, err)
	require.Contains(t, string(ds), "url: http://prometheus:9090", "the data source is the stack's Prometheus")
	dp, err := os.ReadFile(filepath.Join(prov, "dashboards", "otpq.yml"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s+path: (\S+)$`).FindStringSubmatch(string(dp))
	require.NotNil(t, m, "the dashboard provider names a path")
	found := false
	for target, src := range gm {
		if path.Dir(target) == m[1] {
			require.Equal(t, "otpq-dashboard.json", filepath.Base(src))
			found = true
		}
	}
	require.True(t, found, "the dashboard JSON is mounted in %s, where the provider reads", m[1])
}

// TestComposeReceipts: the callback credentials and the payload key reach
// the worker from the environment (and the key reaches the otpq tool too,
// which must encrypt with the worker's key), nothing is made up when they
// are unset, and the https profile puts Caddy in front of exactly the
// callback route on the worker's --http-addr.
func TestComposeReceipts(t *testing.T) {
	p := loadCompose(t, []string{"OTPQ_CALLBACK_USER=cbuser", "OTPQ_CALLBACK_SECRET=cbsecret", "OTPQ_PAYLOAD_KEY=k1:a2V5",
		"OTPQ_CALLBACK_DOMAIN=otp.example.com"}, "https", "tools")
	w, tool := p.Services["worker"], p.Services["otpq"]
	require.Equal(t, "cbuser", *w.Environment["OTPQ_CALLBACK_USER"])
	require.Equal(t, "cbsecret", *w.Environment["OTPQ_CALLBACK_SECRET"])
	require.Equal(t, "k1:a2V5", *w.Environment["OTPQ_PAYLOAD_KEY"])
	require.Equal(t, "k1:a2V5", *tool.Environment["OTPQ_PAYLOAD_KEY"], "producer and worker share the payload key")
	unset := loadCompose(t, nil, "tools")
	for _, k := range []string{"OTPQ_CALLBACK_USER", "OTPQ_CALLBACK_SECRET", "OTPQ_PAYLOAD_KEY"} {
		require.Empty(t, *unset.Services["worker"].Environment[k], "%s: no made-up default", k)
	}

	caddy, ok := p.Services["caddy"]
	require.True(t, ok)
	require.Equal(t, []string{"https"}, caddy.Profiles, "HTTPS is opt-in")
	require.Regexp(t, `^caddy:\d+\.\d+\.\d+$`, caddy.Image, "a fixed version, not latest")
	require.Equal(t, "otp.example.com", *caddy.Environment["OTPQ_CALLBACK_DOMAIN"])
	cf, ok := mounts(t, caddy)["/etc/caddy/Caddyfile"]
	require.True(t, ok, "the Caddyfile is mounted where the image reads it")
	b, err := os.ReadFile(cf)
	require.NoError(t, err)
	caddyfile := string(b)
	require.Contains(t, caddyfile, "{$OTPQ_CALLBACK_DOMAIN:localhost} {")
	_, port, ok := strings.Cut(w.Command[slices.Index(w.Command, "--http-addr")+1], ":")
	require.True(t, ok)
	require.Regexp(t, `(?s)handle `+regexp.QuoteMeta(receipts.Path)+` \{\s+reverse_proxy worker:`+port+`\s+\}`, caddyfile,
		"the callback route goes to the worker's --http-addr")
	require.Equal(t, 2, strings.Count(caddyfile, "\thandle "), "the callback route and a 404 for everything else: the UI and /metrics are not exposed")
	require.Contains(t, caddyfile, "respond 404")
	var published []uint32
	for _, pt := range caddy.Ports {
		published = append(published, pt.Target)
	}
	require.ElementsMatch(t, []uint32{80, 443}, published, "443 for EngageLab, 80 for the ACME challenge")
}

// TestComposeBulkFile: `docker compose run --rm otpq bulk FILE` reads FILE
// from ./data: the otpq service mounts it read-only at its working
// directory, and the documented command lines are ones otpq accepts.
func TestComposeBulkFile(t *testing.T) {
	root := repoRoot(t)
	tool := loadCompose(t, nil, "tools").Services["otpq"]
	require.Equal(t, "/data", tool.WorkingDir)
	require.Equal(t, filepath.Join(root, "data"), mounts(t, tool)[tool.WorkingDir], "./data is mounted at the working directory")

	for _, doc := range []string{"docker-compose.yml", "README.md"} {
		b, err := os.ReadFile(filepath.Join(root, doc))
		require.NoError(t, err)
		lines := regexp.MustCompile("docker compose run --rm otpq (bulk [^`\n#]+)").FindAllStringSubmatch(string(b), -1)
		require.NotEmpty(t, lines, "%s documents a bulk send from ./data", doc)
		for _, l := range lines {
			args := strings.Fields(l[1])
			otpqAccepts(t, args)
			require.NotContains(t, args[len(args)-1], "/", "%s: the file is named relative to ./data", doc)
		}
	}
}

// TestReadmeInstall: the README's install section names go.mod's Go
// version and a go install path that is the otpq command's package.
func TestReadmeInstall(t *testing.T) {
	root := repoRoot(t)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goVer := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(mod))
	modPath := regexp.MustCompile(`(?m)^module (\S+)$`).FindStringSubmatch(string(mod))
	require.NotNil(t, goVer)
	require.NotNil(t, modPath)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	_, install, ok := strings.Cut(string(b), "\n## Install\n")
	require.True(t, ok, "the README has an Install section")
	install, _, _ = strings.Cut(install, "\n## ")
	require.Contains(t, install, "Go "+goVer[1]+" or later")
	m := regexp.MustCompile(`go install (\S+)@latest`).FindStringSubmatch(install)
	require.NotNil(t, m, "the README says how to go install otpq")
	pkg, ok := strings.CutPrefix(m[1], modPath[1]+"/")
	require.True(t, ok, "%s is in module %s", m[1], modPath[1])
	main, err := os.ReadFile(filepath.Join(root, pkg, "main.go"))
	require.NoError(t, err, "%s is a package of this repository", m[1])
	require.Contains(t, string(main), "package main")
	require.Contains(t, install, "make build")
	require.Contains(t, string(b), "\n### Production checklist\n")
}
