package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// Run a worker against a stand-in for EngageLab and deliver one code. In
// production BaseURL is left empty (https://otp.api.engagelab.cc), DevKey
// and DevSecret come from the environment, and RedisURL points at the
// Redis the producers use.
func Example() {
	redis := miniredis.NewMiniRedis()
	if err := redis.Start(); err != nil {
		log.Fatal(err)
	}
	defer redis.Close()
	redisURL := "redis://" + redis.Addr() + "/0"

	// What EngageLab answers to a good POST /v1/codes.
	engagelab := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, _ := r.BasicAuth(); r.URL.Path != "/v1/codes" || user != "dev-key" || pass != "dev-secret" {
			http.Error(w, `{"code":2001,"message":"authentication failed"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"message_id":"1725407449772531712","send_channel":"sms"}`)
	}))
	defer engagelab.Close()

	w, err := worker.New(worker.Config{
		RedisURL:    redisURL,
		BaseURL:     engagelab.URL,
		DevKey:      "dev-key",
		DevSecret:   "dev-secret",
		Concurrency: 10,
		Logger:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Start(); err != nil {
		log.Fatal(err)
	}
	defer w.Shutdown()

	p, err := producer.New(producer.Config{RedisURL: redisURL})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	id, err := p.Send(ctx, producer.Request{To: "user@example.com", Code: "493817", TemplateID: "login"})
	if err != nil {
		log.Fatal(err)
	}

	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, err := p.Status(ctx, id)
		if err != nil {
			log.Fatal(err)
		}
		if st.State == producer.StateCompleted {
			fmt.Println(st.State, "after", st.Attempts, "attempt; message", st.MessageID, "via", st.SendChannel)
			return
		}
	}
	fmt.Println("not delivered")
	// Output:
	// completed after 1 attempt; message 1725407449772531712 via sms
}

// fakeGateway is a test double for the provider: it implements
// worker.Sender outside the module, refusing one number for good and
// accepting everything else.
type fakeGateway struct{ sent chan worker.SendRequest }

func (g *fakeGateway) Send(ctx context.Context, req worker.SendRequest) (*worker.SendResponse, error) {
	if req.To == "+8613800000000" {
		return nil, fmt.Errorf("gateway: number blocked: %w", worker.ErrRejected) // dead-lettered, not retried
	}
	g.sent <- req
	return &worker.SendResponse{MessageID: "m-1", SendChannel: "sms"}, nil
}

// Plug a test double in place of EngageLab with Config.Sender, for tests of
// an application that enqueues codes.
func Example_sender() {
	redis := miniredis.NewMiniRedis()
	if err := redis.Start(); err != nil {
		log.Fatal(err)
	}
	defer redis.Close()
	redisURL := "redis://" + redis.Addr() + "/0"

	gateway := &fakeGateway{sent: make(chan worker.SendRequest, 1)}
	w, err := worker.New(worker.Config{
		RedisURL: redisURL,
		Sender:   gateway,
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()

	p, err := producer.New(producer.Config{RedisURL: redisURL})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Send(ctx, producer.Request{To: "+8613800138000", Code: "493817", TemplateID: "login"}); err != nil {
		log.Fatal(err)
	}
	select {
	case req := <-gateway.sent:
		fmt.Println("sent", req.Code, "to", req.To, "with template", req.TemplateID)
	case <-time.After(10 * time.Second):
		fmt.Println("not sent")
	}
	stop()
	fmt.Println("run:", <-ran)
	// Output:
	// sent 493817 to +8613800138000 with template login
	// run: <nil>
}
