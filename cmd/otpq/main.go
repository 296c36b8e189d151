// Command otpq queues and delivers one-time-password codes through the
// EngageLab Custom OTP Code API. See `otpq -h`.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	redis.SetLogger(cli.RedisLogger{})
	m := &cli.Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, OnLogger: slog.SetDefault}
	os.Exit(m.Run(ctx, os.Args[1:]))
}
