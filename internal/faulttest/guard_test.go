//go:build fault

package faulttest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/producer"
)

// TestBurstToOneDestination: three producers (three application
// instances sharing one Redis) fire a burst of sends at one number at once.
// The per-destination guard must let exactly its limit through, refuse the
// rest with ErrDestinationLimited, and leave other destinations alone.
func TestBurstToOneDestination(t *testing.T) {
	const limit, producers, perProducer = 3, 3, 30
	rep := newReport(t, 12, fmt.Sprintf("burst of %d concurrent sends to one number from %d producers (guard: %d per 10 min)", producers*perProducer, producers, limit),
		fmt.Sprintf("exactly %d accepted, the rest refused with `ErrDestinationLimited`; provider sees ≤ %d for the number; duplicates 0 (re-sent 0)", limit, limit))
	cfg := func(c *producer.Config) { c.DestinationLimit, c.DestinationWindow = limit, 10*time.Minute }
	b := setup(t, setupOpts{producerConfig: cfg})
	victim := b.nextTo()
	var prods []*producer.Producer
	for range producers {
		c := producer.Config{RedisURL: b.redis.url()}
		cfg(&c)
		p, err := producer.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		prods = append(prods, p)
	}
	w := b.startWorker("--concurrency", "10")

	var mu sync.Mutex
	var accepted []sent
	limited, other := 0, []string{}
	var leakedNumber bool
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range prods {
		for j := range perProducer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				id, err := p.Send(context.Background(), producer.Request{To: victim, Code: fmt.Sprintf("%06d", 500000+i*100+j), TemplateID: "login"})
				mu.Lock()
				defer mu.Unlock()
				var dle *producer.DestinationLimitError
				switch {
				case err == nil:
					accepted = append(accepted, sent{id: id, to: victim, queue: producer.QueueCritical})
				case errors.Is(err, producer.ErrDestinationLimited) && errors.As(err, &dle):
					limited++
					leakedNumber = leakedNumber || strings.Contains(err.Error(), victim)
				default:
					other = append(other, err.Error())
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	// Other destinations are not affected by the victim's budget.
	bystanders := b.sendN(10)

	fv := b.settle(accepted, 30*time.Second)
	fb := b.settle(bystanders, 30*time.Second)
	st := b.fake.stats(t)
	rep.figure("%d sends: %d accepted, %d refused with ErrDestinationLimited, %d other errors; provider calls to the number %d; 10 sends to other numbers: %d delivered; lost %d",
		producers*perProducer, len(accepted), limited, len(other), st.ByTo[victim].Requests, fb.Delivered, fv.Lost+fb.Lost)
	require.Empty(t, other, "unexpected errors")
	require.Len(t, accepted, limit, "accepted sends to one number")
	require.Equal(t, producers*perProducer-limit, limited)
	require.False(t, leakedNumber, "the refusal's error text contains the unmasked number")
	require.LessOrEqual(t, st.ByTo[victim].Requests, limit, "provider calls to the number")
	require.Equal(t, 10, fb.Delivered, "%s", fb)
	require.Zero(t, fv.Lost+fb.Lost)
	// No request here can have delivered without the worker learning it
	// (the worker and the provider stay up), so nothing is sent twice. The
	// settle figures count per destination, and the victim's accepted sends
	// share one, so for them the bound is one provider call per accepted send.
	require.Equal(t, len(accepted), st.ByTo[victim].Requests, "provider calls to the number: one per accepted send")
	require.Zero(t, fb.Duplicates, "%s", fb)
	require.Zero(t, fb.Resent, "%s", fb)
	require.True(t, w.running())
}
