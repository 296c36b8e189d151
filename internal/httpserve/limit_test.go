package httpserve_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/logsink"
)

// serveConfig serves h with cfg on a loopback port until the end of t and
// returns the address.
func serveConfig(t *testing.T, cfg httpserve.Config, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Serve(ctx, ln, h) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// readAll reads everything the server sends on c; it drains the
// body the way the callback receiver does.
var readBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, "ok")
})

// closedBy reports whether the server closes c within wait (reading and
// discarding whatever it answers first).
func closedBy(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A POST whose body trickles in a byte at a time (issue 16 row 2) is cut
// off by ReadTimeout although bytes keep coming.
func TestTricklingBodyIsCutOff(t *testing.T) {
	addr := serveConfig(t, httpserve.Config{ReadTimeout: 300 * time.Millisecond, WriteTimeout: time.Second}, readBody)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	require.True(t, closedBy(c, 10*time.Second), "a trickled body held its connection past ReadTimeout")
}

// A header sent a byte at a time is cut off by ReadHeaderTimeout, and a
// connection that sends nothing too.
func TestSlowHeaderAndSilentConnectionAreCutOff(t *testing.T) {
	addr := serveConfig(t, httpserve.Config{ReadHeaderTimeout: 300 * time.Millisecond}, readBody)
	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()
	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer slow.Close()
	go func() {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)) {
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	require.True(t, closedBy(silent, 5*time.Second), "a silent connection stayed open past ReadHeaderTimeout")
	require.True(t, closedBy(slow, 5*time.Second), "a trickled header held its connection past ReadHeaderTimeout")
}

// A keep-alive connection left idle after an answer (a 401 in the issue)
// is closed by IdleTimeout.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	addr := serveConfig(t, httpserve.Config{IdleTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.False(t, resp.Close, "the server did not keep the connection alive")
	require.True(t, closedBy(c, 10*time.Second), "an idle keep-alive connection stayed open past IdleTimeout")
}

// A header over MaxHeaderBytes is refused with 431, and the default cap
// is 64 KiB.
func TestHeaderCap(t *testing.T) {
	addr := serveConfig(t, httpserve.Config{}, readBody)
	for _, tc := range []struct {
		size int
		want int
	}{{32 << 10, http.StatusOK}, {200 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Big", strings.Repeat("a", tc.size))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.want, resp.StatusCode, "header of %d bytes", tc.size)
	}
}

// dialFrom connects to addr from the loopback address local (any of
// 127.0.0.0/8), so a test can be several clients.
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// get asks path on addr from local over a new connection and returns the
// body.
func get(local, addr, path string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
			return dialFrom(local, a)
		},
	}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

// open counts the connections of conns the server has not closed.
func open(conns []net.Conn) int {
	n := 0
	for _, c := range conns {
		if !closedBy(c, 20*time.Millisecond) {
			n++
		}
	}
	return n
}

// A client holding its limit of idle connections does not lock itself or
// others out: each new connection sheds its oldest one, and a request on
// a new one is answered.
func TestPerClientLimitShedsOldestIdle(t *testing.T) {
	addr := serveConfig(t, httpserve.Config{MaxConnsPerClient: 4, ReadHeaderTimeout: time.Minute}, readBody)
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c, err := dialFrom("127.0.0.2", addr)
		require.NoError(t, err)
		defer c.Close()
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return open(conns[:16]) == 0 }, 5*time.Second, 50*time.Millisecond,
		"the oldest connections of a client past MaxConnsPerClient stayed open")
	require.Equal(t, 4, open(conns[16:]), "a newer connection was shed before the oldest ones")
	body, err := get("127.0.0.2", addr, "/")
	require.NoError(t, err, "a request from a client at its limit was not answered")
	require.Equal(t, "ok", body)
	// Another client's connection sheds none of the first client's.
	other, err := dialFrom("127.0.0.3", addr)
	require.NoError(t, err)
	defer other.Close()
	body, err = get("127.0.0.3", addr, "/")
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	require.Equal(t, 3, open(conns[17:]), "a connection of one client shed another client's")
}

// Past MaxConns in all (clients each under their own limit), a new
// connection sheds the oldest idle one, not a busy one: a request in
// flight finishes.
func TestTotalLimitShedsIdleBeforeBusy(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	addr := serveConfig(t, httpserve.Config{MaxConns: 8, ReadHeaderTimeout: time.Minute}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	slow := make(chan error, 1)
	go func() { _, err := get("127.0.0.10", addr, "/slow"); slow <- err }()
	<-entered
	var conns []net.Conn
	for i := 0; i < 30; i++ {
		c, err := dialFrom(fmt.Sprintf("127.0.1.%d", i+1), addr)
		require.NoError(t, err)
		defer c.Close()
		conns = append(conns, c)
	}
	body, err := get("127.0.0.11", addr, "/")
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	require.Eventually(t, func() bool { return open(conns) <= 7 }, 5*time.Second, 50*time.Millisecond,
		"more than MaxConns connections stayed open")
	close(release)
	require.NoError(t, <-slow, "the busy connection was shed while idle ones were open")
}

// helperEnv names the mode of the test binary run as a helper process.
const helperEnv = "OTPQ_HTTPSERVE_HELPER"

// TestHelperProcess is not a test: run by TestOutOfDescriptors with
// helperEnv set, it lowers its own RLIMIT_NOFILE to 64, serves with
// connection bounds too high to protect it (so accepts fail with EMFILE),
// prints its address, and serves until killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "emfile" {
		return
	}
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	fmt.Println(ln.Addr().String())
	cfg := httpserve.Config{MaxConns: 10000, MaxConnsPerClient: 10000, ReadHeaderTimeout: time.Hour, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	_ = cfg.Serve(context.Background(), ln, readBody)
	os.Exit(0)
}

// A process out of file descriptors (issue 16 row 3, EMFILE on accept)
// sheds its oldest connection to take the new one instead of leaving it
// in the backlog: with 200 silent connections held against a limit of 64
// descriptors, a request is still answered.
func TestOutOfDescriptors(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=emfile")
	var stderr logsink.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, stderr.String())
	addr := strings.TrimSpace(line)
	_, err = net.ResolveTCPAddr("tcp", addr)
	require.NoError(t, err, "helper: %s", line)

	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		c, err := dialFrom("127.0.0."+strconv.Itoa(2+i%200), addr)
		require.NoError(t, err)
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	for i := 0; i < 3; i++ {
		body, err := get("127.0.0.1", addr, "/")
		require.NoError(t, err, "no answer from a process out of descriptors; its log:\n%s", stderr.String())
		require.Equal(t, "ok", body)
	}
	require.Contains(t, stderr.String(), "out of file descriptors")
}

// With TLS, connections are bounded before their handshake: clients that
// connect and never start one are shed like idle ones, and an HTTPS
// request still gets through with its TLS state intact.
func TestTLSConnectionsBounded(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	tlsConfig, client := ts.TLS.Clone(), ts.Client()
	ts.Close()
	addr := serveConfig(t, httpserve.Config{TLS: tlsConfig, MaxConnsPerClient: 3, ReadHeaderTimeout: time.Minute},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || !r.TLS.HandshakeComplete {
				http.Error(w, "no TLS state", http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, "ok")
		}))
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return open(conns[:7]) == 0 }, 5*time.Second, 50*time.Millisecond,
		"connections without a handshake past MaxConnsPerClient stayed open")
	client.Timeout = 5 * time.Second
	resp, err := client.Get("https://" + addr + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, "ok", string(body))
}
