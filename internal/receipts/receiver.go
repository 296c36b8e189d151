package receipts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/task"
)

// Path is where the receiver is served.
const Path = "/callbacks/engagelab"

// Receiver defaults.
const (
	// DefaultWindow is how far a signed timestamp may be from now.
	DefaultWindow = 5 * time.Minute
	// DefaultMaxBody caps a callback body.
	DefaultMaxBody = 1 << 20
	// DefaultPollInterval is how often held receipts are matched with
	// links that appeared since.
	DefaultPollInterval = 500 * time.Millisecond
	// answerWithin bounds the Redis work of one request: EngageLab marks
	// the URL unavailable when it gets no answer within 3 s.
	answerWithin = 2500 * time.Millisecond
)

// Config configures a Receiver. Zero values mean the documented defaults.
type Config struct {
	// Redis holds links, receipts, nonces and the stream. Required.
	Redis redis.UniversalClient
	// Credentials verify callbacks; zero verifies nothing.
	Credentials Credentials
	// Queues are searched for a message_id's link; default critical, bulk.
	Queues []string
	// Window is the replay window: signed timestamps further from now are
	// refused, nonces are remembered this long (twice). Default 5 minutes.
	Window time.Duration
	// MaxBody caps a body; default 1 MiB.
	MaxBody int64
	// History is how many stages a receipt keeps; default 20.
	History int
	// PendingTTL is how long a receipt without a link is held; default 10 minutes.
	PendingTTL time.Duration
	// PollInterval is how often held receipts are matched; default 500 ms.
	PollInterval time.Duration
	// StreamMaxLen bounds the receipt stream; default 100000, negative: no stream.
	StreamMaxLen int64
	// Registerer receives the receipt metrics; nil: none.
	Registerer prometheus.Registerer
	// Logger gets one line per final receipt; default slog.Default().
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Receiver is the http.Handler of EngageLab's status callbacks, and the
// matcher of receipts that arrived before their link (Run).
type Receiver struct {
	cfg Config
	rdb redis.UniversalClient
	m   *metrics.Receipts
	log *slog.Logger
}

// NewReceiver checks cfg and builds a Receiver.
func NewReceiver(cfg Config) (*Receiver, error) {
	if cfg.Redis == nil {
		return nil, fmt.Errorf("%w: no Redis connection", ErrConfig)
	}
	if err := cfg.Credentials.Check(); err != nil {
		return nil, err
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{task.QueueCritical, task.QueueBulk}
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StreamMaxLen == 0 {
		cfg.StreamMaxLen = DefaultStreamMaxLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Receiver{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger.With("component", "receipts")}
	if cfg.Registerer != nil {
		m, err := metrics.NewReceipts(cfg.Registerer, KnownStatuses())
		if err != nil {
			return nil, fmt.Errorf("%w: metrics: %w", ErrConfig, err)
		}
		r.m = m
	}
	return r, nil
}

// ServeHTTP answers a callback: 200 for everything accepted (the URL
// check, receipts, rows it ignores, unknown message_ids), 401 for a bad
// signature, authorization or a replay, 400/413 for a malformed or too
// large body, 503 when Redis fails (EngageLab then retries).
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), answerWithin)
	defer cancel()
	now := r.cfg.Now()
	id, err := r.cfg.Credentials.verify(req.Header.Get(HeaderCallbackID), req.Header.Get("Authorization"))
	if err == nil && id.Timestamp != "" {
		err = checkTime(id, now, r.cfg.Window)
	}
	if err != nil {
		r.refuse(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBody))
	if err != nil {
		r.m.Request(metrics.CallbackMalformed)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body over %d bytes", r.cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	rows, err := ParseBody(body)
	if err != nil {
		r.m.Request(metrics.CallbackMalformed)
		http.Error(w, "malformed body: not the {\"total\":…,\"rows\":[…]} envelope", http.StatusBadRequest)
		return
	}
	if id.Nonce != "" {
		fresh, err := r.rdb.SetNX(ctx, nonceKey(id), "1", 2*r.cfg.Window).Result()
		if err != nil {
			r.fail(w, err)
			return
		}
		if !fresh {
			r.refuse(w, refuse(ErrReplay, "nonce already seen"))
			return
		}
	}
	if len(rows) == 0 {
		r.m.Request(metrics.CallbackCheck)
		w.WriteHeader(http.StatusOK)
		return
	}
	result, err := r.handle(ctx, rows, now)
	if err != nil {
		r.fail(w, err)
		return
	}
	r.m.Request(result)
	w.WriteHeader(http.StatusOK)
}

func (r *Receiver) refuse(w http.ResponseWriter, err error) {
	result := metrics.CallbackBadSignature
	switch {
	case errors.Is(err, ErrReplay):
		result = metrics.CallbackReplay
	case errors.Is(err, ErrUnauthorized):
		result = metrics.CallbackUnauthorized
	}
	r.m.Request(result)
	r.log.Warn("callback refused", "result", result, "reason", err.Error())
	http.Error(w, "unauthorized", http.StatusUnauthorized)
}

func (r *Receiver) fail(w http.ResponseWriter, err error) {
	r.m.Request(metrics.CallbackError)
	r.log.Error("callback not recorded; EngageLab will retry", "error", err.Error())
	http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
}

// nonceKey is the replay marker of a signed callback.
func nonceKey(id CallbackID) string {
	h := sha256.Sum256([]byte(id.Username + "\x00" + id.Nonce))
	return "otpq:callback:nonce:" + hex.EncodeToString(h[:16])
}

// handle records the rows of one request and returns its result label.
func (r *Receiver) handle(ctx context.Context, rows []Row, now time.Time) (string, error) {
	var events []Event
	for _, row := range rows {
		e, ok := EventOf(row, now)
		if !ok {
			r.m.Row(metrics.RowIgnored)
			continue
		}
		events = append(events, e)
	}
	if len(events) == 0 {
		return metrics.CallbackIgnored, nil
	}
	mids := make([]string, len(events))
	for i, e := range events {
		mids[i] = e.MessageID
	}
	links, err := r.lookup(ctx, mids)
	if err != nil {
		return "", err
	}
	result := metrics.CallbackUnknownMessage
	for _, e := range events {
		l, ok := links[e.MessageID]
		if !ok {
			if err := r.hold(ctx, e, now); err != nil {
				return "", err
			}
			r.m.Row(metrics.RowPending)
			continue
		}
		label, err := r.record(ctx, l, e, now)
		if err != nil {
			return "", err
		}
		r.m.Row(label)
		result = metrics.CallbackOK
	}
	return result, nil
}

// linked is a link with its remaining life.
type linked struct {
	Link
	ttl time.Duration
}

// lookup finds the links of message ids in every queue, in one round trip.
func (r *Receiver) lookup(ctx context.Context, mids []string) (map[string]linked, error) {
	pipe := r.rdb.Pipeline()
	type probe struct {
		mid string
		get *redis.StringCmd
		ttl *redis.DurationCmd
	}
	var probes []probe
	for _, mid := range mids {
		for _, q := range r.cfg.Queues {
			k := LinkKey(q, mid)
			probes = append(probes, probe{mid, pipe.Get(ctx, k), pipe.PTTL(ctx, k)})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipts: look up links: %w", err)
	}
	out := make(map[string]linked, len(mids))
	for _, p := range probes {
		if _, done := out[p.mid]; done || p.get.Err() != nil {
			continue
		}
		l, err := DecodeLink(p.get.Val())
		if err != nil {
			r.log.Warn("undecodable link", "message_id", p.mid, "error", err.Error())
			continue
		}
		out[p.mid] = linked{Link: l, ttl: p.ttl.Val()}
	}
	return out, nil
}

// record applies e to l's task and reports the row's result label.
func (r *Receiver) record(ctx context.Context, l linked, e Event, now time.Time) (string, error) {
	if e.MaskedTo != "" && l.To != "" && e.MaskedTo != l.To {
		r.log.Warn("receipt destination differs from the task's; dropped", "task_id", l.TaskID, "message_id", e.MessageID, "to", l.To, "receipt_to", e.MaskedTo)
		return metrics.RowMismatch, nil
	}
	a, err := apply(ctx, r.rdb, l.Link, e, l.ttl, r.cfg.History, now)
	if err != nil {
		return "", err
	}
	if a.Duplicate {
		return metrics.RowDuplicate, nil
	}
	r.m.Received(e.Status, e.Channel)
	if !a.Taken {
		return metrics.RowStale, nil
	}
	final := IsFinal(e.Status)
	if e.Status == StatusDelivered && a.Prev != StatusDelivered {
		r.m.Delivered(l.AcceptedAt, e.Received)
	}
	if final && a.Prev != e.Status {
		r.log.Info("delivery receipt", "task_id", l.TaskID, "queue", l.Queue, "message_id", e.MessageID,
			"status", e.Status, "raw_status", e.Raw, "channel", e.Channel, "to", l.To,
			"error_code", e.ErrorCode, "error_detail", e.ErrorDetail, "accepted_at", l.AcceptedAt)
	}
	if r.cfg.StreamMaxLen > 0 {
		ent := Entry{TaskID: l.TaskID, Queue: l.Queue, MessageID: e.MessageID, Status: e.Status, RawStatus: e.Raw,
			Final: final, Channel: e.Channel, ErrorCode: e.ErrorCode, At: e.At, To: l.To}
		if ent.To == "" {
			ent.To = e.MaskedTo
		}
		if err := publish(ctx, r.rdb, ent, r.cfg.StreamMaxLen); err != nil {
			// The receipt is stored; only the stream lacks it. Answering
			// an error would make EngageLab retry a duplicate.
			r.log.Error("receipt not published to the stream", "task_id", l.TaskID, "error", err.Error())
		}
	}
	return metrics.RowApplied, nil
}

// hold keeps e until its message_id's link appears (Run attaches it) or
// PendingTTL passes.
func (r *Receiver) hold(ctx context.Context, e Event, now time.Time) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("receipts: hold: %w", err)
	}
	k := pendingRowPrefix + e.MessageID
	pipe := r.rdb.TxPipeline()
	pipe.RPush(ctx, k, b)
	pipe.LTrim(ctx, k, -maxPendingRows, -1)
	pipe.PExpire(ctx, k, r.cfg.PendingTTL+time.Minute)
	pipe.ZAddNX(ctx, pendingSetKey, redis.Z{Score: float64(now.Add(r.cfg.PendingTTL).UnixMilli()), Member: e.MessageID})
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("receipts: hold: %w", err)
	}
	return nil
}

