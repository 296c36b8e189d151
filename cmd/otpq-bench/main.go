// Command otpq-bench is otpq's load benchmark (make bench → BENCHMARKS.md),
// kept out of the otpq binary. See `otpq-bench -h`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/otpq/otpq/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
