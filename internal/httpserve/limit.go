package httpserve

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/otpq/otpq/internal/ratelog"
)

// limitListener bounds the connections accepted from a listener, in all
// and per client, by shedding old ones (see Config.Serve).
type limitListener struct {
	net.Listener
	max, perClient int
	log            *ratelog.Limiter

	mu       sync.Mutex
	conns    map[*conn]struct{}
	byClient map[string]int

	closeOnce sync.Once
	closed    chan struct{}
}

func newLimitListener(ln net.Listener, max, perClient int, log *ratelog.Limiter) *limitListener {
	return &limitListener{
		Listener: ln, max: max, perClient: perClient, log: log,
		conns: map[*conn]struct{}{}, byClient: map[string]int{}, closed: make(chan struct{}),
	}
}

// conn is an accepted connection; its fields under limitListener.mu.
type conn struct {
	net.Conn
	l      *limitListener
	client string
	// idle: waiting for a request (new, or kept alive between requests);
	// since: when it became idle or busy.
	idle  bool
	since time.Time
}

// Close closes the connection and frees its place.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.l.remove(c)
	return err
}

// Backoff of an accept that fails for lack of file descriptors.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Accept accepts the next connection and, when that goes past a bound,
// sheds an older one.
func (l *limitListener) Accept() (net.Conn, error) {
	backoff := minAcceptBackoff
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
				return nil, err
			}
			// Out of descriptors: the connection waiting in the backlog
			// needs one. Free one, and wait a little in case the
			// shortage is elsewhere in the process.
			shed := l.shed("") != nil
			l.log.Warn("accept: out of file descriptors; shedding the oldest connection", slog.String("error", err.Error()), slog.Bool("shed", shed))
			select {
			case <-l.closed:
				return nil, net.ErrClosed
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxAcceptBackoff)
			continue
		}
		return l.track(nc), nil
	}
}

// Close closes the listener (not its connections).
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// track registers nc, shedding older connections past a bound.
func (l *limitListener) track(nc net.Conn) *conn {
	c := &conn{Conn: nc, l: l, client: clientKey(nc.RemoteAddr()), idle: true, since: time.Now()}
	var victims []*conn
	l.mu.Lock()
	if l.byClient[c.client] >= l.perClient {
		v := l.oldestLocked(c.client)
		victims = append(victims, v)
		l.removeLocked(v)
	}
	if len(l.conns) >= l.max {
		if v := l.oldestLocked(""); v != nil {
			victims = append(victims, v)
			l.removeLocked(v)
		}
	}
	l.conns[c] = struct{}{}
	l.byClient[c.client]++
	l.mu.Unlock()
	for _, v := range victims {
		l.log.Warn("connection limit reached; closing the oldest connection", slog.Int("max", l.max), slog.Int("max_per_client", l.perClient))
		_ = v.Close()
	}
	return c
}

// shed closes the oldest connection of client ("" any client) and
// returns it, nil when there is none.
func (l *limitListener) shed(client string) *conn {
	l.mu.Lock()
	v := l.oldestLocked(client)
	l.mu.Unlock()
	if v != nil {
		_ = v.Close()
	}
	return v
}

// oldestLocked is the connection to shed among client's ("" all): the
// longest idle one, else the longest busy one.
func (l *limitListener) oldestLocked(client string) *conn {
	var idle, busy *conn
	for c := range l.conns {
		if client != "" && c.client != client {
			continue
		}
		best := &busy
		if c.idle {
			best = &idle
		}
		if *best == nil || c.since.Before((*best).since) {
			*best = c
		}
	}
	if idle != nil {
		return idle
	}
	return busy
}

func (l *limitListener) remove(c *conn) {
	l.mu.Lock()
	l.removeLocked(c)
	l.mu.Unlock()
}

func (l *limitListener) removeLocked(c *conn) {
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	if l.byClient[c.client]--; l.byClient[c.client] <= 0 {
		delete(l.byClient, c.client)
	}
}

// connState is the http.Server's ConnState hook: it keeps each
// connection's idle/busy state and frees the place of a closed one.
func (l *limitListener) connState(nc net.Conn, state http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	switch state {
	case http.StateClosed:
		l.remove(c)
	case http.StateActive, http.StateIdle, http.StateHijacked:
		l.mu.Lock()
		c.idle = state == http.StateIdle
		c.since = time.Now()
		l.mu.Unlock()
	}
}

// clientKey is the client a connection counts against: its IP, or the
// /64 of an IPv6 address (one subscriber's usual allocation).
func clientKey(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return "?" // not TCP: one shared bucket
	}
	if v4 := tcp.IP.To4(); v4 != nil {
		return v4.String()
	}
	return tcp.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
