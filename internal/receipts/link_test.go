package receipts

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLinkRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 7, 0, 0, 123e6, time.UTC)
	l := Link{TaskID: "t1", Queue: "critical", To: "+86187****5678", AcceptedAt: at}
	got, err := DecodeLink(l.Encode())
	require.NoError(t, err)
	require.Equal(t, l, got)
	require.Equal(t, "otpq:{critical}:msg:m-1", LinkKey("critical", "m-1"))

	_, err = DecodeLink(`{"q":"critical"}`)
	require.Error(t, err)
	_, err = DecodeLink(`junk`)
	require.Error(t, err)
}
