package worker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// pair is a worker and a producer on opt, delivering to a fake provider.
type pair struct {
	w    *worker.Worker
	p    *producer.Producer
	fake *fakeengagelab.Server
	ins  *asynq.Inspector
	rdb  redis.UniversalClient
	logs *logsink.Buffer
}

func newPair(t *testing.T, opt asynq.RedisConnOpt) pair {
	t.Helper()
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: canarySecret})
	srv := newFakeHTTP(t, fake)
	logs := &logsink.Buffer{}
	w, err := worker.New(worker.Config{Redis: opt, BaseURL: srv, DevKey: "key", DevSecret: canarySecret, Concurrency: 4,
		RetryMinDelay: 100 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond, Logger: jsonLogger(logs)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	p, err := producer.New(producer.Config{Redis: opt})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ins := asynq.NewInspector(opt)
	t.Cleanup(func() { ins.Close() })
	rdb := opt.MakeRedisClient().(redis.UniversalClient)
	t.Cleanup(func() { rdb.Close() })
	return pair{w: w, p: p, fake: fake, ins: ins, rdb: rdb, logs: logs}
}

func (pr pair) deliver(t *testing.T, to string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := pr.p.Send(ctx, producer.Request{To: to, Code: canaryCode, TemplateID: "login"})
	require.NoError(t, err)
	// Delivered once, and recorded as completed. (The inspector is not
	// asked: after a Redis that lost its data, asynq's client does not
	// re-register a queue it already registered, so the inspector would not
	// find the queue until another process enqueues to it.)
	require.Eventually(t, func() bool { return pr.fake.Delivered(to) == 1 }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		state, _ := pr.rdb.HGet(ctx, asynqstore.TaskKey(producer.QueueCritical, id), "state").Result()
		return state == "completed"
	}, 5*time.Second, 10*time.Millisecond)

}

