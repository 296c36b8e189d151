package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/task"
)

// bulkCanary is the code in every bulk test row: it must never be printed.
const bulkCanary = "BULK-7731"

type bulkFixture struct {
	db  *redistest.DB
	dir string
	ins *asynq.Inspector
	env map[string]string
}

func setupBulk(t *testing.T) bulkFixture {
	t.Helper()
	db := redistest.New(t)
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	t.Cleanup(func() { ins.Close() })
	return bulkFixture{db: db, dir: t.TempDir(), ins: ins, env: map[string]string{}}
}

type bulkResult struct {
	code           int
	stdout, stderr string
}

// run executes `otpq bulk` with args (the Redis URL is added) and stdin.
func (f bulkFixture) run(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) bulkResult {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	m := &Main{Stdin: stdin, Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return f.env[k] }}
	code := m.Run(ctx, append([]string{"bulk", "--redis-url", f.db.URL()}, args...))
	r := bulkResult{code: code, stdout: out.String(), stderr: errb.String()}
	require.NotContains(t, r.stdout+r.stderr, bulkCanary, "the code must never be printed")
	return r
}

func (f bulkFixture) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func (f bulkFixture) pending(t *testing.T, queue string) int {
	t.Helper()
	return pendingIn(t, f.ins, queue)
}

// csvRows is a header and n valid rows with distinct destinations.
func csvRows(n int) string {
	var b strings.Builder
	b.WriteString("to,code,template,language,param.name\n")
	for i := range n {
		fmt.Fprintf(&b, "+86187%08d,%s,login,en,User%d\n", i, bulkCanary, i)
	}
	return b.String()
}

func TestBulkBadRowsAreReportedAndOthersSent(t *testing.T) {
	f := setupBulk(t)
	path := f.file(t, "sends.csv", "to,code,template,language,param.name\n"+
		"+8618700000001,"+bulkCanary+",login,en,Ann\n"+ // line 2: ok
		"12345,"+bulkCanary+",login,en,Bob\n"+ // line 3: bad to
		"+8618700000003,"+bulkCanary+",login,fr,Cy\n"+ // line 4: bad language
		"+8618700000004,,login,en,Di\n"+ // line 5: no code
		"+8618700000005,"+bulkCanary+",login\n"+ // line 6: too few fields
		"+8618700000006,"+bulkCanary+",signup,,\n"+ // line 7: ok, no language or params
		"+8618700000007,"+bulkCanary+" 1,login,en,Ed\n") // line 8: code with a space
	r := f.run(t, context.Background(), nil, path)
	require.Equal(t, ExitRejected, r.code, r.stderr)
	for _, want := range []string{
		"line 3: invalid to:", "line 4: invalid language:", "line 5: invalid code: required",
		"line 6: invalid row: 3 fields, the header has 5", "line 8: invalid code:", "5 rows rejected",
	} {
		require.Contains(t, r.stderr, want)
	}
	require.Contains(t, r.stdout, "7 rows: 2 accepted, 0 duplicates (already queued), 5 rejected, 0 failed")
	require.Equal(t, 2, f.pending(t, "bulk"))
	require.Equal(t, 0, f.pending(t, "critical"))
}

func TestBulkRerunEnqueuesNothingTwice(t *testing.T) {
	f := setupBulk(t)
	// Line 4 repeats line 2's destination and template: the same send.
	path := f.file(t, "sends.csv", "to,code,template\n+8618700000001,"+bulkCanary+",login\n+8618700000002,"+bulkCanary+",login\n+8618700000001,"+bulkCanary+",login\n")
	r := f.run(t, context.Background(), nil, path)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "3 rows: 2 accepted, 1 duplicate (already queued)")
	r = f.run(t, context.Background(), nil, path)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "3 rows: 0 accepted, 3 duplicates")
	require.Equal(t, 2, f.pending(t, "bulk"))

	// With --id-prefix the same rows are another campaign.
	r = f.run(t, context.Background(), nil, "--id-prefix", "campaign2:", path)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "3 rows: 2 accepted, 1 duplicate (already queued)")
	require.Equal(t, 4, f.pending(t, "bulk"))
}

