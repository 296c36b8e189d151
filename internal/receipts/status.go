package receipts

import (
	"strings"

	"github.com/otpq/otpq/internal/outcome"
)

// Canonical status values. EngageLab spells the failure values two ways
// (sent_fail and sent_failed, delivered_fail and delivered_failed); otpq's
// state uses the current event table's spelling, the history keeps the raw
// value.
const (
	StatusPlan            = "plan"
	StatusTargetValid     = "target_valid"
	StatusTargetInvalid   = "target_invalid"
	StatusSent            = "sent"
	StatusSentFailed      = "sent_failed"
	StatusDelivered       = "delivered"
	StatusDeliveredFailed = "delivered_failed"
	StatusRead            = "read"
	StatusVerified        = "verified"
	StatusVerifiedFailed  = "verified_failed"
	StatusVerifiedTimeout = "verified_timeout"
)

// Tiers order statuses for out-of-order arrival: a receipt replaces the
// current state only when its tier is higher, or equal with a later stage
// (or the same stage at a later time). So a final status is never replaced
// by an earlier stage that arrives late, a failure on one channel is
// replaced by a later failure or by delivery on the fallback channel, and
// an unknown status never replaces a known one.
const (
	tierUnknown  = 0 // a value otpq does not know: kept verbatim
	tierProgress = 1 // plan, target_valid, sent
	tierFailed   = 2 // target_invalid, sent_failed, delivered_failed (final)
	tierDone     = 3 // delivered (final)
	tierAfter    = 4 // read, verified*: after delivery
)

type statusInfo struct {
	canonical string
	tier      int
	stage     int // order within the tier
}

var statuses = map[string]statusInfo{
	"plan":             {StatusPlan, tierProgress, 1},
	"target_valid":     {StatusTargetValid, tierProgress, 2},
	"sent":             {StatusSent, tierProgress, 3},
	"target_invalid":   {StatusTargetInvalid, tierFailed, 0},
	"sent_fail":        {StatusSentFailed, tierFailed, 0},
	"sent_failed":      {StatusSentFailed, tierFailed, 0},
	"delivered_fail":   {StatusDeliveredFailed, tierFailed, 0},
	"delivered_failed": {StatusDeliveredFailed, tierFailed, 0},
	"delivered":        {StatusDelivered, tierDone, 0},
	"read":             {StatusRead, tierAfter, 1},
	"verified":         {StatusVerified, tierAfter, 2},
	"verified_failed":  {StatusVerifiedFailed, tierAfter, 2},
	"verified_timeout": {StatusVerifiedTimeout, tierAfter, 2},
}

// Canonical returns the canonical form of a message_status value and
// whether otpq knows it. Unknown values are returned unchanged (cleaned of
// control characters and capped by the caller).
func Canonical(status string) (string, bool) {
	if si, ok := statuses[strings.ToLower(strings.TrimSpace(status))]; ok {
		return si.canonical, true
	}
	return status, false
}

// IsFinal reports whether a (canonical or raw) status ends the delivery:
// delivered, delivered_fail(ed), sent_fail(ed), target_invalid, and the
// stages after delivery.
func IsFinal(status string) bool {
	si, ok := statuses[strings.ToLower(strings.TrimSpace(status))]
	return ok && si.tier >= tierFailed
}

// KnownStatuses lists the canonical statuses, for bounded metric labels.
func KnownStatuses() []string {
	return []string{StatusPlan, StatusTargetValid, StatusTargetInvalid, StatusSent, StatusSentFailed,
		StatusDelivered, StatusDeliveredFailed, StatusRead, StatusVerified, StatusVerifiedFailed, StatusVerifiedTimeout}
}

func classify(raw string) (canonical string, tier, rank int) {
	si, ok := statuses[strings.ToLower(strings.TrimSpace(raw))]
	if !ok {
		return raw, tierUnknown, 0
	}
	return si.canonical, si.tier, si.tier*10 + si.stage
}

// StateVerdict is the verdict of a (canonical or raw) receipt state:
// delivered (delivered, read, verified*), failed (target_invalid,
// sent_failed, delivered_failed) or pending (anything else, unknown values
// included: they never end a delivery).
func StateVerdict(status string) outcome.Verdict {
	switch si := statuses[strings.ToLower(strings.TrimSpace(status))]; si.tier {
	case tierDone, tierAfter:
		return outcome.Delivered
	case tierFailed:
		return outcome.Failed
	}
	return outcome.Pending
}
