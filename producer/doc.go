// Package producer enqueues one-time-password sends for otpq workers.
//
// An application never calls the SMS/e-mail provider itself: it hands a
// pre-generated code, a destination and a template to Send, which validates
// the request (errors name the field and wrap ErrInvalid), stores it in
// Redis as an asynq task of type "otp:send" and returns the task ID. A
// worker (package github.com/otpq/otpq/worker) then delivers it through the
// EngageLab Custom OTP Code API, retrying what can succeed later and
// dead-lettering what cannot.
//
// Sends go to the "critical" queue unless Queue(QueueBulk) says otherwise;
// workers serve critical strictly first. A code is never sent after its
// expiry (ExpiresIn, default 5 minutes). A deduplication key (DedupKey)
// makes a retried call safe: the second Send returns the first task's ID
// with ErrDuplicate. Each destination may receive at most
// Config.DestinationLimit sends per Config.DestinationWindow (default 5 per
// 15 minutes), beyond which Send returns ErrDestinationLimited. With
// Config.PayloadKeys the code is stored encrypted.
//
// Status looks a task up: its state, attempts, the provider's message ID
// and channel once delivered, or the reason it was dead-lettered. For many
// sends at once, SendBatch and SendItems enqueue hundreds of tasks per
// Redis round trip.
//
// Errors never contain the code.
package producer
