package redisconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redistest"
)

func TestOptionParsesURLs(t *testing.T) {
	opt, err := Option("", nil, 0)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisClientOpt{Addr: "127.0.0.1:6379", DB: 0}, opt)

	opt, err = Option("redis://:pw@localhost:6390/3", nil, 64)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisClientOpt{Addr: "localhost:6390", Password: "pw", DB: 3, PoolSize: 64}, opt)

	opt, err = Option("rediss://u:pw@localhost:6390/1", nil, 0)
	require.NoError(t, err)
	require.NotNil(t, opt.(asynq.RedisClientOpt).TLSConfig)
	require.Equal(t, "u", opt.(asynq.RedisClientOpt).Username)
}

func TestOptionErrorHidesPassword(t *testing.T) {
	_, err := Option("mysql://root:topsecret@db/1", nil, 0)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "topsecret")
	require.NotContains(t, err.Error(), "root", "no part of the user information")
	require.Contains(t, err.Error(), "mysql://xxxxx@db/1")
}

func TestRedact(t *testing.T) {
	require.Equal(t, "redis://xxxxx@h:1/0", Redact("redis://:pw@h:1/0"))
	require.Equal(t, "redis://xxxxx@h:1/0", Redact("redis://u:p@s/s#x?y@h:1/0"))
	require.Equal(t, "redis://h:1/0", Redact("redis://h:1/0"))
	require.Equal(t, "(unparsable)", Redact("nonsense"))
}

func TestOptionSentinelAndCluster(t *testing.T) {
	opt, err := Option("redis-sentinel://app:pw@s1:26379,s2:26379/2?master=mymaster", nil, 50)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisFailoverClientOpt{
		MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379"},
		Username: "app", Password: "pw", SentinelPassword: "pw", DB: 2, PoolSize: 50,
	}, opt)

	opt, err = Option("redis-cluster://app:pw@n1:6379,n2:6380,n3:6381", nil, 50)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisClusterClientOpt{Addrs: []string{"n1:6379", "n2:6380", "n3:6381"}, Username: "app", Password: "pw"}, opt)

	for url, want := range map[string]string{
		"redis-sentinel://:topsecret@s1:26379":         "needs ?master=NAME",
		"redis-sentinel://s1?master=m":                 `"s1" needs a port`,
		"redis-sentinel://s1:1/x?master=m":             `database "x" is not a number`,
		"redis-cluster://:topsecret@n1:1/3":            "no database number",
		"redis-cluster://:topsecret@":                  "no host:port given",
		"redis://:topsecret@bad host:1/0":              "not a valid URL",
		"redis://u:topsecret@h:1/notanumber":           "is not a number",
		"redis-cluster://u:topsecret@n1:1,n2:1/%zz":    "not a valid URL",
		"redis-sentinel://u:topsecret@n1:1/%zz?master": "not a valid URL",
	} {
		_, err := Option(url, nil, 0)
		require.Error(t, err, url)
		require.Contains(t, err.Error(), want, url)
		require.NotContains(t, err.Error(), "topsecret", url)
	}
}

func TestWithPasswordAndRootCAs(t *testing.T) {
	for _, url := range []string{"redis://h:1/0", "redis-sentinel://s:1?master=m", "redis-cluster://n:1"} {
		opt, err := Option(url, nil, 0)
		require.NoError(t, err)
		opt = WithPassword(opt, "filepw")
		switch o := opt.(type) {
		case asynq.RedisClientOpt:
			require.Equal(t, "filepw", o.Password)
		case asynq.RedisFailoverClientOpt:
			require.Equal(t, "filepw", o.Password)
			require.Equal(t, "filepw", o.SentinelPassword)
		case asynq.RedisClusterClientOpt:
			require.Equal(t, "filepw", o.Password)
		}
	}
	opt, err := Option("redis://h:1/0", nil, 0)
	require.NoError(t, err)
	_, err = WithRootCAs(opt, []byte("not pem"))
	require.ErrorContains(t, err, "no PEM certificate")
	sentinel, err := Option("redis-sentinel://s:1?master=m", nil, 0)
	require.NoError(t, err)
	_, err = WithRootCAs(sentinel, testCA(t))
	require.ErrorContains(t, err, "redis:// and rediss:// only")
	opt, err = WithRootCAs(opt, testCA(t))
	require.NoError(t, err)
	require.Equal(t, "h", opt.(asynq.RedisClientOpt).TLSConfig.ServerName)
	require.NotNil(t, opt.(asynq.RedisClientOpt).TLSConfig.RootCAs)
}

