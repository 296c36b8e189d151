package producer

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/task"
)

// The guard counts what reaches one mailbox or handset as one destination
// (issue 16, row 10: each alias below was counted as a new destination):
// after DefaultDestinationLimit sends to the first spelling, every other
// is refused, by Send and SendBatch alike. The destination enqueued is the
// one given.
func TestDestinationGuardCountsAliasesAsOne(t *testing.T) {
	for _, aliases := range [][]string{
		{"victim@example.com", "victim+1@example.com", "Victim+otp@EXAMPLE.com"},
		{"victim@gmail.com", "v.ictim@gmail.com", "vic.tim+2@googlemail.com", "V.ICTIM@GMAIL.COM"},
		{"admin@bücher.example", "admin@xn--bcher-kva.example", "admin+x@BÜCHER.example"},
		{"+8613800138000", "+86013800138000"},
		{"+447700900123", "+4407700900123"},
	} {
		t.Run(aliases[0], func(t *testing.T) {
			b := setupWith(t, nil)
			ctx := context.Background()
			r := validRequest()
			r.To = aliases[0]
			for range DefaultDestinationLimit {
				_, err := b.p.Send(ctx, r)
				require.NoError(t, err, aliases[0])
			}
			for _, to := range aliases[1:] {
				v := validRequest()
				v.To = to
				_, err := b.p.Send(ctx, v)
				require.ErrorIs(t, err, ErrDestinationLimited, "%s after %s", to, aliases[0])
				res := b.p.SendBatch(ctx, []Request{v})
				require.ErrorIs(t, res[0].Err, ErrDestinationLimited, "SendBatch %s", to)
			}
		})
	}
}

// The raw destination is what is enqueued (and sent): only counting uses
// the canonical form.
func TestDestinationSentAsGiven(t *testing.T) {
	b := setupWith(t, nil)
	for _, to := range []string{"V.Ictim+otp@GoogleMail.com", "+86013800138000", "admin@BÜCHER.example"} {
		r := validRequest()
		r.To = to
		id, err := b.p.Send(context.Background(), r)
		require.NoError(t, err)
		info, err := b.ins.GetTaskInfo(QueueCritical, id)
		require.NoError(t, err)
		p, err := task.Decode(info.Payload)
		require.NoError(t, err)
		require.Equal(t, to, p.To)
	}
}
