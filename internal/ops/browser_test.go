package ops_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
)

// ScreenshotDir is where the browser test saves its screenshots:
// $TMPDIR/otpq-ui (/tmp/otpq-ui by default).
func screenshotDir() string { return filepath.Join(os.TempDir(), "otpq-ui") }

// chromium finds Debian's chromium. .ci/ensure-chromium (run by make test
// and .ci/run) installs it. The rule: under CI (OTPQ_CI set, as .ci/run
// does) a missing chromium fails the test, so a CI without a browser never
// passes with the UI untested; on a developer's machine without one (and
// without root to install it) the test skips and says so.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("OTPQ_CI") != "" {
		t.Fatal("chromium is not installed and OTPQ_CI is set: CI must run the browser test (.ci/ensure-chromium installs it as root with apt-get)")
	}
	t.Skip("chromium is not installed (OTPQ_CI is unset, so the browser test skips; under CI it fails): run .ci/ensure-chromium as root")
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

	ctx := startBrowser(t, exe)
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

// startBrowser starts headless chromium, logged in to the UI (every
// request carries the UI's basic auth, as a browser that has cached it
// does), and returns its context, which ends at the end of t or after 90 s.
// Screenshots go to screenshotDir().
func startBrowser(t *testing.T, exe string) context.Context {
	t.Helper()
	return startBrowserSized(t, exe, 1400, 900)
}

// startBrowserSized is startBrowser with a window of width×height px.
func startBrowserSized(t *testing.T, exe string, width, height int) context.Context {
	t.Helper()
	require.NoError(t, os.MkdirAll(screenshotDir(), 0o755))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(width, height), chromedp.Flag("disable-dev-shm-usage", true))...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
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
	t.Cleanup(cancelTimeout)
	return ctx
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

// TestBrowserCrossSite is issue 16 row 1 in a real browser that is logged
// in to the UI: a page on another origin auto-submits a text/plain form to
// pause the critical queue, another to archive a task, and fires no-cors
// fetches to run and delete; none changes anything. The UI's own Pause
// button, clicked in the same browser, still pauses the queue.
func TestBrowserCrossSite(t *testing.T) {
	exe := chromium(t)
	b := setup(t, options{noWorker: true})
	id := b.send(t, "+8613833330010")
	b.waitState(t, task.QueueCritical, id, asynq.TaskStatePending)

	api := b.ops.URL + "/monitoring/api/queues/" + task.QueueCritical
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>cute cats</title>
<iframe name=sink></iframe>
<form id=archive method=POST enctype=text/plain target=sink action="%[1]s/pending_tasks/%[2]s:archive"><input name=x value=y></form>
<form id=pause method=POST enctype=text/plain action="%[1]s:pause"><input name=x value=y></form>
<script>
fetch("%[1]s/pending_tasks/%[2]s:archive", {method: "POST", mode: "no-cors", credentials: "include"});
fetch("%[1]s/pending_tasks:delete_all", {method: "POST", mode: "no-cors", credentials: "include"});
document.getElementById("archive").submit();
setTimeout(function () { document.getElementById("pause").submit(); }, 300);
</script>`, api, id)
	}))
	defer evil.Close()
	// Another origin: localhost, not 127.0.0.1, and another port.
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)

	ctx := startBrowser(t, exe)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(evilURL)))
	// A refused pause navigates the page to the ops server's answer (an
	// accepted one, 204, leaves the page where it is); the navigation
	// interrupts anything waiting in the page, so ask from here.
	require.Eventually(t, func() bool {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return (err == nil && loc == api+":pause") || b.paused(t, task.QueueCritical)
	}, 30*time.Second, 100*time.Millisecond, "the cross-site form was never submitted")
	time.Sleep(500 * time.Millisecond) // the no-cors fetches, fired first, have had time
	shoot(t, ctx, "cross-site.png")
	require.False(t, b.paused(t, task.QueueCritical), "a page on another origin paused the queue")
	info, err := b.ins.GetTaskInfo(task.QueueCritical, id)
	require.NoError(t, err, "a page on another origin deleted the task")
	require.Equal(t, asynq.TaskStatePending, info.State, "a page on another origin changed the task")
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	require.NoError(t, err)
	require.Contains(t, text, "cross-origin request refused")
	require.GreaterOrEqual(t, strings.Count(b.logs.String(), "cross-origin request refused"), 1)

	// The UI's own button, in the same browser.
	row := `//tr[.//a[text()="` + task.QueueCritical + `"]]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(b.ops.URL+"/monitoring/"),
		// The row's action cell shows its buttons on hover or click.
		chromedp.WaitVisible(row+`/td[last()]//button`),
		chromedp.Click(row+`/td[last()]//button`),
		chromedp.WaitVisible(row+`//button[@title="Pause"]`),
		chromedp.Click(row+`//button[@title="Pause"]`),
	), "no Pause button for the critical queue on the dashboard")
	require.Eventually(t, func() bool { return b.paused(t, task.QueueCritical) }, 20*time.Second, 50*time.Millisecond,
		"the UI's own Pause button did not pause the queue")
	shoot(t, ctx, "paused.png")
}

