package bulk

import (
	"fmt"
	"strings"
	"time"
)

// progress reports progress until the returned func is called: a bar
// redrawn five times a second on a terminal, a plain line every
// ProgressEvery otherwise. It shows counts only, never row contents.
func (r *run) progress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	every := r.cfg.ProgressEvery
	if r.cfg.Terminal {
		every = 200 * time.Millisecond
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				if r.cfg.Terminal {
					fmt.Fprintf(r.cfg.Progress, "\r%s\r", strings.Repeat(" ", 100))
				}
				return
			case <-t.C:
				r.printProgress()
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *run) printProgress() {
	r.mu.Lock()
	s := r.sum
	r.mu.Unlock()
	elapsed := r.cfg.Now().Sub(r.start)
	done := s.Accepted + s.Duplicates + s.Rejected + s.Failed
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	frac, eta := -1.0, ""
	if off := r.cfg.Reader.Offset(); r.cfg.Size > 0 && off > 0 {
		frac = min(1, float64(off)/float64(r.cfg.Size))
		if frac > 0 {
			remaining := time.Duration(float64(elapsed) * (1 - frac) / frac)
			eta = " ETA " + remaining.Round(time.Second).String()
		}
	}
	counts := fmt.Sprintf("%d rows (%d accepted, %d duplicates, %d rejected) %.0f rows/s", done, s.Accepted, s.Duplicates, s.Rejected, rate)
	if !r.cfg.Terminal {
		pct := ""
		if frac >= 0 {
			pct = fmt.Sprintf("%.0f%% ", frac*100)
		}
		fmt.Fprintf(r.cfg.Progress, "bulk: %s%s%s\n", pct, counts, eta)
		return
	}
	bar := ""
	if frac >= 0 {
		const width = 24
		n := int(frac * width)
		bar = fmt.Sprintf("[%s%s] %3.0f%% ", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100)
	}
	fmt.Fprintf(r.cfg.Progress, "\r%s%s%s   ", bar, counts, eta)
}