// writeCerts makes a CA and a server certificate for 127.0.0.1 signed by
// it, and returns the file paths.
func writeCerts(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "otpq test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// TestRedisTLS: rediss:// with a private CA delivers end to end; the same
// server refuses a client that does not speak TLS, and a client that does
// not trust the CA refuses the server.
func TestRedisTLS(t *testing.T) {
	ca, cert, key := writeCerts(t)
	r := redistest.StartServerConfig(t, redisserver.Config{PortFlag: "--tls-port", Args: []string{
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"}})
	url := "rediss://" + r.Addr + "/0"
	opt, err := redisconn.Option(url, nil, 0)
	require.NoError(t, err)
	caPEM, err := os.ReadFile(ca)
	require.NoError(t, err)
	opt, err = redisconn.WithRootCAs(opt, caPEM)
	require.NoError(t, err)
	pr := newPair(t, opt)
	require.NoError(t, pr.w.Start())
	pr.deliver(t, "+15550100001")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, bad := range []string{"redis://" + r.Addr + "/0", url} { // no TLS; TLS without the CA
		p, err := producer.New(producer.Config{RedisURL: bad})
		require.NoError(t, err)
		require.Error(t, p.Ping(ctx), bad)
		p.Close()
	}
}

// TestRedisACL: an ACL user with a password (from the URL or, as the CLI
// does with OTPQ_REDIS_PASSWORD_FILE, set on the option) delivers end to
// end; a wrong password fails without showing it.
func TestRedisACL(t *testing.T) {
	r := redistest.StartServer(t, "--user", "default", "off", "--user", "otpq", "on", ">s3cret-pw", "~*", "&*", "+@all")
	opt, err := redisconn.Option("redis://otpq:s3cret-pw@"+r.Addr+"/0", nil, 0)
	require.NoError(t, err)
	pr := newPair(t, opt)
	require.NoError(t, pr.w.Start())
	pr.deliver(t, "+15550200001")

	opt, err = redisconn.Option("redis://otpq@"+r.Addr+"/0", nil, 0)
	require.NoError(t, err)
	p, err := producer.New(producer.Config{Redis: redisconn.WithPassword(opt, "s3cret-pw")})
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Send(context.Background(), producer.Request{To: "+15550200002", Code: canaryCode, TemplateID: "login"})
	require.NoError(t, err)

	wrong, err := producer.New(producer.Config{RedisURL: "redis://otpq:wrong-pw@" + r.Addr + "/0"})
	require.NoError(t, err)
	defer wrong.Close()
	_, err = wrong.Send(context.Background(), producer.Request{To: "+15550200003", Code: canaryCode, TemplateID: "login"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "wrong-pw")
	require.NotContains(t, err.Error(), canaryCode)
}

// TestWorkerSurvivesRedisRestart: Redis goes away (killed) and comes back
// on the same port: the same worker, never restarted, reports it through
// Ping and delivers again afterwards.
func TestWorkerSurvivesRedisRestart(t *testing.T) {
	r := redistest.StartServer(t)
	opt, err := redisconn.Option(r.URL(), nil, 0)
	require.NoError(t, err)
	pr := newPair(t, opt)
	require.NoError(t, pr.w.Start())
	pr.deliver(t, "+15550300001")

	require.NoError(t, r.Kill())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	require.Error(t, pr.w.Ping(ctx), "Ping (what /readyz reports) sees Redis gone")
	cancel()
	require.Eventually(t, func() bool { // the worker noticed the outage
		return strings.Contains(pr.logs.String(), "cannot reach Redis")
	}, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, r.Restart(context.Background()), "redis-server back on port %d", r.Port)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return pr.w.Ping(ctx) == nil
	}, 10*time.Second, 50*time.Millisecond)
	pr.deliver(t, "+15550300002")
}

func newFakeHTTP(t *testing.T, fake *fakeengagelab.Server) string {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return srv.URL
}

func jsonLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestRedisSentinel: a redis-sentinel:// URL finds the master through a
// real sentinel and delivers end to end.
func TestRedisSentinel(t *testing.T) {
	master := redistest.StartServer(t)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\n", master.Port)), 0o600))
	s := redistest.StartServerConfig(t, redisserver.Config{ConfigFile: conf, Args: []string{"--sentinel"}})
	opt, err := redisconn.Option("redis-sentinel://"+s.Addr+"/0?master=mymaster", nil, 0)
	require.NoError(t, err)
	pr := newPair(t, opt)
	require.NoError(t, pr.w.Start())
	pr.deliver(t, "+15550400001")
}

// TestRedisCluster: a redis-cluster:// URL against a real (one-node)
// cluster delivers end to end: every key otpq's own scripts touch (rate
// limit, destination guard, ambiguity marks) is a single key, and the
// enqueue and delivery writes touch only keys of the task's hash slot.
func TestRedisCluster(t *testing.T) {
	r := redistest.StartServerConfig(t, redisserver.Config{Cluster: true})
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err())
	require.Eventually(t, func() bool {
		info, _ := c.ClusterInfo(ctx).Result()
		return strings.Contains(info, "cluster_state:ok")
	}, 10*time.Second, 20*time.Millisecond)
	opt, err := redisconn.Option("redis-cluster://"+r.Addr, nil, 0)
	require.NoError(t, err)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: canarySecret})
	w, err := worker.New(worker.Config{Redis: opt, BaseURL: newFakeHTTP(t, fake), DevKey: "key", DevSecret: canarySecret,
		Concurrency: 4, RateLimit: 100, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	require.NoError(t, w.Start())
	p, err := producer.New(producer.Config{Redis: opt})
	require.NoError(t, err)
	defer p.Close()
	id, err := p.Send(ctx, producer.Request{To: "+15550500001", Code: canaryCode, TemplateID: "login"})
	require.NoError(t, err)
	res := p.SendBatch(ctx, []producer.Request{
		{To: "+15550500002", Code: canaryCode, TemplateID: "login"}, {To: "+15550500003", Code: canaryCode, TemplateID: "login"},
	}, producer.Queue(producer.QueueBulk))
	for _, r := range res {
		require.NoError(t, r.Err)
	}
	for _, to := range []string{"+15550500001", "+15550500002", "+15550500003"} {
		require.Eventually(t, func() bool { return fake.Delivered(to) == 1 }, 20*time.Second, 10*time.Millisecond)
	}
	require.Eventually(t, func() bool {
		st, err := p.Status(ctx, id)
		return err == nil && st.State == producer.StateCompleted && st.MessageID != ""
	}, 5*time.Second, 10*time.Millisecond)
	n, err := c.Exists(ctx, asynqstore.CodeKey(producer.QueueCritical, id)).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the code key is deleted on the cluster too")
}
