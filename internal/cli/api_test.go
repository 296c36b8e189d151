package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
)

// specAPIBody and specAPIAuth are the EngageLab spec's request example,
// body and Authorization header as printed.
const (
	specAPIAuth = "Basic amlndWFuZ2RldjpkZXZfc2VjcmV0"
	specAPIBody = `{
"to": "+8618701235678",
"code": "398210",
"template": {
"id": "test-template-1",
"language": "default",
"params": {
"key1": "value1",
"key2": "value2"
}
}
}`
)

// startAPI runs `otpq api` with the bundle's environment on a free port
// until the test ends and returns its base URL once it answers.
func (b bundle) startAPI(t *testing.T, args ...string) (string, *logsink.Buffer) {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	log := &logsink.Buffer{}
	done := make(chan int, 1)
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: &logsink.Buffer{}, Stderr: log, Getenv: func(k string) string { return b.env[k] }}
		done <- m.Run(ctx, append([]string{"api", "--api-addr", addr, "--log-format", "json"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			require.Equal(t, ExitOK, code, log.String())
		case <-time.After(20 * time.Second):
			t.Error("otpq api did not stop")
		}
	})
	base := "http://" + addr
	require.Eventually(t, func() bool {
		select {
		case <-done:
			t.Fatalf("otpq api exited: %s", log.String())
		default:
		}
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, log.String())
	return base, log
}

// apiFixture is Redis, a fake EngageLab with the spec's key, a worker
// delivering to it and otpq api with the spec's key.
type apiFixture struct {
	bundle
	fake    *fakeengagelab.Server
	fakeURL string
	apiURL  string
	apiLog  *logsink.Buffer
}

func setupAPI(t *testing.T) apiFixture {
	t.Helper()
	b := setup(t)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "jiguangdev", DevSecret: "dev_secret"})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "jiguangdev", "dev_secret", srv.URL
	keys := filepath.Join(t.TempDir(), "api-keys")
	require.NoError(t, os.WriteFile(keys, []byte("spec:jiguangdev:dev_secret\n"), 0o600))
	b.env[envAPIKeysFile] = keys
	_, stop := b.startWorker(t, "--concurrency", "4", "--log-format", "json", "--http-addr", "")
	t.Cleanup(stop)
	url, log := b.startAPI(t)
	return apiFixture{bundle: b, fake: fake, fakeURL: srv.URL, apiURL: url, apiLog: log}
}

// waitDelivered polls GET /v1/codes/{id} with curl until the send is
// completed, and returns the status answered.
func (f apiFixture) waitDelivered(t *testing.T, id string) map[string]any {
	t.Helper()
	var st map[string]any
	require.Eventually(t, func() bool {
		out, err := exec.Command("curl", "-sS", "-H", "Authorization: "+specAPIAuth, f.apiURL+"/v1/codes/"+id).Output()
		if err != nil || json.Unmarshal(out, &st) != nil {
			return false
		}
		return st["state"] == "completed"
	}, 15*time.Second, 50*time.Millisecond, "%s never completed: %v", id, st)
	return st
}

