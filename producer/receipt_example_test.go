package producer_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/producer"
)

// React to delivery receipts: follow the receipt stream and offer another
// channel when a code could not be delivered. Workers append to the stream
// as EngageLab's status callbacks arrive; the example plays one worker and
// one callback on an embedded Redis.
func ExampleProducer_ReadReceipts() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	p, err := producer.New(producer.Config{RedisURL: "redis://" + mr.Addr() + "/0"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	simulateFailedDelivery(mr.Addr())

	ctx := context.Background()
	cursor := "" // keep the last event's ID to resume after a restart
	events, err := p.ReadReceipts(ctx, cursor, 100, time.Second)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range events {
		cursor = e.ID
		if e.Verdict == "failed" {
			fmt.Printf("task %s to %s: %s via %s (error %d): offer a voice call\n", e.TaskID, e.To, e.Status, e.Channel, e.ErrorCode)
		}
	}
	// Output:
	// task login-42 to +861*******678: sent_failed via sms (error 4001): offer a voice call
}

// simulateFailedDelivery stands for a worker whose provider accepted task login-42
// (message 1750000000000000001) and then received EngageLab's sent_fail
// callback for it.
func simulateFailedDelivery(addr string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	link := receipts.Link{TaskID: "login-42", Queue: "critical", To: redact.Destination("+8618701235678"), AcceptedAt: time.Now()}
	rdb.Set(ctx, receipts.LinkKey("critical", "1750000000000000001"), link.Encode(), time.Hour)
	recv, err := receipts.NewReceiver(receipts.Config{Redis: rdb, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	body := `{"total":1,"rows":[{"message_id":"1750000000000000001","to":"+8618701235678","channel":"sms",` +
		`"status":{"message_status":"sent_fail","status_data":{"current_send_channel":"sms"},"error_code":4001,` +
		`"error_detail":{"message":"Invalid phone number"}}}]}`
	w := httptest.NewRecorder()
	recv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, receipts.Path, strings.NewReader(body)))
	if w.Code != http.StatusOK {
		log.Fatalf("callback answered %d", w.Code)
	}
}
