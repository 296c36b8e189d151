package redisconn

import (
	"crypto/tls"
	"reflect"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// fill sets every exported field of the struct v points to to a distinct
// non-zero value, so that a field NewClient forgets to copy (including one
// a later asynq adds) shows up as a difference. A field of a kind it does
// not know fails the test rather than being left zero.
func fill(t *testing.T, v any) {
	t.Helper()
	s := reflect.ValueOf(v).Elem()
	for i := range s.NumField() {
		f, name := s.Field(i), s.Type().Field(i).Name
		switch {
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			f.SetInt(int64(time.Duration(i+1) * time.Second))
		case f.Kind() == reflect.String:
			f.SetString(name + "-value")
		case f.Kind() == reflect.Int:
			f.SetInt(int64(i + 3))
		case f.Type() == reflect.TypeOf([]string(nil)):
			f.Set(reflect.ValueOf([]string{"127.0.0.1:1", "127.0.0.1:2"}))
		case f.Type() == reflect.TypeOf((*tls.Config)(nil)):
			f.Set(reflect.ValueOf(&tls.Config{ServerName: "redis.example", MinVersion: tls.VersionTLS12}))
		default:
			t.Fatalf("fill: field %s of %s has a type this test does not know (%s): teach NewClient and this test about it", name, s.Type(), f.Type())
		}
	}
}

// sameByName requires every field of the asynq option o to be copied into
// the go-redis options ours under the same name (asynq names them as
// go-redis does), and ContextTimeoutEnabled to be on.
func sameByName(t *testing.T, o, ours any) {
	t.Helper()
	ov, gv := reflect.ValueOf(o), reflect.ValueOf(ours).Elem()
	for i := range ov.NumField() {
		name := ov.Type().Field(i).Name
		g := gv.FieldByName(name)
		require.True(t, g.IsValid(), "go-redis %s has no field %s", gv.Type(), name)
		require.Equal(t, ov.Field(i).Interface(), g.Interface(), "%s.%s not copied", ov.Type(), name)
	}
	require.True(t, gv.FieldByName("ContextTimeoutEnabled").Bool(), "ContextTimeoutEnabled")
}

// TestNewClientCopiesEveryAsynqOption: the options NewClient builds carry
// every field of each asynq option type (including any field a later asynq
// adds: fill sets them all), plus ContextTimeoutEnabled; and NewClient
// opens the client of the matching kind.
func TestNewClientCopiesEveryAsynqOption(t *testing.T) {
	var single asynq.RedisClientOpt
	fill(t, &single)
	single.Network = "tcp"
	var failover asynq.RedisFailoverClientOpt
	fill(t, &failover)
	var cluster asynq.RedisClusterClientOpt
	fill(t, &cluster)

	sameByName(t, single, clientOptions(single))
	sameByName(t, failover, failoverOptions(failover))
	sameByName(t, cluster, clusterOptions(cluster))

	for _, c := range []struct {
		opt  asynq.RedisConnOpt
		want reflect.Type
	}{{single, reflect.TypeOf(&redis.Client{})}, {failover, reflect.TypeOf(&redis.Client{})}, {cluster, reflect.TypeOf(&redis.ClusterClient{})}} {
		opt, want := c.opt, c.want
		c, err := NewClient(opt)
		require.NoError(t, err)
		require.Equal(t, want, reflect.TypeOf(c), "%T", opt)
		require.NoError(t, c.Close())
	}
}
