// Package redisserver runs a private redis-server process on a free port,
// without persistence unless asked: the benchmark's Redis, the fault suite's,
// and the tests' through redistest.StartServer (plain, TLS, ACL, sentinel and
// cluster servers alike). It never touches another Redis. It is the one place
// that starts a redis-server.
package redisserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReady means the server did not answer in time after it started.
var ErrNotReady = errors.New("redis-server did not answer")

// Config configures Start. Zero values mean the documented defaults.
type Config struct {
	// Bin is the redis-server executable; default "redis-server" from PATH.
	Bin string
	// Dir holds the server's data files and its log (redis.log); default
	// a new temporary directory, removed by Stop.
	Dir string
	// PortFlag names the flag that gets the free port: "--port" (default)
	// or "--tls-port", which also turns the plain port off (--port 0).
	PortFlag string
	// ConfigFile, when set, is passed to redis-server first, as its
	// configuration file; the flags that follow (the port, the defaults,
	// Args) override it. A sentinel needs one it can rewrite:
	// Config{ConfigFile: f, Args: []string{"--sentinel"}} with f holding
	// "sentinel monitor <name> <ip> <port> <quorum>".
	ConfigFile string
	// Cluster turns cluster mode on: the node's nodes.conf lives in Dir and
	// its cluster bus listens on a second free port (Server.BusPort, via
	// --cluster-port) rather than on Port+10000, which does not exist for a
	// port above 55535. Restart keeps both ports and the node's identity.
	Cluster bool
	// Args are extra redis-server arguments, e.g. "--appendonly", "yes"
	// (they override the defaults: no RDB snapshots, no AOF).
	Args []string
	// ReadyTimeout bounds the wait for the server to answer; default 10s.
	ReadyTimeout time.Duration
}

// Server is a running redis-server.
type Server struct {
	// Port is the port the server listens on, Addr its 127.0.0.1 address.
	Port int
	Addr string
	// BusPort is the cluster bus port with Config.Cluster, else 0.
	BusPort int

	cfg     Config
	tempDir bool
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start runs redis-server on a free port of 127.0.0.1 and returns once it
// answers PING (a TCP connect for a TLS port).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Bin == "" {
		cfg.Bin = "redis-server"
	}
	if cfg.PortFlag == "" {
		cfg.PortFlag = "--port"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg}
	if cfg.Dir != "" {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
	} else {
		dir, err := os.MkdirTemp("", "otpq-redis-")
		if err != nil {
			return nil, err
		}
		s.cfg.Dir, s.tempDir = dir, true
	}
	// The free port can be taken between our probe and the server's bind:
	// try a few ports before giving up.
	var err error
	for range 3 {
		if s.Port, err = FreePort(); err != nil {
			break
		}
		for cfg.Cluster && err == nil && (s.BusPort == 0 || s.BusPort == s.Port) {
			s.BusPort, err = FreePort()
		}
		if err != nil {
			break
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		if err = s.Restart(ctx); err == nil {
			return s, nil
		}
	}
	s.Stop()
	return nil, err
}

// URL is the redis:// URL of database 0 (plain port only).
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Pid is the server process's ID, 0 when it is not running.
func (s *Server) Pid() int {
	if !s.Running() {
		return 0
	}
	return s.cmd.Process.Pid
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// LogPath is the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.cfg.Dir, "redis.log") }

// Restart starts the server again on the same port and data directory
// after Kill (Start calls it too).
func (s *Server) Restart(ctx context.Context) error {
	if s.Running() {
		return fmt.Errorf("redis-server on %s: already running", s.Addr)
	}
	var args []string
	if s.cfg.ConfigFile != "" {
		args = append(args, s.cfg.ConfigFile)
	}
	args = append(args, s.cfg.PortFlag, strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.cfg.Dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", s.LogPath())
	if s.cfg.PortFlag != "--port" {
		args = append(args, "--port", "0")
	}
	if s.cfg.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(s.BusPort),
			"--cluster-config-file", filepath.Join(s.cfg.Dir, "nodes.conf"))
	}
	s.cmd = exec.Command(s.cfg.Bin, append(args, s.cfg.Args...)...)
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s (install redis-server: .ci/ensure-redis): %w", s.cfg.Bin, err)
	}
	done := make(chan struct{})
	s.done = done
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(done) }(s.cmd)
	if err := s.waitReady(ctx); err != nil {
		_ = s.Kill()
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	var c *redis.Client
	if s.cfg.PortFlag == "--port" {
		c = redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		defer c.Close()
	}
	for {
		// A TCP connect first: go-redis logs its failed dials.
		conn, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			if c != nil { // and a PING: a server loading its data refuses commands
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				err = c.Ping(pctx).Err()
				cancel()
				var rerr redis.Error
				if errors.As(err, &rerr) && !strings.HasPrefix(err.Error(), "LOADING") {
					err = nil // it answers, only not to us (NOAUTH: ACLs with the default user off)
				}
			}
		}
		if err == nil {
			return nil
		}
		if !s.Running() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w on %s: %v (log: %s)", ErrNotReady, s.Addr, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.LogPath())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// Kill stops the server with SIGKILL (no shutdown save) and waits for it.
func (s *Server) Kill() error {
	if !s.Running() {
		return nil
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-s.done
	return nil
}

// Signal sends sig to the server process: SIGSTOP freezes it (connections
// hang, as behind a partitioned network), SIGCONT resumes it. It does
// nothing when the server is not running.
func (s *Server) Signal(sig syscall.Signal) error {
	if !s.Running() {
		return nil
	}
	return s.cmd.Process.Signal(sig)
}

// Stop kills the server and removes its directory if Start created it.
func (s *Server) Stop() {
	_ = s.Kill()
	if s.tempDir {
		_ = os.RemoveAll(s.cfg.Dir)
	}
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago (the
// kernel's choice for port 0), for a server of a test's own. Another process
// can take it before the caller binds it: retry with a new port when the
// bind fails.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