// curl and Python's urllib send the spec's own example request, headers
// and body as printed; otpq api queues it and a worker delivers the code.
func TestAPISpecExampleFromCurlAndPython(t *testing.T) {
	f := setupAPI(t)
	python := `
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/codes", data=sys.stdin.buffer.read(),
    headers={"Content-Type": "application/json", "Authorization": sys.argv[2]}, method="POST")
with urllib.request.urlopen(req, timeout=10) as resp:
    sys.stdout.write(resp.read().decode())
`
	clients := map[string]*exec.Cmd{
		"curl": exec.Command("curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-H", "Authorization: "+specAPIAuth,
			"--data-binary", specAPIBody, f.apiURL+"/v1/codes"),
		"python": exec.Command("python3", "-c", python, f.apiURL, specAPIAuth),
	}
	clients["python"].Stdin = strings.NewReader(specAPIBody)
	ids := map[string]string{}
	for name, cmd := range clients {
		out, err := cmd.Output()
		require.NoError(t, err, "%s: %s", name, out)
		var ans map[string]string
		require.NoError(t, json.Unmarshal(out, &ans), "%s: %s", name, out)
		require.Equal(t, "sms", ans["send_channel"], name)
		require.NotEmpty(t, ans["message_id"], name)
		ids[name] = ans["message_id"]
	}
	for name, id := range ids {
		st := f.waitDelivered(t, id)
		require.NotEmpty(t, st["message_id"], "%s: the provider's message_id", name)
		require.Equal(t, "accepted", st["outcome"], name)
	}
	var got int
	for _, rc := range f.fake.Receipts() {
		if rc.Status == 200 {
			require.Equal(t, "+8618701235678", rc.To)
			require.Equal(t, "398210", rc.Code)
			require.Equal(t, "test-template-1", rc.TemplateID)
			require.Equal(t, "default", rc.Language)
			require.Equal(t, map[string]string{"key1": "value1", "key2": "value2"}, rc.Params)
			got++
		}
	}
	require.Equal(t, 2, got, "both codes delivered")
	require.NotContains(t, f.apiLog.String(), "398210")
	require.Contains(t, f.apiLog.String(), `"key":"spec"`)
}

// readmeAPIBlocks returns the fenced blocks of the README's "Use it from
// any language" section, by language.
func readmeAPIBlocks(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	_, sec, ok := strings.Cut(string(data), "\n## Use it from any language\n")
	require.True(t, ok, "README has the section")
	sec, _, _ = strings.Cut(sec, "\n## ")
	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```(\\w+)\n(.*?)```").FindAllStringSubmatch(sec, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	return blocks
}

// run runs a README block with the client's environment.
func runBlock(t *testing.T, lang, code string, env ...string) string {
	t.Helper()
	var cmd *exec.Cmd
	switch lang {
	case "sh":
		cmd = exec.Command("bash", "-e", "-c", code)
	case "python":
		cmd = exec.Command("python3", "-c", code)
	case "js":
		cmd = exec.Command("node", "--input-type=module", "-e", code)
	}
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s block: %s", lang, stderr.String())
	return strings.TrimSpace(string(out))
}

// The README's curl, Python and Node examples run as printed against
// otpq api, and a worker delivers each; the Python client reads
// fake-engagelab's answers and otpq api's with the same code, success and
// failure alike.
func TestReadmeAPISnippets(t *testing.T) {
	f := setupAPI(t)
	blocks := readmeAPIBlocks(t)
	env := []string{"API_URL=" + f.apiURL, "API_KEY=jiguangdev", "API_SECRET=dev_secret"}
	var curl string
	for _, b := range blocks["sh"] {
		if strings.HasPrefix(b, "curl ") {
			curl = b
		}
	}
	require.NotEmpty(t, curl, "the README has a curl example")
	require.Len(t, blocks["python"], 1)
	require.Len(t, blocks["js"], 1)
	snippets := map[string]string{"sh": curl, "python": blocks["python"][0]}
	if _, err := exec.LookPath("node"); err == nil {
		snippets["js"] = blocks["js"][0]
	} else {
		t.Log("node is not installed: the Node example is not run")
	}
	for lang, code := range snippets {
		var ans map[string]string
		out := runBlock(t, lang, code, env...)
		require.NoError(t, json.Unmarshal([]byte(out), &ans), "%s: %s", lang, out)
		require.Equal(t, "sms", ans["send_channel"], lang)
		st := f.waitDelivered(t, ans["message_id"])
		require.Equal(t, "accepted", st["outcome"], lang)
	}
	require.Equal(t, len(snippets), f.fake.Delivered("+8618701235678"))

	// One parser for both services.
	py := blocks["python"][0]
	for _, base := range []string{f.fakeURL, f.apiURL} {
		var ok, bad map[string]any
		require.NoError(t, json.Unmarshal([]byte(runBlock(t, "python", py, "API_URL="+base, "API_KEY=jiguangdev", "API_SECRET=dev_secret")), &ok))
		require.NotEmpty(t, ok["message_id"], base)
		require.Equal(t, "sms", ok["send_channel"], base)
		require.NoError(t, json.Unmarshal([]byte(runBlock(t, "python", py, "API_URL="+base, "API_KEY=jiguangdev", "API_SECRET=wrong")), &bad))
		require.EqualValues(t, 2001, bad["code"], base)
		require.NotEmpty(t, bad["message"], base)
	}
}

