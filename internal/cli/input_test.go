package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// otpq send refuses, with exit 2 and the field named, what would reach the
// provider changed or reach a terminal raw (issue 9, items 3 and 4).
func TestSendRefusesEncodingTricks(t *testing.T) {
	b := setup(t)
	dir := t.TempDir()
	badCode := filepath.Join(dir, "code")
	require.NoError(t, os.WriteFile(badCode, []byte("9182\xff73\n"), 0o600))
	for _, tc := range []struct {
		env   map[string]string
		args  []string
		field string
	}{
		{nil, []string{"--to", "+8618701235678", "--code-file", badCode, "--template", "t"}, "invalid code: not valid UTF-8"},
		{map[string]string{"OTPQ_CODE": "9182\xff73"}, []string{"--to", "+8618701235678", "--template", "t"}, "invalid code: not valid UTF-8"},
		{nil, []string{"--to", "vic\u200btim@example.com", "--code", canaryCode, "--template", "t"}, "invalid to: invisible formatting character U+200B"},
		{nil, []string{"--to", "victim@example.com\u202e", "--code", canaryCode, "--template", "t"}, "invalid to: invisible formatting character U+202E"},
		{nil, []string{"--to", "+8618701235678", "--code", canaryCode, "--template", "lo\x1b[31mgin\nX"}, "invalid template: control character U+001B"},
		{nil, []string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--param", "na\x1bme=x"}, "invalid params:"},
		{nil, []string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--language", "en\xff"}, "invalid language: not valid UTF-8"},
	} {
		for k, v := range tc.env {
			b.env[k] = v
		}
		r := b.run(t, context.Background(), append([]string{"send"}, tc.args...)...)
		require.Equal(t, ExitUsage, r.code, "%q: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.field, "%q", tc.args)
		require.NotContains(t, r.stderr, canaryCode)
		require.NotContains(t, r.stderr, "\x1b", "no raw escape reaches the terminal")
		for k := range tc.env {
			delete(b.env, k)
		}
	}
	require.Zero(t, b.pending(t, "critical"), "nothing enqueued")
}

// A malformed Redis URL, from the environment or the flag, is refused with
// exit 2 and an error that shows no part of its user information (issue 9,
// item 5a).
func TestRedisURLErrorsHideSecrets(t *testing.T) {
	send := []string{"send", "--to", "+8618701235678", "--code", canaryCode, "--template", "t"}
	for _, url := range []string{
		"redis://u:SECRETA/SECRETB@127.0.0.1:6379/0",
		"redis://u:SECRET#B@127.0.0.1:6379/0",
		"redis://u:SECRET?B@127.0.0.1:6379/0",
		"redis://u:SECRET@127.0.0.1:6379/-1",
	} {
		b := bundle{env: map[string]string{"OTPQ_REDIS_URL": url}}
		r := b.run(t, context.Background(), send...)
		require.Equal(t, ExitUsage, r.code, "%s: %s", url, r.stderr)
		require.NotContains(t, r.stderr, "SECRET", url)
		require.Contains(t, r.stderr, "redis url redis://xxxxx@127.0.0.1", url)

		b = bundle{env: map[string]string{}}
		r = b.run(t, context.Background(), append(send, "--redis-url", url)...)
		require.Equal(t, ExitUsage, r.code, "%s: %s", url, r.stderr)
		require.NotContains(t, r.stderr, "SECRET", url)
	}
}

// An unclosed CSV quote stops otpq bulk with exit 2, naming the line where
// it opened; the row before it is enqueued, none after it (issue 9, item 6).
func TestBulkUnclosedQuote(t *testing.T) {
	f := setupBulk(t)
	row := "+8618700000001," + bulkCanary + ",login\n"
	content := "to,code,template\n" + row + "+8618700000002,\"" + bulkCanary + ",login\n" + strings.Repeat("+8618700000003,"+bulkCanary+",other\n", 100)
	r := f.run(t, context.Background(), nil, f.file(t, "open.csv", content))
	require.Equal(t, ExitUsage, r.code, r.stderr)
	require.Contains(t, r.stderr, "line 3: quote never closed")
	require.Contains(t, r.stdout, "1 row: 1 accepted")
	require.Equal(t, 1, f.pending(t, "bulk"))
}
