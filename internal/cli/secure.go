package cli

import (
	"errors"
	"os"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/producer"
)

// Secrets read from the environment or from files named there, never from
// flags (ps shows flags to every user of the machine).
const (
	envPayloadKey        = "OTPQ_PAYLOAD_KEY"
	envPayloadKeyFile    = "OTPQ_PAYLOAD_KEY_FILE"
	envRedisPasswordFile = "OTPQ_REDIS_PASSWORD_FILE"
	envRedisCAFile       = "OTPQ_REDIS_CA_FILE"
)

// secretFile reads a small secret file, trimming the trailing newline. An
// empty file is an error: read as "no secret", it would quietly turn a
// check off (callbacks unverified, codes stored unencrypted).
func secretFile(env, path string) (string, error) {
	if path == "-" {
		return "", usagef("%s: must name a file", env)
	}
	data, err := readFileOrStdin(path, nil, 64<<10)
	if err != nil {
		return "", usagef("%s: %v", env, err)
	}
	v := strings.TrimRight(string(data), "\r\n")
	if v == "" {
		return "", usagef("%s: the file %s is empty", env, path)
	}
	return v, nil
}

// payloadKeys is the payload keyring (kid:base64key[,…]) from
// OTPQ_PAYLOAD_KEY or the file OTPQ_PAYLOAD_KEY_FILE names; nil when
// neither is set. A malformed ring is a usage error that shows no key.
func (m *Main) payloadKeys() (*producer.Keys, error) {
	keys, file := m.Getenv(envPayloadKey), m.Getenv(envPayloadKeyFile)
	if keys != "" && file != "" {
		return nil, usagef("set %s or %s, not both", envPayloadKey, envPayloadKeyFile)
	}
	if file != "" {
		var err error
		if keys, err = secretFile(envPayloadKeyFile, file); err != nil {
			return nil, err
		}
	}
	ring, err := producer.ParseKeys(keys)
	if err != nil {
		return nil, usagef("%s: %v", envPayloadKey, errors.Unwrap(err))
	}
	return ring, nil
}

// redisOption parses the Redis URL and applies the password file
// (OTPQ_REDIS_PASSWORD_FILE, which overrides a password in the URL) and a
// private CA (OTPQ_REDIS_CA_FILE, which also turns TLS on).
func (m *Main) redisOption(url string) (asynq.RedisConnOpt, error) {
	opt, err := redisconn.Option(url, nil, 0)
	if err != nil {
		return nil, usagef("--redis-url: %v", err)
	}
	if f := m.Getenv(envRedisPasswordFile); f != "" {
		pw, err := secretFile(envRedisPasswordFile, f)
		if err != nil {
			return nil, err
		}
		opt = redisconn.WithPassword(opt, pw)
	}
	if f := m.Getenv(envRedisCAFile); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, usagef("%s: %v", envRedisCAFile, err)
		}
		if opt, err = redisconn.WithRootCAs(opt, pem); err != nil {
			return nil, usagef("%s: %v", envRedisCAFile, err)
		}
	}
	return opt, nil
}
