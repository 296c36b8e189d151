package worker

import (
	"context"
	"fmt"
	"log/slog"
)

// asynqLogger routes asynq's own messages into slog. asynq logs task IDs and
// queue names, never payloads.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Log(context.Background(), slog.LevelError+4, fmt.Sprint(args...), "component", "asynq")
}
