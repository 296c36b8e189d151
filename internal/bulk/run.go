package bulk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/otpq/otpq/producer"
)

// ChunkSize is how many rows are handed to the producer at once.
const ChunkSize = 1024

// senders is how many chunks are being enqueued at once (each is further
// pipelined by the producer).
const senders = 2

// sender enqueues a chunk; *producer.Producer implements it.
type sender interface {
	SendItems(ctx context.Context, items []producer.BatchItem, opts ...producer.Option) []producer.Result
}

// Config configures Run. Zero values mean the documented defaults.
type Config struct {
	// Reader is the file being read.
	Reader *Reader
	// Size is the input's size in bytes, for the progress ETA; 0 if unknown.
	Size int64
	// Sender enqueues; nil (or DryRun) validates only.
	Sender sender
	// DryRun validates every row and enqueues nothing.
	DryRun bool
	// Options apply to every send (queue, expiry…).
	Options []producer.Option
	// Rate paces enqueueing to at most Rate rows per second; 0 = no limit.
	Rate float64
	// Rejects receives one line per rejected or failed row; nil discards.
	Rejects io.Writer
	// Progress receives progress; nil for none.
	Progress io.Writer
	// Terminal draws a redrawn bar on Progress instead of periodic lines.
	Terminal bool
	// ProgressEvery is the period of progress lines (not of the bar);
	// default 10s.
	ProgressEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Summary is the outcome of a run.
type Summary struct {
	// Rows is every row read, valid or not.
	Rows int64
	// Accepted rows were enqueued now (or, in a dry run, are valid).
	Accepted int64
	// Duplicates were already queued (a previous run, or a repeated row).
	Duplicates int64
	// Rejected rows are invalid (or over their destination's limit); they
	// were reported with their line and skipped.
	Rejected int64
	// Failed rows were not confirmed by Redis; re-running the file sends
	// exactly those that did not make it.
	Failed int64
	// Elapsed is the run's duration.
	Elapsed time.Duration
	// DryRun: nothing was enqueued.
	DryRun bool
	// Interrupted: the context ended before the end of the input; rows
	// after the last one read were not looked at.
	Interrupted bool
}

// Rate is rows per second over the run.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Rows) / s.Elapsed.Seconds()
}

// String is the final summary line.
func (s Summary) String() string {
	verb := "accepted"
	if s.DryRun {
		verb = "valid (dry run, nothing enqueued)"
	}
	out := fmt.Sprintf("%d rows: %d %s, %d duplicates (already queued), %d rejected, %d failed in %s (%.0f rows/s)",
		s.Rows, s.Accepted, verb, s.Duplicates, s.Rejected, s.Failed, s.Elapsed.Round(time.Millisecond), s.Rate())
	if s.Interrupted {
		out += "; interrupted: run the same file again to send the rest (queued rows count as duplicates)"
	}
	return out
}

type chunk struct {
	items []producer.BatchItem
	lines []int
}

// run is the state of one Run.
type run struct {
	cfg   Config
	start time.Time

	mu       sync.Mutex // guards the counters and Rejects
	sum      Summary
	firstErr error
}

// Run reads every row of cfg.Reader, reports rejects and enqueues the rest
// in chunks. It stops reading when ctx ends, lets the chunks already handed
// over finish, and returns the summary with Interrupted set. Its error is
// an input that cannot be read any further (the summary still counts what
// happened before).
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 10 * time.Second
	}
	if cfg.Sender == nil {
		cfg.DryRun = true
	}
	if cfg.Rejects == nil {
		cfg.Rejects = io.Discard
	}
	r := &run{cfg: cfg, start: cfg.Now()}
	r.sum.DryRun = cfg.DryRun

	size := ChunkSize
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		burst := max(1, int(cfg.Rate/10))
		size = min(size, burst)
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), burst)
	}

	stopProgress := r.progress()
	chunks := make(chan chunk, senders)
	var wg sync.WaitGroup
	// Chunks already handed over are finished even when ctx ends, so the
	// summary is exact; only reading stops.
	sendCtx := context.WithoutCancel(ctx)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chunks {
				r.send(sendCtx, c)
			}
		}()
	}

	var readErr error
	cur := chunk{}
	flush := func() bool {
		if len(cur.items) == 0 {
			return true
		}
		if limiter != nil {
			if err := limiter.WaitN(ctx, len(cur.items)); err != nil {
				return false
			}
		}
		if cfg.DryRun {
			r.count(func(s *Summary) { s.Accepted += int64(len(cur.items)) })
		} else {
			chunks <- cur
		}
		cur = chunk{items: make([]producer.BatchItem, 0, size), lines: make([]int, 0, size)}
		return true
	}
	interrupted := false
	for {
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		row, rej, err := cfg.Reader.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		r.count(func(s *Summary) { s.Rows++ })
		if rej != nil {
			r.reject(*rej)
			continue
		}
		cur.items = append(cur.items, producer.BatchItem{Request: row.Request, Options: []producer.Option{producer.DedupKey(row.Key)}})
		cur.lines = append(cur.lines, row.Line)
		if len(cur.items) >= size && !flush() {
			interrupted = true
			break
		}
	}
	if !interrupted && !flush() {
		interrupted = true
	}
	r.count(func(s *Summary) {
		s.Interrupted = interrupted
		if interrupted {
			// Read but never handed over: not enqueued, not failed;
			// the next run picks them up.
			s.Rows -= int64(len(cur.items))
		}
	})
	close(chunks)
	wg.Wait()
	stopProgress()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Elapsed = cfg.Now().Sub(r.start)
	return r.sum, readErr
}

func (r *run) count(f func(*Summary)) {
	r.mu.Lock()
	f(&r.sum)
	r.mu.Unlock()
}

func (r *run) reject(rej Reject) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Rejected++
	fmt.Fprintln(r.cfg.Rejects, rej.String())
}

// send enqueues one chunk and accounts for each row's outcome.
func (r *run) send(ctx context.Context, c chunk) {
	res := r.cfg.Sender.SendItems(ctx, c.items, r.cfg.Options...)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, out := range res {
		var ve *producer.ValidationError
		switch err := out.Err; {
		case err == nil:
			r.sum.Accepted++
		case errors.Is(err, producer.ErrDuplicate):
			r.sum.Duplicates++
		case errors.As(err, &ve):
			r.sum.Rejected++
			fmt.Fprintln(r.cfg.Rejects, Reject{Line: c.lines[i], Field: ve.Field, Reason: ve.Reason}.String())
		case errors.Is(err, producer.ErrDestinationLimited):
			r.sum.Rejected++
			fmt.Fprintf(r.cfg.Rejects, "line %d: not sent: %v\n", c.lines[i], err)
		default:
			r.sum.Failed++
			fmt.Fprintf(r.cfg.Rejects, "line %d: not enqueued: %v\n", c.lines[i], err)
		}
	}
}
