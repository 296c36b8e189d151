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
}
