package ops

import "github.com/redis/go-redis/v9"

// fakeOpt is a Redis option that is never dialled (New fails before).
type fakeOpt struct{}

func (fakeOpt) MakeRedisClient() any { return redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) }
