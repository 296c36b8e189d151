// Package httpserve runs an http.Server for as long as a context lives: the
// ops server, the fake EngageLab and the benchmark's roles all serve this
// way.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Grace bounds how long Serve waits, once its context is done, for requests
// in flight to finish before it closes their connections.
const Grace = 5 * time.Second

// Serve serves h on ln until ctx is done, then shuts the server down: new
// connections are refused at once, requests in flight get up to Grace to
// finish, and connections still open after that are closed. It returns nil
// after a shutdown, or the error that stopped serving before ctx was done.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close() // a request outlived the grace period (a hanging handler)
	}
	<-served
	return err
}
