package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/otpq/otpq/producer"
)

// printReceipt adds a task's delivery receipt to otpq status's text output.
func printReceipt(w io.Writer, rc *producer.Receipt) {
	if rc == nil {
		return
	}
	state := rc.State
	if rc.Final {
		state += " (final)"
	}
	fmt.Fprintf(w, "delivery:     %s\n", state)
	if rc.Channel != "" {
		fmt.Fprintf(w, "channel:      %s\n", rc.Channel)
	}
	if !rc.StateAt.IsZero() {
		fmt.Fprintf(w, "reported_at:  %s\n", rc.StateAt.Format(time.RFC3339))
	}
	if !rc.DeliveredAt.IsZero() {
		fmt.Fprintf(w, "delivered_at: %s", rc.DeliveredAt.Format(time.RFC3339))
		if !rc.AcceptedAt.IsZero() {
			fmt.Fprintf(w, " (%s after acceptance)", rc.DeliveredAt.Sub(rc.AcceptedAt).Round(time.Millisecond))
		}
		fmt.Fprintln(w)
	}
	if rc.ErrorCode != 0 || rc.ErrorDetail != "" {
		fmt.Fprintf(w, "error:        %d %s\n", rc.ErrorCode, rc.ErrorDetail)
	}
	if rc.Cost != 0 {
		fmt.Fprintf(w, "cost:         %g %s\n", rc.Cost, rc.Currency)
	}
	for _, s := range rc.History {
		line := s.At.Format(time.RFC3339) + " " + s.Status
		if s.Channel != "" {
			line += " via " + s.Channel
		}
		if s.ErrorCode != 0 {
			line += fmt.Sprintf(" (error %d)", s.ErrorCode)
		}
		fmt.Fprintf(w, "  stage:      %s\n", line)
	}
}
