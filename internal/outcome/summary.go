package outcome

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Facts are what a one-line summary of a task says, gathered by each view
// (otpq status, the web UI, otpq dev) from its own source.
type Facts struct {
	Verdict Verdict
	// Channel is the receipt's channel, else the channel the provider
	// accepted the send on.
	Channel string
	// After is how long after acceptance the receipt's final state was
	// reported (HasAfter false: unknown); never negative.
	After    time.Duration
	HasAfter bool
	// Cost and Currency are the receipt's billing.
	Cost     float64
	Currency string
	// ErrorCode and ErrorText: the receipt's error (failed), or for a dead
	// letter or retry, ErrorText is the task's last error.
	ErrorCode int
	ErrorText string
	// Attempts counts the attempts made; mentioned when more than one.
	Attempts int
}

// Summary is the one line every view leads with:
//
//	delivered · sms · 1.2 s after acceptance · 0.005 USD
//	failed · sms · 4001 Message could not be delivered · 0.3 s after acceptance
//	dead letter · provider rejected: engagelab 5013: Number has been blacklisted
func (f Facts) Summary() string {
	parts := []string{f.Verdict.Text()}
	if f.Channel != "" && f.Verdict != VerdictDeadLetter {
		parts = append(parts, f.Channel)
	}
	if f.ErrorCode != 0 || f.ErrorText != "" {
		e := f.ErrorText
		if f.ErrorCode != 0 {
			e = strings.TrimSpace(strconv.Itoa(f.ErrorCode) + " " + e)
		}
		parts = append(parts, e)
	}
	if f.HasAfter {
		parts = append(parts, Seconds(f.After)+" after acceptance")
	}
	if f.Attempts > 1 {
		parts = append(parts, fmt.Sprintf("%d attempts", f.Attempts))
	}
	if f.Cost != 0 {
		parts = append(parts, strings.TrimSpace(strconv.FormatFloat(f.Cost, 'f', -1, 64)+" "+f.Currency))
	}
	return strings.Join(parts, " · ")
}

// Seconds writes d for people, in seconds: "0 s", "0.7 s", "1.2 s",
// "42 s" (a tenth of a second below 10 s, whole seconds above).
func Seconds(d time.Duration) string {
	s := d.Seconds()
	if s < 10 {
		return strconv.FormatFloat(float64(d.Round(100*time.Millisecond))/float64(time.Second), 'f', -1, 64) + " s"
	}
	return strconv.FormatFloat(float64(d.Round(time.Second))/float64(time.Second), 'f', -1, 64) + " s"
}
