package producer

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
)

// Status reads asynq's task info as the provider saw the attempts.
func TestStatusOfAttempts(t *testing.T) {
	failed := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	next := failed.Add(2 * time.Second)

	// The 2nd attempt is running: one attempt done, its error, no next time.
	st := statusOf(&asynq.TaskInfo{ID: "a", Queue: QueueCritical, State: asynq.TaskStateActive, Retried: 1,
		LastErr: "engagelab 1000: Internal error", LastFailedAt: failed})
	require.Equal(t, 1, st.Attempts)
	require.True(t, st.InProgress)
	require.Equal(t, failed, st.LastFailedAt)
	require.Zero(t, st.NextProcess)

	// Waiting for its 2nd attempt: when it comes.
	st = statusOf(&asynq.TaskInfo{ID: "a", Queue: QueueCritical, State: asynq.TaskStateRetry, Retried: 1,
		LastErr: "engagelab 1000: Internal error", LastFailedAt: failed, NextProcessAt: next})
	require.Equal(t, 1, st.Attempts)
	require.False(t, st.InProgress)
	require.Equal(t, next, st.NextProcess)

	// Dead-lettered on its 3rd attempt: three attempts, and when.
	st = statusOf(&asynq.TaskInfo{ID: "a", Queue: QueueCritical, State: asynq.TaskStateArchived, Retried: 2,
		LastErr: "engagelab 5013: Number has been blacklisted", LastFailedAt: failed})
	require.Equal(t, 3, st.Attempts)
	require.Equal(t, failed, st.DeadLetteredAt)
	require.Zero(t, st.NextProcess)
	require.Equal(t, "dead_letter", st.Verdict)
}

// TestStatusOfStoredResults: results written by every build read in the
// current words: "delivered" (builds before "accepted") and no outcome at
// all (builds before outcomes) are both "accepted", not "delivered": only
// a receipt says a code was delivered.
func TestStatusOfStoredResults(t *testing.T) {
	for stored, want := range map[string]string{
		`{"message_id":"m1","send_channel":"sms","attempts":1,"sent_at":"2026-11-26T07:00:00Z","outcome":"delivered"}`:          "accepted",
		`{"message_id":"m1","send_channel":"sms","attempts":1,"sent_at":"2026-11-26T07:00:00Z"}`:                                "accepted",
		`{"message_id":"m1","send_channel":"sms","attempts":1,"sent_at":"2026-11-26T07:00:00Z","outcome":"accepted"}`:           "accepted",
		`{"message_id":"","send_channel":"sms","attempts":1,"sent_at":"2026-11-26T07:00:00Z","outcome":"accepted_unconfirmed"}`: "accepted_unconfirmed",
	} {
		st := statusOf(&asynq.TaskInfo{ID: "a", Queue: QueueCritical, State: asynq.TaskStateCompleted, Result: []byte(stored)})
		require.Equal(t, want, st.Outcome, stored)
		require.Equal(t, want, st.Verdict, stored)
	}
	for state, want := range map[asynq.TaskState]string{
		asynq.TaskStatePending: "queued", asynq.TaskStateScheduled: "queued", asynq.TaskStateActive: "sending", asynq.TaskStateRetry: "retrying",
	} {
		require.Equal(t, want, statusOf(&asynq.TaskInfo{ID: "a", Queue: QueueCritical, State: state}).Verdict)
	}
}