func TestBulkEmptyFile(t *testing.T) {
	f := setupBulk(t)
	for _, content := range []string{"", "\n\n"} {
		r := f.run(t, context.Background(), nil, f.file(t, "empty", content))
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "0 rows: 0 accepted")
	}
	r := f.run(t, context.Background(), nil, "--format", "jsonl", f.file(t, "empty.jsonl", ""))
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "0 rows: 0 accepted")
	require.Equal(t, 0, f.pending(t, "bulk"))
}

func TestBulkHeaderOnly(t *testing.T) {
	f := setupBulk(t)
	r := f.run(t, context.Background(), nil, f.file(t, "h.csv", "to,code,template,language,id\n"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "0 rows: 0 accepted")
	require.Equal(t, 0, f.pending(t, "bulk"))
}

func TestBulkUnusableInput(t *testing.T) {
	f := setupBulk(t)
	cases := map[string]string{
		"unknown column":  "to,code,template,colour\n",
		"missing code":    "to,template\n",
		"duplicate":       "to,code,template,to\n",
		"empty param":     "to,code,template,param.\n",
		"malformed quote": "to,\"code,template\n",
	}
	for name, content := range cases {
		r := f.run(t, context.Background(), nil, f.file(t, "bad.csv", content+"+8618700000001,"+bulkCanary+",login\n"))
		require.Equal(t, ExitUsage, r.code, name+": "+r.stderr)
		require.Contains(t, r.stderr, "header", name)
	}
	r := f.run(t, context.Background(), nil, filepath.Join(f.dir, "missing.csv"))
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "no such file")
	r = f.run(t, context.Background(), nil, "--format", "xml", "x")
	require.Equal(t, ExitUsage, r.code)
	require.Equal(t, 0, f.pending(t, "bulk"))
}

func TestBulk100kRows(t *testing.T) {
	f := setupBulk(t)
	const n = 100_000
	path := f.file(t, "big.csv", csvRows(n))
	r := f.run(t, context.Background(), nil, "--progress-interval", "0", path)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("%d rows: %d accepted, 0 duplicates (already queued), 0 rejected, 0 failed", n, n))
	require.Equal(t, n, f.pending(t, "bulk"))
}

// cancelAfter cancels a context once n bytes were read through it.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	p = p[:min(len(p), 4096)]
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func TestBulkInterruptedRunIsResumed(t *testing.T) {
	f := setupBulk(t)
	const n = 20_000
	content := csvRows(n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := f.run(t, ctx, &cancelAfter{r: strings.NewReader(content), n: len(content) / 2, cancel: cancel}, "--progress-interval", "0", "-")
	require.Equal(t, ExitFailure, r.code, r.stderr)
	require.Contains(t, r.stderr, "interrupted")
	first := f.pending(t, "bulk")
	require.Greater(t, first, 0)
	require.Less(t, first, n, "the run stopped midway")
	require.Contains(t, r.stdout, fmt.Sprintf("%d accepted", first), "the summary counts exactly what was enqueued")

	r = f.run(t, context.Background(), strings.NewReader(content), "--progress-interval", "0", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("%d rows: %d accepted, %d duplicates", n, n-first, first))
	require.Equal(t, n, f.pending(t, "bulk"), "every row enqueued exactly once")
}

func TestBulkDryRunEnqueuesNothing(t *testing.T) {
	f := setupBulk(t)
	path := f.file(t, "s.csv", csvRows(10)+"bad,"+bulkCanary+",login,en,x\n")
	r := f.run(t, context.Background(), nil, "--dry-run", path)
	require.Equal(t, ExitRejected, r.code, r.stderr)
	require.Contains(t, r.stdout, "11 rows: 10 valid (dry run, nothing enqueued)")
	require.Contains(t, r.stderr, "line 12: invalid to:")
	keys, err := f.db.Client.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)
}

func TestBulkRejectsFile(t *testing.T) {
	f := setupBulk(t)
	path := f.file(t, "s.csv", "to,code,template\n+8618700000001,"+bulkCanary+",login\nnope,"+bulkCanary+",login\n+8618700000003,"+bulkCanary+",\n")
	rejects := filepath.Join(f.dir, "rejects.txt")
	r := f.run(t, context.Background(), nil, "--rejects", rejects, path)
	require.Equal(t, ExitRejected, r.code, r.stderr)
	require.NotContains(t, r.stderr, "line 3")
	require.Contains(t, r.stderr, "2 rows rejected (see the reasons above in "+rejects+")")
	data, err := os.ReadFile(rejects)
	require.NoError(t, err)
	require.Equal(t, "line 3: invalid to: must be an E.164 phone number (+8613800138000) or an e-mail address\n"+
		"line 4: invalid template: required\n", string(data))
	require.Equal(t, 1, f.pending(t, "bulk"))
}

