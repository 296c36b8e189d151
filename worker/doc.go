// Package worker delivers the one-time-password sends that package
// github.com/otpq/otpq/producer enqueues, through the EngageLab Custom OTP
// Code API (POST /v1/codes).
//
// A Worker runs several asynq servers (fetch loops) on the same Redis as
// the producers, Config.Servers per queue (default GOMAXPROCS), each
// serving one queue, so that a bulk task never costs an empty "critical"
// dequeue first. They share Config.Concurrency send slots, and a freed
// slot goes to a waiting critical task before any bulk one: during a bulk
// drain a critical send waits at most for the first send in flight to
// end. One critical loop polls every 10 ms instead of asynq's 1 s, so an
// enqueued code reaches the provider within tens of milliseconds; the
// others poll every 250 ms while idle, so an idle worker costs Redis
// little. Any number of worker processes may share one Redis (or Sentinel,
// or Cluster).
//
// The code of a task is not in asynq's message: it is in its own key next
// to the task (sealed when the producer has a payload key), which expires
// with the code. The worker reads it at each attempt and deletes it in the
// same write that stores the result once the provider accepts the code; a missing
// code key dead-letters the task unsent. Tasks enqueued by older builds,
// with the code inside the payload, are still sent.
//
// Each provider answer is classified in one place:
//   - accepted (HTTP 2xx): the message ID and channel are stored as the
//     task's result, outcome "accepted". Whether the code then reached the
//     handset (delivered, failed, pending) only EngageLab's delivery
//     receipts say (see producer.Status, Verdict);
//   - retried later (exponential, jittered backoff between
//     Config.RetryMinDelay and Config.RetryMaxDelay, at most
//     Config.MaxRetry times, never past the code's expiry): HTTP 5xx,
//     EngageLab codes 1000–1999 and Config.RetryCodes, transport failures
//     and timeouts;
//   - throttled (HTTP 429, or the shared Config.RateLimit): retried after
//     the wait without using up a retry;
//   - dead-lettered (asynq "archived") with the provider's code and message
//     as the reason: every other error, a payload that cannot be decoded,
//     and a code that expired before it could be sent (it is never sent).
//
// # Metrics
//
// With Config.Registerer the worker registers these Prometheus series:
//   - otpq_sends_total{outcome, engagelab_code}: attempts by outcome
//     (accepted, accepted_unconfirmed, retry, throttle, dead_letter,
//     expired) and EngageLab error code ("none", a code of the API spec,
//     or "other");
//   - otpq_provider_request_duration_seconds{result}: one provider request,
//     by result (ok, api_error, transport_error);
//   - otpq_retries_total{kind}: attempts scheduled again, retry (counts
//     against MaxRetry) or throttle (does not);
//   - otpq_dead_letters_total{reason}: tasks dead-lettered, by reason
//     (bad_payload, expired, retries_exhausted, provider_rejected,
//     configuration, no_code, other);
//   - otpq_expired_total: codes that expired before they could be delivered;
//   - otpq_sends_in_flight: tasks being processed by this process now;
//   - otpq_enqueue_to_send_seconds: from enqueue to the provider accepting
//     the code.
//
// Logs carry the task ID, masked destination, template, attempt, EngageLab
// code and latency, never the code or the credentials. Shutdown (or
// cancelling the context given to Run) waits for in-flight sends.
package worker
