package redisserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/redistest"
)

// A started server answers on its own port with the extra arguments
// applied, survives Kill + Restart on the same port, and is gone after
// the test's cleanup kills it.
func TestStartServerRestartKill(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t, "--maxclients", "1234")
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	cfg, err := c.ConfigGet(ctx, "maxclients").Result()
	require.NoError(t, err)
	require.Equal(t, "1234", cfg["maxclients"])

	require.NoError(t, s.Kill())
	require.False(t, s.Running())
	require.Error(t, c.Ping(ctx).Err(), "a killed server must not answer")
	require.NoError(t, s.Restart(ctx))
	require.NoError(t, c.Ping(ctx).Err())
	n, err := c.Exists(ctx, "k").Result()
	require.NoError(t, err)
	require.Zero(t, n, "without persistence a restart starts empty")
}

// SIGSTOP freezes the server (a command waits past its deadline), SIGCONT
// resumes it, and Kill ends a server that is stopped.
func TestSignalStopContinue(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
	defer c.Close()
	require.NoError(t, c.Ping(ctx).Err())

	require.NoError(t, s.Signal(syscall.SIGSTOP))
	require.Error(t, c.Ping(ctx).Err(), "a stopped server must not answer")
	require.NoError(t, s.Signal(syscall.SIGCONT))
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, s.Signal(syscall.SIGSTOP))
	require.NoError(t, s.Kill())
	require.False(t, s.Running())
}

// A sentinel needs its config file as redis-server's first argument: one
// started with ConfigFile and --sentinel answers PING on its port and
// monitors the master its file names.
func TestSentinelConfigFile(t *testing.T) {
	ctx := context.Background()
	master := redistest.StartServer(t)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor mymaster 127.0.0.1 %d 1\n", master.Port)), 0o600))
	s := redistest.StartServerConfig(t, redisserver.Config{ConfigFile: conf, Args: []string{"--sentinel"}})

	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	require.NoError(t, c.Ping(ctx).Err())
	masters, err := c.Masters(ctx).Result()
	require.NoError(t, err)
	require.Len(t, masters, 1)
	addr, err := c.GetMasterAddrByName(ctx, "mymaster").Result()
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1", strconv.Itoa(master.Port)}, addr)
}

// With PortFlag "--tls-port" the free port speaks TLS only: a TLS client
// that trusts the server's certificate gets PONG there, a plain one does
// not, and the plain port is off.
func TestTLSPort(t *testing.T) {
	ctx := context.Background()
	certFile, keyFile, pool := selfSigned(t)
	s := redistest.StartServerConfig(t, redisserver.Config{PortFlag: "--tls-port", Args: []string{
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no"}})

	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	defer c.Close()
	require.NoError(t, c.Ping(ctx).Err())
	port, err := c.ConfigGet(ctx, "port").Result()
	require.NoError(t, err)
	require.Equal(t, "0", port["port"], "the plain port is off")

	plain := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ReadTimeout: 2 * time.Second})
	defer plain.Close()
	require.Error(t, plain.Ping(ctx).Err(), "the TLS port must refuse a plain client")
}

// A cluster node listens on its own bus port (not Port+10000) and keeps its
// node ID and both ports across Kill + Restart, its nodes.conf being in Dir.
func TestClusterNode(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServerConfig(t, redisserver.Config{Cluster: true})
	require.NotZero(t, s.BusPort)
	require.NotEqual(t, s.Port, s.BusPort)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(ctx, "cluster").Result()
	require.NoError(t, err)
	require.Contains(t, info, "cluster_enabled:1")
	bus, err := c.ConfigGet(ctx, "cluster-port").Result()
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(s.BusPort), bus["cluster-port"])
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.BusPort)))
	require.NoError(t, err, "the cluster bus listens on BusPort")
	conn.Close()
	id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)

	port, busPort := s.Port, s.BusPort
	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart(ctx))
	require.Equal(t, port, s.Port)
	require.Equal(t, busPort, s.BusPort)
	again, err := c.Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)
	require.Equal(t, id, again, "the restarted node is the same node")
}

// FreePort gives a port that can be bound right away.
func TestFreePort(t *testing.T) {
	port, err := redisserver.FreePort()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	ln.Close()
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile, pool
}

// A server whose default user is off answers PING with NOAUTH: Start still
// sees it up (it answers), and the ACL user it defines gets in.
func TestACLDefaultUserOff(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t, "--user", "default", "off", "--user", "app", "on", ">pw", "~*", "&*", "+@all")
	anon := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer anon.Close()
	require.Error(t, anon.Ping(ctx).Err(), "the default user is off")
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Username: "app", Password: "pw", MaxRetries: -1})
	defer c.Close()
	require.NoError(t, c.Ping(ctx).Err())
}

// The slots split as redis-cli --cluster create splits them: 3 masters
// own 0-5460, 5461-10922, 10923-16383, and every count covers the 16384
// slots once, in order, each master within one slot of 16384/masters.
func TestSlotRanges(t *testing.T) {
	require.Equal(t, [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}, redisserver.SlotRanges(3))
	require.Equal(t, [][2]int{{0, 16383}}, redisserver.SlotRanges(1))
	for masters := 1; masters <= 100; masters++ {
		r := redisserver.SlotRanges(masters)
		require.Len(t, r, masters)
		next := 0
		for _, x := range r {
			require.Equal(t, next, x[0], "%d masters: %v", masters, r)
			require.InDelta(t, 16384.0/float64(masters), float64(x[1]-x[0]+1), 1, "%d masters: %v", masters, r)
			next = x[1] + 1
		}
		require.Equal(t, 16384, next)
	}
}
