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
	out := fmt.Sprintf("%s: %d %s, %s (already queued), %d rejected, %d failed in %s (%.0f rows/s)",
		Count(s.Rows, "row"), s.Accepted, verb, Count(s.Duplicates, "duplicate"), s.Rejected, s.Failed, s.Elapsed.Round(time.Millisecond), s.Rate())
	if s.Interrupted {
		out += "; interrupted: run the same file again to send the rest (queued rows count as duplicates)"
	}
	return out
}

// Count is n with noun, plural unless n is 1: "1 row", "2 rows", "0 rows".
func Count(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
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
	cfg = cfg.withDefaults()
	r := &run{cfg: cfg, start: cfg.Now()}
	r.sum.DryRun = cfg.DryRun
	stopProgress := r.progress()
	chunks, sent := r.startSenders(ctx)
	b := r.newBatcher(chunks)
	interrupted, readErr := r.readAll(ctx, b)
	r.count(func(s *Summary) {
		s.Interrupted = interrupted
		// Read but never handed over: not enqueued, not failed; the
		// next run picks them up.
		s.Rows -= int64(len(b.cur.items))
	})
	close(chunks)
	sent.Wait()
	stopProgress()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Elapsed = cfg.Now().Sub(r.start)
	return r.sum, readErr
}

// withDefaults fills in the documented defaults of cfg's zero values.
func (cfg Config) withDefaults() Config {
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
	return cfg
}

// startSenders starts the goroutines that enqueue the chunks sent on the
// returned channel; the WaitGroup is done once the channel is closed and
// every chunk is enqueued. Chunks already handed over are finished even
// when ctx ends, so the summary is exact; only reading stops.
func (r *run) startSenders(ctx context.Context) (chan<- chunk, *sync.WaitGroup) {
	chunks := make(chan chunk, senders)
	sendCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chunks {
				r.send(sendCtx, c)
			}
		}()
	}
	return chunks, &wg
}

// readAll reads rows until the input ends, ctx ends (interrupted: rows
// still in b are not handed over) or the input cannot be read any further
// (err, after handing over the rows read before).
func (r *run) readAll(ctx context.Context, b *batcher) (interrupted bool, err error) {
	for {
		if ctx.Err() != nil {
			return true, nil
		}
		row, rej, err := r.cfg.Reader.Next()
		if errors.Is(err, io.EOF) {
			return !b.flush(ctx), nil
		}
		if err != nil {
			return !b.flush(ctx), err
		}
		r.count(func(s *Summary) { s.Rows++ })
		if rej != nil {
			r.reject(*rej)
			continue
		}
		if !b.add(ctx, row) {
			return true, nil
		}
	}
}

// batcher gathers rows into chunks and hands each full chunk to the
// senders (or, in a dry run, counts it valid), paced by the rate limit.
type batcher struct {
	r       *run
	size    int
	limiter *rate.Limiter // nil: no limit
	out     chan<- chunk
	cur     chunk
}

// newBatcher makes chunks of ChunkSize rows, smaller under a rate limit so
// that the pace stays even (a tenth of a second's rows per chunk).
func (r *run) newBatcher(out chan<- chunk) *batcher {
	b := &batcher{r: r, size: ChunkSize, out: out}
	if r.cfg.Rate > 0 {
		burst := max(1, int(r.cfg.Rate/10))
		b.size = min(b.size, burst)
		b.limiter = rate.NewLimiter(rate.Limit(r.cfg.Rate), burst)
	}
	return b
}

// add appends row and hands the chunk over once it is full; false when ctx
// ended while waiting for the pace (the chunk stays unsent).
func (b *batcher) add(ctx context.Context, row Row) bool {
	b.cur.items = append(b.cur.items, producer.BatchItem{Request: row.Request, Options: []producer.Option{producer.DedupKey(row.Key)}})
	b.cur.lines = append(b.cur.lines, row.Line)
	return len(b.cur.items) < b.size || b.flush(ctx)
}

// flush hands the current chunk over; false when ctx ended while waiting
// for the pace (the chunk stays unsent).
func (b *batcher) flush(ctx context.Context) bool {
	n := len(b.cur.items)
	if n == 0 {
		return true
	}
	if b.limiter != nil {
		if err := b.limiter.WaitN(ctx, n); err != nil {
			return false
		}
	}
	if b.r.cfg.DryRun {
		b.r.count(func(s *Summary) { s.Accepted += int64(n) })
	} else {
		b.out <- b.cur
	}
	b.cur = chunk{items: make([]producer.BatchItem, 0, b.size), lines: make([]int, 0, b.size)}
	return true
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
