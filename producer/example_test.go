package producer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/otpq/otpq/producer"
)

// Enqueue a login code for a phone number, then look the task up. A real
// application points RedisURL at its Redis; the example runs an embedded one.
func Example() {
	redis := miniredis.NewMiniRedis()
	if err := redis.Start(); err != nil {
		log.Fatal(err)
	}
	defer redis.Close()

	p, err := producer.New(producer.Config{RedisURL: "redis://" + redis.Addr() + "/0"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx := context.Background()
	req := producer.Request{
		To:         "+8613800138000",
		Code:       "493817",
		TemplateID: "login",
		Language:   "en",
		Params:     map[string]string{"app": "Acme"},
	}
	id, err := p.Send(ctx, req, producer.ExpiresIn(2*time.Minute), producer.DedupKey("login-42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("task:", id)

	// The same deduplication key again: reported, not enqueued twice.
	_, err = p.Send(ctx, req, producer.DedupKey("login-42"))
	fmt.Println("again:", errors.Is(err, producer.ErrDuplicate))

	// Invalid input is refused before anything is stored, naming the field.
	_, err = p.Send(ctx, producer.Request{To: "12345", Code: "493817", TemplateID: "login"})
	var ve *producer.ValidationError
	fmt.Println("invalid:", errors.As(err, &ve) && ve.Field == "to")

	st, err := p.Status(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", st.State, "queue:", st.Queue)
	// Output:
	// task: login-42
	// again: true
	// invalid: true
	// state: pending queue: critical
}

// Seal codes at rest: parse the key ring once (the text form of
// OTPQ_PAYLOAD_KEY, here a fixed demo key; real keys come from a secret
// store) and give the same ring, or one holding its key, to the workers.
func ExampleParseKeys() {
	keys, err := producer.ParseKeys("k1:Y2FuYXJ5LXBheWxvYWQta2V5LTAxMjM0NTY3ODlhYmM=")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keys parsed:", keys != nil)

	_, err = producer.ParseKeys("k1:c2hvcnQ=") // 5 bytes, not 32
	fmt.Println(err != nil)
	// Output:
	// keys parsed: true
	// true
}
