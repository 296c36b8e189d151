package redisconn

import (
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
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
	require.Contains(t, err.Error(), "mysql://root:xxxxx@db/1")
}

func TestRedact(t *testing.T) {
	require.Equal(t, "redis://:xxxxx@h:1/0", Redact("redis://:pw@h:1/0"))
	require.Equal(t, "redis://h:1/0", Redact("redis://h:1/0"))
	require.Equal(t, "(unparsable)", Redact("nonsense"))
}
