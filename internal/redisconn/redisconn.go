// Package redisconn turns otpq's Redis settings into asynq connection
// options, so that the producer, the worker and the command line accept the
// same URLs.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// DefaultURL is used when neither a URL nor a connection option is given.
const DefaultURL = "redis://127.0.0.1:6379/0"

// Option returns opt when it is set, else the parsed url (DefaultURL when
// empty). poolSize, when positive, sizes the connection pool unless the
// option already sets one. Parse errors are otpq's own texts and never
// contain any part of the URL's user information.
//
// URL forms:
//   - redis://[user:password@]host:port[/db] and rediss://… (TLS, server
//     name checked against host);
//   - redis-sentinel://[user:password@]sentinel1:26379,sentinel2:26379[/db]?master=NAME
//     (the password is used for the master and for the sentinels);
//   - redis-cluster://[user:password@]node1:6379,node2:6379 (a seed list;
//     the cluster's other nodes are discovered).
//
// The parameters dial_timeout, read_timeout, write_timeout (and, but for
// Cluster, pool_size) are read as go-redis reads them; any other parameter
// is refused. A password holding '/', '?', '#' or '%' must be
// percent-encoded; a database is a number from 0 up.
func Option(url string, opt asynq.RedisConnOpt, poolSize int) (asynq.RedisConnOpt, error) {
	if opt == nil {
		if url == "" {
			url = DefaultURL
		}
		parsed, err := parseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis url %s: %w", Redact(url), err)
		}
		opt = parsed
	}
	if poolSize > 0 {
		switch o := opt.(type) {
		case asynq.RedisClientOpt:
			if o.PoolSize == 0 {
				o.PoolSize = poolSize
			}
			opt = o
		case asynq.RedisFailoverClientOpt:
			if o.PoolSize == 0 {
				o.PoolSize = poolSize
			}
			opt = o
		case asynq.RedisClusterClientOpt:
			// Cluster clients size their pools per node from their own defaults.
		}
	}
	return opt, nil
}

// WithPassword returns opt with its Redis password replaced (for a password
// read from a file, such as OTPQ_REDIS_PASSWORD_FILE). For Sentinel it is
// also the sentinels' password.
func WithPassword(opt asynq.RedisConnOpt, password string) asynq.RedisConnOpt {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		o.Password = password
		return o
	case asynq.RedisFailoverClientOpt:
		o.Password, o.SentinelPassword = password, password
		return o
	case asynq.RedisClusterClientOpt:
		o.Password = password
		return o
	}
	return opt
}

// WithRootCAs returns opt with TLS verified against the PEM certificates
// in caPEM (a private CA, such as OTPQ_REDIS_CA_FILE), turning TLS on for
// a plain redis:// option. The server name is the host of the address.
// Sentinel and Cluster options are refused.
func WithRootCAs(opt asynq.RedisConnOpt, caPEM []byte) (asynq.RedisConnOpt, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM certificate found in the CA file")
	}
	o, ok := opt.(asynq.RedisClientOpt)
	if !ok {
		// Sentinel and Cluster reach several hosts, each with its own name.
		return nil, errors.New("a CA file applies to redis:// and rediss:// only; for TLS to Sentinel or Cluster build the asynq option in Go")
	}
	if o.TLSConfig == nil {
		host, _, _ := net.SplitHostPort(o.Addr)
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	} else {
		o.TLSConfig = o.TLSConfig.Clone()
	}
	o.TLSConfig.RootCAs = pool
	return o, nil
}

// Redact hides the user information of a Redis URL, user name included
// (in a malformed URL, where it ends is a guess): redis://user:secret@host
// → redis://xxxxx@host. Everything up to the last '@' is hidden, so a
// password holding '@', '/', '?' or '#' is hidden whole.
func Redact(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return "(unparsable)"
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return url
	}
	return scheme + "://xxxxx" + rest[at:]
}

