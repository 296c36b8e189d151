// Package redisconn turns otpq's Redis settings into asynq connection
// options, so that the producer, the worker and the command line accept the
// same URLs.
package redisconn

import (
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/hibiken/asynq"
)

// DefaultURL is used when neither a URL nor a connection option is given.
const DefaultURL = "redis://127.0.0.1:6379/0"

// Option returns opt when it is set, else the parsed url (DefaultURL when
// empty). poolSize, when positive, sizes the connection pool unless the
// option already sets one. Parse errors never contain the password.
func Option(url string, opt asynq.RedisConnOpt, poolSize int) (asynq.RedisConnOpt, error) {
	if opt == nil {
		if url == "" {
			url = DefaultURL
		}
		parsed, err := asynq.ParseRedisURI(url)
		if err != nil {
			return nil, fmt.Errorf("redis url %s: %w", Redact(url), errors.Unwrap(err))
		}
		// asynq's parser drops the ACL user name of redis://user:pass@host.
		if o, ok := parsed.(asynq.RedisClientOpt); ok {
			if u, err := neturl.Parse(url); err == nil && u.User != nil {
				o.Username = u.User.Username()
			}
			parsed = o
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

// Redact hides the password of a Redis URL: redis://user:secret@host →
// redis://user:xxxxx@host.
func Redact(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return "(unparsable)"
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return url
	}
	userinfo := rest[:at]
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		userinfo = user + ":xxxxx"
	}
	return scheme + "://" + userinfo + rest[at:]
}