// Run attaches held receipts to links that appeared since, every
// PollInterval, until ctx is done. Every worker runs one; they agree
// through Redis (the one that removes a message_id from the pending set
// attaches its receipts).
func (r *Receiver) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Debug only: a Redis outage is reported once, by the worker.
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Debug("matching held receipts", "error", err.Error())
		}
	}
}

// reconcileBatch bounds one pass.
const reconcileBatch = 200

// Reconcile makes one pass over the held receipts: those whose link now
// exists are recorded, those held past PendingTTL are dropped (counted as
// expired). It returns how many message_ids were attached.
func (r *Receiver) Reconcile(ctx context.Context) (int, error) {
	zs, err := r.rdb.ZRangeWithScores(ctx, pendingSetKey, 0, reconcileBatch-1).Result()
	if err != nil || len(zs) == 0 {
		return 0, err
	}
	mids := make([]string, len(zs))
	for i, z := range zs {
		mids[i], _ = z.Member.(string)
	}
	links, err := r.lookup(ctx, mids)
	if err != nil {
		return 0, err
	}
	now := r.cfg.Now()
	attached := 0
	for i, z := range zs {
		mid := mids[i]
		l, found := links[mid]
		if !found && z.Score > float64(now.UnixMilli()) {
			continue
		}
		// Whoever removes the message_id owns its held receipts.
		n, err := r.rdb.ZRem(ctx, pendingSetKey, mid).Result()
		if err != nil {
			return attached, err
		}
		if n == 0 {
			continue
		}
		k := pendingRowPrefix + mid
		pipe := r.rdb.TxPipeline()
		lr := pipe.LRange(ctx, k, 0, -1)
		pipe.Del(ctx, k)
		if _, err := pipe.Exec(ctx); err != nil {
			return attached, fmt.Errorf("receipts: take held receipts: %w", err)
		}
		for _, s := range lr.Val() {
			if !found {
				r.m.Row(metrics.RowExpired)
				continue
			}
			var e Event
			if json.Unmarshal([]byte(s), &e) != nil {
				continue
			}
			if _, err := r.record(ctx, l, e, now); err != nil {
				return attached, err
			}
			r.m.Row(metrics.RowAttached)
		}
		if found {
			attached++
		} else {
			r.log.Info("receipt for an unknown message_id dropped after waiting for its task", "message_id", mid, "waited", r.cfg.PendingTTL)
		}
	}
	return attached, nil
}
