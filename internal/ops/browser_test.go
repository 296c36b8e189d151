package ops_test

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
)

// ScreenshotDir is where the browser test saves its screenshots:
// $TMPDIR/otpq-ui (/tmp/otpq-ui by default).
func screenshotDir() string { return filepath.Join(os.TempDir(), "otpq-ui") }

// chromium finds Debian's chromium. .ci/ensure-chromium (run by make test
// and .ci/run) installs it; the test skips only when it is not installed.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed and .ci/ensure-chromium could not install it (run it as root with apt-get)")
	return ""
}

// TestBrowserUI drives the web UI in a real headless Chromium: it lists the
// critical and bulk queues, shows a dead-lettered task with its EngageLab
// reason and a redacted payload (the canary code absent from the page), and
// its Run button moves the task back to pending, after which the live
// worker delivers it. Screenshots are saved in screenshotDir().
func TestBrowserUI(t *testing.T) {
	exe := chromium(t)
	const (
		rejectedTo  = "+8613833330000"
		deliveredTo = "+8613833330001"
		bulkTo      = "+8613833330002"
	)
	// The dead letter keeps its code key until the code expires, so it can
	// be re-run from the page.
	b := setup(t, options{})
	b.fake.SetRules(fakeengagelab.Rule{To: rejectedTo, Status: 400, Code: 5013})
	rejected := b.send(t, rejectedTo)
	delivered := b.send(t, deliveredTo)
	bulk := b.send(t, bulkTo, producer.Queue(producer.QueueBulk))
	b.waitState(t, task.QueueCritical, rejected, asynq.TaskStateArchived)
	b.waitState(t, task.QueueCritical, delivered, asynq.TaskStateCompleted)
	b.waitState(t, task.QueueBulk, bulk, asynq.TaskStateCompleted)

	require.NoError(t, os.MkdirAll(screenshotDir(), 0o755))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900), chromedp.Flag("disable-dev-shm-usage", true))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(uiUser+":"+uiPassword))
	// The first action starts the browser: no timeout on its context.
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tgt, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tgt, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})), "cannot start chromium")
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()
	page := func(t *testing.T, path, waitFor, what string) (text, html string) {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx,
			chromedp.Navigate(b.ops.URL+path),
			void(chromedp.Poll[bool](waitFor, chromedp.WithPollingTimeout(30*time.Second))),
		), what)
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		require.NoError(t, err)
		html, err = chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		require.NoError(t, err)
		return text, html
	}

	// Dashboard: both queues listed.
	_, html := page(t, "/monitoring/", `document.body.innerText.includes("critical") && document.body.innerText.includes("bulk")`,
		"the dashboard never listed both queues")
	require.NotContains(t, html, canaryCode)
	shoot(t, ctx, "dashboard.png")

	// Archived tab: the dead letter with its reason, payload redacted.
	text, html := page(t, "/monitoring/queues/critical?status=archived", `document.body.innerText.includes("engagelab 5013")`,
		"the archived task never showed its reason")
	require.Contains(t, text, "engagelab 5013: Number has been blacklisted")
	require.Contains(t, text, redact.Destination(rejectedTo))
	require.NotContains(t, html, canaryCode)
	require.NotContains(t, html, rejectedTo)
	shoot(t, ctx, "ui.png")

	// Run: the queue is paused so that pending is seen before the worker
	// takes the task again.
	b.fake.SetRules()
	require.NoError(t, b.ins.PauseQueue(task.QueueCritical))
	require.NoError(t, chromedp.Do(ctx,
		// The row's action cell shows its buttons on hover or click.
		chromedp.Click(chromedp.CSS(`table tbody tr td:last-child button`)),
		chromedp.WaitVisible(chromedp.CSS(`button[title="Run"]`)),
		chromedp.Click(chromedp.CSS(`button[title="Run"]`)),
	), "no Run button on the archived task")
	b.waitState(t, task.QueueCritical, rejected, asynq.TaskStatePending)
	_, html = page(t, "/monitoring/queues/critical?status=pending", `document.body.innerText.includes("`+redact.Destination(rejectedTo)+`")`,
		"the re-run task is not listed as pending")
	require.NotContains(t, html, canaryCode)
	shoot(t, ctx, "pending.png")

	require.NoError(t, b.ins.UnpauseQueue(task.QueueCritical))
	b.waitState(t, task.QueueCritical, rejected, asynq.TaskStateCompleted)
	require.Equal(t, 1, b.fake.Delivered(rejectedTo))
}

// void drops an action's value.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// shoot saves a full-page screenshot in screenshotDir().
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(screenshotDir(), name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}