// TestBrowserTaskSummaries reads the task tables and a task's details in
// headless chromium at 1280 px, as an operator would: a delivered task
// (custom ID myid-1, with its receipt) and a dead letter each lead with
// their verdict's summary, the custom ID shows whole, and nothing is
// clipped: no payload or result box scrolls sideways, and every column of
// the table lies inside the window. The screenshots are saved under
// t.TempDir(), or OTPQ_UI_SHOTS when set (to look at them).
func TestBrowserTaskSummaries(t *testing.T) {
	testBrowserTaskSummaries(t, 1, "myid-1", "")
}

// TestBrowserTaskSummariesSharded: the same with 4 shards, both tasks in
// shards other than shard 0 (critical-1dp, critical-2ds).
func TestBrowserTaskSummariesSharded(t *testing.T) {
	require.Equal(t, "critical-1dp", shard.Queue(task.QueueCritical, "myid-5", 4))
	require.Equal(t, "critical-2ds", shard.Queue(task.QueueCritical, "myid-4", 4))
	testBrowserTaskSummaries(t, 4, "myid-5", "myid-4")
}

// testBrowserTaskSummaries: the delivered task's ID is deliveredID, the
// dead letter's rejectedID (a UUID when "").
func testBrowserTaskSummaries(t *testing.T, shards int, deliveredID, rejectedID string) {
	exe := chromium(t)
	const (
		deliveredTo = "+8613833330031"
		rejectedTo  = "+8613833330032"
	)
	shots := os.Getenv("OTPQ_UI_SHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	b := setup(t, options{ops: withReceipts(t), shards: shards})
	b.fake.SetRules(fakeengagelab.Rule{To: rejectedTo, Status: 400, Code: 5013})
	delivered := b.send(t, deliveredTo, producer.DedupKey(deliveredID))
	require.Equal(t, deliveredID, delivered)
	var rejectedOpts []producer.Option
	if rejectedID != "" {
		rejectedOpts = append(rejectedOpts, producer.DedupKey(rejectedID))
	}
	rejected := b.send(t, rejectedTo, rejectedOpts...)
	dq, rq := shard.Queue(task.QueueCritical, delivered, shards), shard.Queue(task.QueueCritical, rejected, shards)
	info := b.waitState(t, dq, delivered, asynq.TaskStateCompleted)
	b.waitState(t, rq, rejected, asynq.TaskStateArchived)
	var res task.Result
	require.NoError(t, json.Unmarshal(info.Result, &res))
	b.postReceipt(t, res.MessageID, deliveredTo, "delivered", 0)

	ctx := startBrowserSized(t, exe, 1280, 900)
	// layout is what the page shows of its task table or details: the
	// window's width, how far the table's container scrolls sideways
	// (clipped columns), and each payload/result box with its first line,
	// right edge and sideways overflow.
	type box struct {
		First    string  `json:"first"`
		Text     string  `json:"text"`
		Right    float64 `json:"right"`
		Overflow float64 `json:"overflow"`
	}
	type layout struct {
		Width      float64  `json:"width"`
		TableRight float64  `json:"tableRight"`
		Scroll     float64  `json:"scroll"`
		IDs        []string `json:"ids"`
		Boxes      []box    `json:"boxes"`
	}
	const measure = `(() => {
		const t = document.querySelector("table");
		const c = t ? t.closest(".MuiTableContainer-root") || t.parentElement : null;
		return {
			width: document.documentElement.clientWidth,
			tableRight: t ? t.getBoundingClientRect().right : 0,
			scroll: c ? c.scrollWidth - c.clientWidth : 0,
			ids: [...document.querySelectorAll("table tbody tr th")].map(e => e.innerText.trim()),
			boxes: [...document.querySelectorAll("pre")].map(p => ({
				first: p.innerText.split("\n")[0], text: p.innerText,
				right: p.getBoundingClientRect().right, overflow: p.scrollWidth - p.clientWidth})),
		};
	})()`
	look := func(t *testing.T, path, waitFor, png string) layout {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx,
			chromedp.Navigate(b.ops.URL+path),
			void(chromedp.Poll[bool](waitFor, chromedp.WithPollingTimeout(30*time.Second))),
		), "%s never showed %s", path, waitFor)
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(shots, png), shot, 0o644))
		t.Logf("screenshot: %s", filepath.Join(shots, png))
		l, err := chromedp.Run(ctx, chromedp.Evaluate[layout](measure))
		require.NoError(t, err)
		html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		require.NoError(t, err)
		require.NotContains(t, html, canaryCode)
		require.NotContains(t, html, deliveredTo)
		return l
	}
	unclipped := func(t *testing.T, l layout) {
		t.Helper()
		require.LessOrEqual(t, l.Scroll, 0.0, "the task table scrolls sideways: columns are clipped")
		require.LessOrEqual(t, l.TableRight, l.Width, "the task table ends past the window")
		for _, bx := range l.Boxes {
			require.LessOrEqual(t, bx.Overflow, 0.0, "box scrolls sideways:\n%s", bx.Text)
			require.LessOrEqual(t, bx.Right, l.Width, "box ends past the window:\n%s", bx.Text)
		}
	}

	// Completed: the custom ID whole, the payload and the result summaries.
	l := look(t, "/monitoring/queues/"+dq+"?status=completed",
		`document.body.innerText.includes("delivered · sms")`, "completed.png")
	unclipped(t, l)
	require.Equal(t, []string{deliveredID}, l.IDs, "the custom task ID is shown cut")
	require.Len(t, l.Boxes, 2)
	require.Equal(t, "to +861*******031 · template login", l.Boxes[0].First)
	require.Regexp(t, `^delivered · sms · \d s after acceptance$`, l.Boxes[1].First)
	require.Contains(t, l.Boxes[1].Text, "message_id: "+res.MessageID)

	// Its details.
	l = look(t, "/monitoring/queues/"+dq+"/tasks/"+deliveredID,
		`document.body.innerText.includes("Task Info") && document.body.innerText.includes("delivered · sms")`, "completed-detail.png")
	unclipped(t, l)
	require.Len(t, l.Boxes, 2)
	require.Regexp(t, `^delivered · sms · \d s after acceptance$`, l.Boxes[1].First)

	// Archived: the dead letter's verdict and reason lead its payload.
	l = look(t, "/monitoring/queues/"+rq+"?status=archived",
		`document.body.innerText.includes("Number has")`, "archived.png")
	unclipped(t, l)
	require.Len(t, l.Boxes, 1)
	require.Equal(t, "dead letter", l.Boxes[0].First)
	require.Contains(t, unwrap(l.Boxes[0].Text), "dead letter · engagelab 5013: Number has been blacklisted\n\nto +861*******032 · template login")
	l = look(t, "/monitoring/queues/"+rq+"/tasks/"+rejected,
		`document.body.innerText.includes("Task Info") && document.body.innerText.includes("Number has")`, "archived-detail.png")
	unclipped(t, l)
	require.Equal(t, "dead letter", l.Boxes[0].First)
}
