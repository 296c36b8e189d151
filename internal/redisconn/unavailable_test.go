package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// replyError is a Redis error reply, as go-redis returns it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// Unavailable is true for errors that say Redis cannot serve the command
// for now (unreachable, failing over, migrating, loading), false for a
// refusal of the command itself and for the empty answer.
func TestUnavailable(t *testing.T) {
	for _, err := range []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		fmt.Errorf("wrapped: %w", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}),
		io.EOF,
		replyError("CLUSTERDOWN The cluster is down"),
		replyError("TRYAGAIN Multiple keys request during rehashing of slot"),
		replyError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
		replyError("LOADING Redis is loading the dataset in memory"),
	} {
		require.True(t, Unavailable(err), "%v", err)
	}
	for _, err := range []error{
		nil,
		redis.Nil,
		context.Canceled,
		errors.New("TRYAGAIN but not a Redis reply"),
		replyError("NOPERM this user has no permissions to run the 'get' command"),
		replyError("OOM command not allowed when used memory > 'maxmemory'."),
		replyError("WRONGTYPE Operation against a key holding the wrong kind of value"),
		replyError("MOVED 3999 127.0.0.1:6381"),
	} {
		require.False(t, Unavailable(err), "%v", err)
	}
}