// otpq api refuses to start without keys (except on loopback with
// --insecure-no-auth), with half a TLS pair, or with a bad keys file,
// whose secrets its errors never show.
func TestAPIStartRefusals(t *testing.T) {
	b := setup(t)
	dir := t.TempDir()
	badKeys := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(badKeys, []byte("shop:key:SECRET-CANARY with space\n"), 0o600))
	goodKeys := filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(goodKeys, []byte("shop:key:SECRET-CANARY\n"), 0o600))
	cases := []struct {
		env  map[string]string
		args []string
		has  string
	}{
		{nil, nil, "no API keys: set OTPQ_API_KEYS_FILE"},
		{nil, []string{"--insecure-no-auth", "--api-addr", "0.0.0.0:0"}, "can be reached from other machines"},
		{map[string]string{envAPIKeysFile: badKeys}, []string{"--insecure-no-auth"}, "choose one"},
		{map[string]string{envAPIKeysFile: badKeys}, nil, "line 1 (shop): white space"},
		{map[string]string{envAPIKeysFile: filepath.Join(dir, "missing")}, nil, "OTPQ_API_KEYS_FILE: open"},
		{map[string]string{envAPIKeysFile: goodKeys}, []string{"--api-tls-cert", "c.pem"}, "go together"},
		{map[string]string{envAPIKeysFile: goodKeys}, []string{"--api-tls-cert", "c.pem", "--api-tls-key", "k.pem"}, "--api-tls-cert/--api-tls-key: open c.pem"},
	}
	for _, c := range cases {
		env := map[string]string{"OTPQ_REDIS_URL": b.db.URL()}
		for k, v := range c.env {
			env[k] = v
		}
		r := bundle{db: b.db, env: env}.run(t, context.Background(), append([]string{"api"}, c.args...)...)
		require.Equal(t, ExitUsage, r.code, "%v %v: %s", c.env, c.args, r.stderr)
		require.Contains(t, r.stderr, c.has)
		require.NotContains(t, r.stderr, "SECRET-CANARY")
	}

	// Loopback with --insecure-no-auth serves without credentials.
	url, log := b.startAPI(t, "--insecure-no-auth")
	resp, err := http.Post(url+"/v1/codes", "application/json", strings.NewReader(`{"to":"+8618701235678","code":"`+canaryCode+`","template":{"id":"login"}}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(log.String(), `"key":"anonymous"`) }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, b.pending(t, "critical"))
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "otpq-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With --api-tls-cert and --api-tls-key the API is HTTPS only.
func TestAPIServesTLS(t *testing.T) {
	b := setup(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "api-keys")
	require.NoError(t, os.WriteFile(keys, []byte("spec:jiguangdev:dev_secret\n"), 0o600))
	b.env[envAPIKeysFile] = keys
	certFile, keyFile, pool := selfSigned(t, dir)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	log := &logsink.Buffer{}
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: &logsink.Buffer{}, Stderr: log, Getenv: func(k string) string { return b.env[k] }}
		done <- m.Run(ctx, []string{"api", "--api-addr", addr, "--api-tls-cert", certFile, "--api-tls-key", keyFile, "--log-format", "json"})
	}()
	defer func() { cancel(); require.Equal(t, ExitOK, <-done, log.String()) }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	var resp *http.Response
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/codes", strings.NewReader(specAPIBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", specAPIAuth)
		var err error
		resp, err = client.Do(req)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, log.String())
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, b.pending(t, "critical"))
	// Plain HTTP is not served: no answer, or Go's 400 "use HTTPS".
	if plain, err := http.Post("http://"+addr+"/v1/codes", "application/json", strings.NewReader(specAPIBody)); err == nil {
		plain.Body.Close()
		require.Equal(t, http.StatusBadRequest, plain.StatusCode)
	}
	require.Equal(t, 1, b.pending(t, "critical"))
	require.Contains(t, log.String(), `"url":"https://`)
}