// testCA is a fresh self-signed CA certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A stalled Redis must not hold a caller past its deadline: the client's own
// read timeout here is a minute, the caller's deadline 100 ms.
func TestNewClientHonoursContextDeadline(t *testing.T) {
	addr := redistest.Stalled(t)
	for name, opt := range map[string]asynq.RedisConnOpt{
		"redis":   asynq.RedisClientOpt{Addr: addr, ReadTimeout: time.Minute, WriteTimeout: time.Minute},
		"cluster": asynq.RedisClusterClientOpt{Addrs: []string{addr}, ReadTimeout: time.Minute, WriteTimeout: time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := NewClient(opt)
			require.NoError(t, err)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c.Ping(ctx).Err() }()
			select {
			case err := <-done:
				var ne net.Error
				require.True(t, errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()), "want a timeout, got %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("Ping ignored its context deadline against a stalled Redis")
			}
		})
	}
}

func TestNewClientRefusesNil(t *testing.T) {
	_, err := NewClient(nil)
	require.EqualError(t, err, "no redis option")
}

// A malformed Redis URL is reported in otpq's own words, without any part
// of its user information (issue 9, item 5a): net/url's errors quoted the
// password ("invalid port \":SECRETA\" after host").
func TestOptionErrorsNeverEchoUserinfo(t *testing.T) {
	for url, want := range map[string]string{
		"redis://u:SECRETA/SECRETB@127.0.0.1:6379/0":    "percent-encode them",
		"redis://u:SECRET#A@127.0.0.1:6379/0":           "percent-encode them",
		"redis://u:SECRET?A@127.0.0.1:6379/0":           "percent-encode them",
		"rediss://SECRETUSER:SECRET/A@127.0.0.1:6379/0": "percent-encode them",
		"redis://u:SECRET%zz@127.0.0.1:6379/0":          "not a valid URL",
		"redis://u:SECRET@127.0.0.1:port/0":             "not a valid URL",
		"redis://u:SECRET@[::1/0":                       "not a valid URL",
		"redis://u:SECRET@127.0.0.1:6379/-1":            `database "-1" is not a number from 0 up`,
		"redis://u:SECRET@127.0.0.1:6379/+1":            `database "+1" is not a number`,
		"redis://u:SECRET@127.0.0.1:6379/x":             `database "x" is not a number`,
		"redis://u:SECRET@127.0.0.1:6379/1/2":           `database "1/2" is not a number`,
		"redis://u:SECRET@127.0.0.1/0":                  "needs a port",
		"redis://u:SECRET@127.0.0.1:6379/0?db=-1":       `unsupported URL parameter "db"`,
		"redis://u:SECRET@127.0.0.1:6379/0?pool_size=x": "invalid setting: invalid pool_size number",
		"redis-sentinel://u:SECRET@s:1/-1?master=m":     `database "-1"`,
		"redis-sentinel://u:SECRET/X@s:1/0?master=m":    "percent-encode them",
		"redis-cluster://u:SECRET#X@n:1":                "percent-encode them",
		"redis-cluster://u:SECRET@n:1?pool_size=3":      `unsupported URL parameter "pool_size"`,
		"SECRET":                           "not a URL",
		"u:SECRET@127.0.0.1:6379":          "not a URL",
		"http://u:SECRET@127.0.0.1:6379/0": `scheme "http" is not redis`,
		"re dis://u:SECRET@h:1":            `scheme "?"`,
	} {
		_, err := Option(url, nil, 0)
		require.Error(t, err, url)
		require.NotContains(t, err.Error(), "SECRET", url)
		require.NotContains(t, err.Error(), "u:", url)
		require.Contains(t, err.Error(), want, url)
	}
}

// Settings go-redis reads from the URL reach the asynq option; the DB is
// any number from 0 (the server refuses one beyond its `databases`).
func TestOptionURLParameters(t *testing.T) {
	opt, err := Option("redis://u:p%2Fw%23@h:1/15?dial_timeout=3&read_timeout=2s&write_timeout=1s&pool_size=7", nil, 64)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisClientOpt{Addr: "h:1", Username: "u", Password: "p/w#", DB: 15,
		DialTimeout: 3 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: time.Second, PoolSize: 7}, opt)
	opt, err = Option("redis-sentinel://s1:1,s2:2/3?master=m&dial_timeout=5", nil, 0)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:1", "s2:2"}, DB: 3, DialTimeout: 5 * time.Second}, opt)
	opt, err = Option("redis-cluster://n1:1,n2:2/0", nil, 0)
	require.NoError(t, err)
	require.Equal(t, asynq.RedisClusterClientOpt{Addrs: []string{"n1:1", "n2:2"}}, opt)
}