func TestBulkJSONLines(t *testing.T) {
	f := setupBulk(t)
	path := f.file(t, "s.jsonl", `{"to":"+8618700000001","code":"`+bulkCanary+`","template":"login","language":"en","params":{"name":"Ann"},"id":"order-1"}

{"to":"bob@example.com","code":"`+bulkCanary+`","template":"login"}
{"to":"+8618700000003","code":"`+bulkCanary+`","template":"login","colour":"red"}
{"to":"+8618700000004","code":123456,"template":"login"}
{"to":"+8618700000005","code":"`+bulkCanary+`",
{"to":"+8618700000006","code":"`+bulkCanary+`","template":"login","id":"has space"}
`)
	r := f.run(t, context.Background(), nil, path)
	require.Equal(t, ExitRejected, r.code, r.stderr)
	for _, want := range []string{"line 4: invalid colour: unknown field", "line 5: invalid code: must be a string",
		"line 6: invalid row: not a JSON object", "line 7: invalid id:"} {
		require.Contains(t, r.stderr, want)
	}
	require.Contains(t, r.stdout, "6 rows: 2 accepted")
	info, err := f.ins.GetTaskInfo("bulk", "order-1")
	require.NoError(t, err, "the id column is the task ID")
	require.Equal(t, "pending", info.State.String())

	// Auto-detected from the first byte on standard input; --queue critical.
	r = f.run(t, context.Background(), strings.NewReader(`{"to":"+8618700000009","code":"`+bulkCanary+`","template":"login"}`+"\n"), "--queue", "critical", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, 1, f.pending(t, "critical"))
}

func TestBulkRedisDown(t *testing.T) {
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(csvRows(3)), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := m.Run(context.Background(), []string{"bulk", "--redis-url", "redis://127.0.0.1:1/0", "-"})
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errb.String(), "cannot reach Redis at 127.0.0.1:1")
	require.NotContains(t, out.String()+errb.String(), bulkCanary)
}

// Rows share the per-destination guard of otpq send; a row beyond it is
// rejected with its line, and --destination-limit -1 turns it off.
func TestBulkDestinationLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("to,code,template,id\n")
	for i := range 7 {
		fmt.Fprintf(&b, "+8618700000001,%s,login,row-%d\n", bulkCanary, i)
	}
	f := setupBulk(t)
	r := f.run(t, context.Background(), nil, f.file(t, "same.csv", b.String()))
	require.Equal(t, ExitRejected, r.code, r.stderr)
	require.Contains(t, r.stdout, "7 rows: 5 accepted, 0 duplicates (already queued), 2 rejected")
	require.Regexp(t, `line [78]: not sent: destination send limit reached: \+861\*+001`, r.stderr)
	require.NotContains(t, r.stderr, "+8618700000001", "the destination is masked")

	g := setupBulk(t)
	r = g.run(t, context.Background(), nil, "--destination-limit", "-1", g.file(t, "same.csv", b.String()))
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "7 rows: 7 accepted")
	require.Equal(t, 7, g.pending(t, "bulk"))
}

// With OTPQ_PAYLOAD_KEY set, bulk rows are stored sealed like single sends.
func TestBulkSealsCodesWithPayloadKey(t *testing.T) {
	f := setupBulk(t)
	key, err := sealing.GenerateKey("k9")
	require.NoError(t, err)
	f.env["OTPQ_PAYLOAD_KEY"] = key
	r := f.run(t, context.Background(), nil, f.file(t, "s.csv", "to,code,template,id\n+8618700000001,"+bulkCanary+",login,sealed-1\n"))
	require.Equal(t, ExitOK, r.code, r.stderr)
	info, err := f.ins.GetTaskInfo("bulk", "sealed-1")
	require.NoError(t, err)
	require.NotContains(t, string(info.Payload), bulkCanary)
	v, err := f.db.Client.Get(context.Background(), asynqstore.CodeKey("bulk", "sealed-1")).Result()
	require.NoError(t, err)
	require.NotContains(t, v, bulkCanary)
	_, sealed, err := task.ParseCodeValue(v)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(sealed, "k9:"), "the code key holds the sealed code")
}