// NewClient opens a go-redis client for opt that honours the deadline of
// every call's context (go-redis ignores it by default and waits out its own
// read timeout and retries, so a stalled Redis held a Send with a 1 s
// deadline for 5 s). The producer, the worker and the ops server share
// this so that a caller's deadline always holds. Options other than asynq's
// three are opened with their own MakeRedisClient.
func NewClient(opt asynq.RedisConnOpt) (redis.UniversalClient, error) {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return redis.NewClient(clientOptions(o)), nil
	case asynq.RedisFailoverClientOpt:
		return redis.NewFailoverClient(failoverOptions(o)), nil
	case asynq.RedisClusterClientOpt:
		return newClusterClient(clusterOptions(o)), nil
	case nil:
		return nil, errors.New("no redis option")
	}
	if c, ok := opt.MakeRedisClient().(redis.UniversalClient); ok {
		return c, nil
	}
	return nil, fmt.Errorf("unsupported redis option %T", opt)
}

// newClusterClient opens a cluster client that reloads its map of slots
// as soon as a node cannot be reached. go-redis reloads it on MOVED and
// ASK and otherwise every 60 s: a master killed and replaced by its
// replica answers neither, so its slots were sent to the dead address for
// up to a minute after the failover (the cluster was ok again after
// 3.5 s; TestCluster/MasterKilledDuringDrain). A reload is one CLUSTER
// SLOTS, at most one at a time and one per 200 ms.
func newClusterClient(opt *redis.ClusterOptions) *redis.ClusterClient {
	c := redis.NewClusterClient(opt)
	c.OnNewNode(func(n *redis.Client) { n.AddHook(reloadOnNodeDown{c}) })
	return c
}

// reloadOnNodeDown is the hook of a cluster client's node clients that
// reloads the cluster's slot map when the node cannot be reached.
type reloadOnNodeDown struct{ c *redis.ClusterClient }

// unreachable reports whether err says the node could not be reached (a
// refused or broken connection, a timeout), not a Redis error reply.
func unreachable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED)
}

// Unavailable reports whether err says that Redis cannot serve the command
// for now, so that the same command may succeed later: the node could not
// be reached (refused, broken or timed out), or it answered that the
// cluster is failing over or migrating the command's slot (CLUSTERDOWN,
// TRYAGAIN, MASTERDOWN), or that it is loading its data (LOADING). A
// refusal of the command itself (NOPERM, OOM, WRONGTYPE…) is not.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if unreachable(err) {
		return true
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range []string{"CLUSTERDOWN ", "TRYAGAIN ", "MASTERDOWN ", "LOADING "} {
		if strings.HasPrefix(re.Error(), p) {
			return true
		}
	}
	return false
}

func (h reloadOnNodeDown) reload(err error) {
	if unreachable(err) {
		h.c.ReloadState(context.Background()) // in the background
	}
}

// DialHook reloads the slot map when a dial fails.
func (h reloadOnNodeDown) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		h.reload(err)
		return conn, err
	}
}

// ProcessHook reloads the slot map when a command could not reach the node.
func (h reloadOnNodeDown) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.reload(err)
		return err
	}
}

// ProcessPipelineHook reloads the slot map when a pipeline could not reach
// the node.
func (h reloadOnNodeDown) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.reload(err)
		return err
	}
}

// clientOptions, failoverOptions and clusterOptions are the go-redis
// options asynq's MakeRedisClient builds from each option type (every
// field, same name), plus ContextTimeoutEnabled.
func clientOptions(o asynq.RedisClientOpt) *redis.Options {
	return &redis.Options{
		Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize, TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
	}
}

func failoverOptions(o asynq.RedisFailoverClientOpt) *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
		SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
		Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize, TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
	}
}

func clusterOptions(o asynq.RedisClusterClientOpt) *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs: o.Addrs, MaxRedirects: o.MaxRedirects, Username: o.Username, Password: o.Password,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		TLSConfig: o.TLSConfig, ContextTimeoutEnabled: true,
	}
}
