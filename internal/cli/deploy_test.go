package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/receipts"
)

// deployDir is the repository's deploy/ directory.
func deployDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "deploy"))
	require.NoError(t, err)
	return dir
}

// requireTool returns the path of a binary of Debian's prometheus package.
// A missing binary fails the test (never skips it): make test installs the
// package through .ci/ensure-prometheus.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: install the prometheus package (apt-get install prometheus, or bash .ci/ensure-prometheus, which make test runs)", name)
	}
	return p
}

// TestAlertRules runs promtool's unit tests of deploy/otpq-alerts.yml
// (every alert fires on its case, with its labels and rendered annotations,
// and stays quiet on the near misses) and checks the Prometheus config the
// compose file mounts, rules included.
func TestAlertRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := deployDir(t)
	for _, args := range [][]string{
		{"test", "rules", "otpq-alerts.test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		Title      string          `json:"title"`
		Type       string          `json:"type"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []struct {
			Expr    string `json:"expr"`
			Instant bool   `json:"instant"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "grafana", "otpq-dashboard.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return d
}

// promServer is a running Prometheus started by the test.
type promServer struct {
	base string
}

// startPrometheus runs the prometheus binary on a free port with a 1 s
// scrape of target (job otpq, as in deploy/prometheus.yml) and the alert
// rules, storing into a temporary directory; it is killed when t ends.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: otpq
    static_configs:
      - targets: [%q]
`, filepath.Join(deployDir(t), "otpq-alerts.yml"), target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	addr := freeAddr(t)
	var log logsink.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	p := &promServer{base: "http://" + addr}
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond, "prometheus did not become ready:\n%s", &log)
	return p
}

// promSample is one series of a query answer: its labels and its values.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

// api calls a Prometheus HTTP API path and decodes its data.
func (p *promServer) api(t *testing.T, path string, q url.Values, data any) {
	t.Helper()
	resp, err := http.Get(p.base + path + "?" + q.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &env), "%s", body)
	require.Equal(t, "success", env.Status, "%s %v: %s", path, q, env.Error)
	require.NoError(t, json.Unmarshal(env.Data, data))
}

// instant evaluates expr now.
func (p *promServer) instant(t *testing.T, expr string) []promSample {
	t.Helper()
	var d struct {
		Result []promSample `json:"result"`
	}
	p.api(t, "/api/v1/query", url.Values{"query": {expr}}, &d)
	return d.Result
}

// rangeQuery evaluates expr every second from start to now.
func (p *promServer) rangeQuery(t *testing.T, expr string, start time.Time) []promSample {
	t.Helper()
	var d struct {
		Result []promSample `json:"result"`
	}
	p.api(t, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Unix()+1, 10)}, "step": {"1"}}, &d)
	return d.Result
}

// value reads the number of an instant sample (NaN if none).
func value(s promSample) float64 {
	if len(s.Value) != 2 {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// finite reports whether a query answer holds at least one finite number.
func finite(res []promSample) bool {
	for _, s := range res {
		if !math.IsNaN(value(s)) && !math.IsInf(value(s), 0) {
			return true
		}
		for _, v := range s.Values {
			f, err := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
			if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				return true
			}
		}
	}
	return false
}

// TestDashboardAgainstPrometheus: a real Prometheus scrapes a running
// `otpq worker` (receipts on, the fake provider posting signed callbacks)
// through two waves of traffic (accepted, handset-failed, dead-lettered and
// retried sends), and every query of every dashboard panel returns data,
// the alert rules load and evaluate without error on the real series, and
// none of them fires on healthy traffic but the ones this traffic causes.
func TestDashboardAgainstPrometheus(t *testing.T) {
	d := loadDashboard(t)
	require.Equal(t, "otpq", d.UID, "a fixed uid keeps links to the dashboard stable")
	queries := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		require.JSONEq(t, `{"type":"prometheus","uid":"${datasource}"}`, string(p.Datasource), "panel %q uses the datasource variable", p.Title)
		queries += len(p.Targets)
	}
	require.GreaterOrEqual(t, queries, 20)

	b := setup(t)
	opsAddr, cbAddr := freeAddr(t), freeAddr(t)
	const (
		delivered   = "+8613800000021"
		failed      = "+8613800000022"
		rejected    = "+8613800000023"
		retriedOnce = "+8613800000024"
	)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET",
		Rules: []fakeengagelab.Rule{{To: rejected, Status: 400, Code: 5013}, {To: retriedOnce, Status: 500, Code: 1000, Times: 1}},
		Callback: fakeengagelab.CallbackConfig{
			URL: "http://" + cbAddr + receipts.Path, Username: "otpq", Secret: "CANARY-CB-SECRET",
			Lifecycles: []fakeengagelab.Lifecycle{fakeengagelab.FailedLifecycle(failed, 50*time.Millisecond, 4001, "Handset unreachable")},
		}})
	defer fake.Close()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL
	b.env["OTPQ_CALLBACK_USER"], b.env["OTPQ_CALLBACK_SECRET"] = "otpq", "CANARY-CB-SECRET"
	werr, stop := b.startWorker(t, "--concurrency", "4", "--log-format", "json", "--http-addr", opsAddr, "--callback-addr", cbAddr,
		"--retry-min-delay", "200ms", "--retry-max-delay", "400ms")
	defer stop()

	start := time.Now()
	prom := startPrometheus(t, opsAddr)
	require.Eventually(t, func() bool {
		r := prom.instant(t, `up{job="otpq"}`)
		return len(r) == 1 && value(r[0]) == 1
	}, 20*time.Second, 200*time.Millisecond, "prometheus never scraped the worker; worker log:\n%s", werr)

	// Two waves: the first creates the series that appear on first use
	// (receipts, provider latency by result, error codes), the second makes
	// them grow, so that rates, increases and quantiles have data.
	for wave := 1; wave <= 2; wave++ {
		for _, to := range []string{delivered, delivered, failed, rejected} {
			r := b.run(t, context.Background(), "send", "--to", to, "--code", canaryCode, "--template", "login")
			require.Equal(t, ExitOK, r.code, r.stderr)
		}
		if wave == 1 {
			r := b.run(t, context.Background(), "send", "--to", retriedOnce, "--code", canaryCode, "--template", "login")
			require.Equal(t, ExitOK, r.code, r.stderr)
		}
		want := map[string]float64{
			`sum(otpq_receipts_total{status="delivered"})`:             float64(2*wave + 1), // + the retried one
			`sum(otpq_receipts_total{status="delivered_failed"})`:      float64(wave),
			`sum(otpq_dead_letters_total{reason="provider_rejected"})`: float64(wave),
		}
		require.Eventually(t, func() bool {
			for q, n := range want {
				r := prom.instant(t, q)
				if len(r) != 1 || value(r[0]) < n {
					return false
				}
			}
			return true
		}, 30*time.Second, 250*time.Millisecond, "wave %d never showed in Prometheus; worker log:\n%s", wave, werr)
		time.Sleep(3 * time.Second) // a few scrapes with the new values
	}

	rng := strconv.Itoa(int(time.Since(start).Seconds())+60) + "s"
	subst := strings.NewReplacer("$__rate_interval", "5s", "$__range", rng, "$__interval", "1s")
	var empty []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			expr := subst.Replace(tg.Expr)
			require.NotContains(t, expr, "$", "panel %q: a Grafana variable the test does not know", p.Title)
			var res []promSample
			if tg.Instant {
				res = prom.instant(t, expr)
			} else {
				res = prom.rangeQuery(t, expr, start)
			}
			if !finite(res) {
				empty = append(empty, fmt.Sprintf("%q: %s", p.Title, expr))
			}
		}
	}
	require.Empty(t, empty, "dashboard queries without data")

	// The rules load into a real server and evaluate without error on the
	// worker's series.
	require.Eventually(t, func() bool {
		var rules struct {
			Groups []struct {
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
				} `json:"rules"`
			} `json:"groups"`
		}
		prom.api(t, "/api/v1/rules", url.Values{}, &rules)
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false
				}
				n++
			}
		}
		return n >= 10
	}, 10*time.Second, 200*time.Millisecond, "alert rules not all healthy")
	// What fires is what this traffic caused: the provider_rejected dead
	// letters are a 5013 per wave, nothing else (never the stall alert
	// while codes flow, never Redis unreachable).
	for _, a := range prom.instant(t, `ALERTS`) {
		require.Contains(t, []string{"OtpqDeadLetterRateHigh"}, a.Metric["alertname"], "unexpected alert %v", a.Metric)
	}
	for _, s := range []string{canaryCode, "CANARY-CB-SECRET", delivered, failed} {
		require.NotContains(t, werr.String(), s)
	}
}
