package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/producer"
)

// factsOf gathers what a status's one-line summary says: the receipt's
// channel, error, time and cost when there is a receipt, else the task's.
func factsOf(st *producer.Status) outcome.Facts {
	f := outcome.Facts{Verdict: outcome.Verdict(st.Verdict), Channel: st.SendChannel, Attempts: st.Attempts}
	if f.Verdict == "" {
		f.Verdict = outcome.Of("", string(st.State), outcome.Outcome(st.Outcome))
	}
	if rc := st.Receipt; rc != nil {
		if rc.Channel != "" {
			f.Channel = rc.Channel
		}
		f.ErrorCode, f.ErrorText = rc.ErrorCode, rc.ErrorDetail
		f.Cost, f.Currency = rc.Cost, rc.Currency
		if d, ok := rc.DeliveredAfter(); ok {
			f.After, f.HasAfter = d, true
		} else if rc.Final && !rc.AcceptedAt.IsZero() && !rc.StateAt.IsZero() {
			f.After, f.HasAfter = max(rc.StateAt.Sub(rc.AcceptedAt), 0), true
		}
		return f
	}
	if st.State == producer.StateArchived || st.State == producer.StateRetry {
		f.ErrorText = st.LastError
	}
	return f
}

// printReceipt adds a task's delivery receipt to otpq status's text output:
// its state in one spelling (the raw value beside it when EngageLab spelled
// it otherwise), times relative to acceptance (never negative: EngageLab's
// times are whole seconds), and the stages in time order.
func printReceipt(w io.Writer, rc *producer.Receipt) {
	if rc == nil {
		return
	}
	state := rc.State
	switch {
	case rc.Final && rc.RawStatus != "" && rc.RawStatus != rc.State:
		state += fmt.Sprintf(" (final; EngageLab sent %q)", rc.RawStatus)
	case rc.Final:
		state += " (final)"
	}
	fmt.Fprintf(w, "receipt:        %s\n", state)
	if rc.Channel != "" {
		fmt.Fprintf(w, "channel:        %s\n", rc.Channel)
	}
	after := func(t time.Time) string {
		s := t.UTC().Format(time.RFC3339)
		if rc.AcceptedAt.IsZero() {
			return s
		}
		return s + " (" + outcome.Seconds(max(t.Sub(rc.AcceptedAt), 0)) + " after acceptance)"
	}
	if !rc.AcceptedAt.IsZero() {
		fmt.Fprintf(w, "accepted_at:    %s\n", rc.AcceptedAt.UTC().Format(time.RFC3339))
	}
	if !rc.DeliveredAt.IsZero() {
		fmt.Fprintf(w, "delivered_at:   %s\n", after(rc.DeliveredAt))
	} else if !rc.StateAt.IsZero() {
		fmt.Fprintf(w, "reported_at:    %s\n", after(rc.StateAt))
	}
	if rc.ErrorCode != 0 || rc.ErrorDetail != "" {
		fmt.Fprintf(w, "error:          %d %s\n", rc.ErrorCode, rc.ErrorDetail)
	}
	if rc.Cost != 0 {
		fmt.Fprintf(w, "cost:           %g %s\n", rc.Cost, rc.Currency)
	}
	for _, s := range rc.History {
		line := s.At.UTC().Format(time.RFC3339) + " " + s.Status
		if s.Channel != "" {
			line += " via " + s.Channel
		}
		if s.ErrorCode != 0 {
			line += fmt.Sprintf(" (error %d)", s.ErrorCode)
		}
		if s.RawStatus != "" {
			line += fmt.Sprintf(" (EngageLab sent %q)", s.RawStatus)
		}
		fmt.Fprintf(w, "  stage:        %s\n", line)
	}
}
