package redisconn

import (
	"errors"
	"fmt"
	neturl "net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// parseURL turns one of otpq's Redis URL forms into an asynq option through
// go-redis's own parsers (ParseURL, ParseFailoverURL, ParseClusterURL):
// the Sentinel and Cluster forms, which list their hosts comma-separated,
// are rewritten into go-redis's ?addr= form first. Its errors are otpq's
// own texts: they never quote the URL, nor the error of net/url, which
// can quote part of a password (an invalid port after a '/' in it, a bad
// %-escape).
func parseURL(raw string) (asynq.RedisConnOpt, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("not a URL: want redis://[user:password@]host:port/db (or rediss://, redis-sentinel://, redis-cluster://)")
	}
	switch scheme {
	case "redis", "rediss", "redis-sentinel", "redis-cluster":
	default:
		if !schemeChars.MatchString(scheme) {
			scheme = "?"
		}
		return nil, fmt.Errorf("scheme %q is not redis, rediss, redis-sentinel or redis-cluster", scheme)
	}
	// A '/', '?' or '#' before the last '@' is a password that was not
	// percent-encoded: net/url would cut the URL inside it.
	if at := strings.LastIndexByte(rest, '@'); at >= 0 && strings.ContainsAny(rest[:at], "/?#") {
		return nil, errors.New("the user:password part holds '/', '?' or '#': percent-encode them (%2F, %3F, %23)")
	}
	u, err := neturl.Parse(raw)
	if err != nil {
		return nil, errors.New("not a valid URL (a password must be percent-encoded; host:port, /db)")
	}
	if u.Fragment != "" || u.Opaque != "" {
		return nil, errors.New("not a valid URL (a password must be percent-encoded; host:port, /db)")
	}
	switch scheme {
	case "redis-sentinel":
		return parseSentinel(u)
	case "redis-cluster":
		return parseCluster(u)
	}
	db, err := dbOf(u.Path)
	if err != nil {
		return nil, err
	}
	if u.Port() == "" {
		return nil, errors.New("the address needs a port (host:6379)")
	}
	if err := onlyParams(u, asynqParams...); err != nil {
		return nil, err
	}
	u.Path = fmt.Sprintf("/%d", db)
	o, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, goRedisError(err)
	}
	return asynq.RedisClientOpt{
		Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize, TLSConfig: o.TLSConfig,
	}, nil
}

var schemeChars = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]{0,20}$`)

// asynqParams are the go-redis URL parameters an asynq option can carry.
var asynqParams = []string{"dial_timeout", "read_timeout", "write_timeout", "pool_size"}

// parseSentinel reads redis-sentinel://[user:password@]s1:26379,s2:26379[/db]?master=NAME.
// The password is the master's and the sentinels'.
func parseSentinel(u *neturl.URL) (asynq.RedisConnOpt, error) {
	addrs, err := hostList(u.Host)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	master := q.Get("master")
	if master == "" {
		return nil, errors.New("redis-sentinel:// needs ?master=NAME")
	}
	if err := onlyParams(u, append([]string{"master"}, asynqParams...)...); err != nil {
		return nil, err
	}
	db, err := dbOf(u.Path)
	if err != nil {
		return nil, err
	}
	q.Del("master")
	q.Set("master_name", master)
	o, err := redis.ParseFailoverURL(goRedisURL(u, addrs, q, fmt.Sprintf("/%d", db)))
	if err != nil {
		return nil, goRedisError(err)
	}
	// go-redis reads the user info as the sentinels' credentials.
	return asynq.RedisFailoverClientOpt{
		MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
		Username: o.SentinelUsername, Password: o.SentinelPassword, SentinelPassword: o.SentinelPassword, DB: o.DB,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize,
	}, nil
}

// parseCluster reads redis-cluster://[user:password@]node1:6379,node2:6379
// (seed nodes; a cluster only has db 0).
func parseCluster(u *neturl.URL) (asynq.RedisConnOpt, error) {
	addrs, err := hostList(u.Host)
	if err != nil {
		return nil, err
	}
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return nil, errors.New("redis-cluster:// has no database number (a cluster only has db 0)")
	}
	if err := onlyParams(u, "dial_timeout", "read_timeout", "write_timeout"); err != nil {
		return nil, err
	}
	o, err := redis.ParseClusterURL(goRedisURL(u, addrs, u.Query(), ""))
	if err != nil {
		return nil, goRedisError(err)
	}
	return asynq.RedisClusterClientOpt{
		Addrs: o.Addrs, Username: o.Username, Password: o.Password,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
	}, nil
}

// goRedisURL is u in go-redis's form: redis://, the first host, the others
// as ?addr=.
func goRedisURL(u *neturl.URL, addrs []string, q neturl.Values, path string) string {
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	return (&neturl.URL{Scheme: "redis", User: u.User, Host: addrs[0], Path: path, RawQuery: q.Encode()}).String()
}

// onlyParams refuses a query parameter not in allowed, rather than ignore
// it: an option that would be dropped on its way to asynq is a surprise.
func onlyParams(u *neturl.URL, allowed ...string) error {
	for k := range u.Query() {
		found := false
		for _, a := range allowed {
			found = found || k == a
		}
		if !found {
			return fmt.Errorf("unsupported URL parameter %q (supported: %s)", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// goRedisError rewrites an error of go-redis's parsers, which comes only
// from parameters and paths that onlyParams and dbOf let through: the text
// is otpq's, without go-redis's quote of the value.
func goRedisError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	if name, _, ok := strings.Cut(msg, ":"); ok {
		msg = name
	}
	return fmt.Errorf("invalid setting: %s", msg)
}

func hostList(hosts string) ([]string, error) {
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			if !strings.Contains(h, ":") {
				return nil, fmt.Errorf("address %q needs a port", h)
			}
			addrs = append(addrs, h)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("no host:port given")
	}
	return addrs, nil
}

var dbDigits = regexp.MustCompile(`^[0-9]{1,6}$`)

// dbOf reads the database number of a URL path: "", "/" or "/N" with N a
// non-negative integer. A number beyond the server's `databases` setting
// (16 by default) is refused by the server at connect, loudly; a negative
// one or junk would silently mean db 0 to go-redis, so it is refused here.
func dbOf(path string) (int, error) {
	p := strings.Trim(path, "/")
	if p == "" {
		return 0, nil
	}
	if !dbDigits.MatchString(p) {
		return 0, fmt.Errorf("database %q is not a number from 0 up (redis://host:port/DB)", p)
	}
	return strconv.Atoi(p)
}
