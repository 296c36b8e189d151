// Package ratelog bounds how often one kind of log line is written: lines
// a peer can cause at will (refused logins, refused callbacks, shed
// connections) must not let it fill the disk or drown the other lines.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultEvery is the default interval between two lines of one kind.
const DefaultEvery = 10 * time.Second

// Limiter writes at most one line per kind (the message) every interval
// and counts the others. The next line written carries the count as
// "suppressed"; when no line of that kind comes, the count is written on
// its own when the interval is over, so none is lost.
type Limiter struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time // when the last line was written
	suppressed int
	level      slog.Level
	flush      *time.Timer // writes the count of a quiet interval
}

// New returns a Limiter writing to log (default slog.Default()) at most
// one line per kind every interval (default DefaultEvery).
func New(log *slog.Logger, every time.Duration) *Limiter {
	if log == nil {
		log = slog.Default()
	}
	if every <= 0 {
		every = DefaultEvery
	}
	return &Limiter{log: log, every: every, kinds: map[string]*kind{}}
}

// Warn logs msg at warn level, unless a line with the same msg was written
// less than the interval ago (then it is counted). msg must come from a
// fixed set (the kinds are remembered); attrs carry the details.
func (l *Limiter) Warn(msg string, attrs ...slog.Attr) {
	l.Log(slog.LevelWarn, msg, attrs...)
}

// Log is Warn at any level.
func (l *Limiter) Log(level slog.Level, msg string, attrs ...slog.Attr) {
	now := time.Now()
	l.mu.Lock()
	k := l.kinds[msg]
	if k == nil {
		k = &kind{}
		l.kinds[msg] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.every {
		k.suppressed++
		k.level = level
		if k.flush == nil {
			k.flush = time.AfterFunc(k.last.Add(l.every).Sub(now), func() { l.flush(msg) })
		}
		l.mu.Unlock()
		return
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	if k.flush != nil {
		k.flush.Stop()
		k.flush = nil
	}
	l.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, slog.Int("suppressed", n))
	}
	l.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// flush writes the count of lines of msg suppressed since the last one.
func (l *Limiter) flush(msg string) {
	l.mu.Lock()
	k := l.kinds[msg]
	n, level := k.suppressed, k.level
	k.suppressed, k.flush = 0, nil
	if n > 0 {
		k.last = time.Now()
	}
	l.mu.Unlock()
	if n > 0 {
		l.log.LogAttrs(context.Background(), level, msg, slog.Int("suppressed", n), slog.Bool("summary", true))
	}
}
