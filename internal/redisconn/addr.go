package redisconn

import (
	"strings"

	"github.com/hibiken/asynq"
)

// Addr is where opt connects, for messages: host:port, the sentinels and
// master name, or the cluster seed nodes. It never holds a password.
func Addr(opt asynq.RedisConnOpt) string {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return o.Addr
	case asynq.RedisFailoverClientOpt:
		return "master " + o.MasterName + " via sentinels " + strings.Join(o.SentinelAddrs, ",")
	case asynq.RedisClusterClientOpt:
		return "cluster " + strings.Join(o.Addrs, ",")
	}
	return "(custom connection)"
}

// IsConnFailure reports whether a library's log message is about Redis
// being unreachable, the condition a worker reports once by itself (and
// send and status in their error) rather than line by line.
func IsConnFailure(msg string) bool {
	// What connection failures look like in the messages asynq and
	// go-redis log (they log text, not errors).
	for _, s := range [...]string{
		"dial tcp", "connection refused", "i/o timeout", "connection reset", "broken pipe",
		"no such host", "network is unreachable", "no route to host", "connection pool", ": EOF",
		"use of closed network connection", "LOADING",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
