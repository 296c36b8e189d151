// Package faulttest is otpq's fault-injection suite: it builds the otpq
// binary, runs real `otpq worker` and `otpq fake-engagelab` processes against
// a private redis-server on a free port, injects faults (kill -9, SIGTERM,
// Redis restarts and stalls, provider errors and hangs, corrupt payloads,
// maxmemory) and checks that nothing accepted is lost, that duplicates stay
// within their bound and that no secret leaks.
//
// The tests carry the build tag "fault" so that plain `go test ./...` skips
// them; run them with `make test-fault` (which `make test` also runs).
// `make reliability` runs them and regenerates RELIABILITY.md from the
// figures measured (OTPQ_RELIABILITY_OUT); nothing else writes it.
package faulttest
