package httpserve_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/httpserve"
)

type served struct {
	url  string
	done chan error
}

func setup(t *testing.T, ctx context.Context, h http.Handler) served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := served{url: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- httpserve.Serve(ctx, ln, h) }()
	return s
}

// A request in flight when ctx ends still gets its answer, Serve then
// returns nil, and the address no longer accepts connections.
func TestServeFinishesRequestInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	entered, release := make(chan struct{}), make(chan struct{})
	s := setup(t, ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get(s.url)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-entered
	cancel()
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.Equal(t, "done", <-answer)
	require.NoError(t, <-s.done)
	_, err := http.Get(s.url)
	require.Error(t, err, "the server still accepts connections after Serve returned")
}

// A handler that never returns does not keep Serve from returning: its
// connection is closed once the grace period is over.
func TestServeClosesHangingRequestAfterGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	entered := make(chan struct{})
	hang := make(chan struct{})
	defer close(hang)
	s := setup(t, ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-hang
	}))
	go func() {
		if resp, err := http.Get(s.url); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	cancel()
	select {
	case err := <-s.done:
		require.NoError(t, err)
	case <-time.After(httpserve.Grace + 10*time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
}

// An error that stops serving before ctx ends comes back from Serve.
func TestServeReturnsServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	err = httpserve.Serve(context.Background(), ln, http.NotFoundHandler())
	require.Error(t, err)
	require.False(t, errors.Is(err, http.ErrServerClosed))
}
