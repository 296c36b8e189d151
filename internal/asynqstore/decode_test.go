package asynqstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otpq/otpq/internal/asynqstore"
)

// fullMessage sets every field, times in whole seconds (the encoding's
// resolution) and in time.Local, as time.Unix gives them back.
func fullMessage() asynqstore.Message {
	return asynqstore.Message{
		Type: "otp:send", Payload: []byte(`{"v":3}`), Headers: map[string]string{"a": "1", "b": "ü"},
		ID: "id-1", Queue: "critical", Retry: 25, Timeout: 90 * time.Second,
		Deadline: time.Unix(1_900_000_000, 0), Retention: time.Hour,
		Retried: 3, ErrorMsg: "engagelab 1000: Internal error", LastFailedAt: time.Unix(1_800_000_000, 0),
		UniqueKey: "u", GroupKey: "g", CompletedAt: time.Unix(1_800_000_100, 0),
	}
}

// TestDecodeMessageRoundTrip: DecodeMessage reads back what Encode wrote,
// field for field, for a full message, the empty one and negative counts
// (int32 on the wire, sign-extended).
func TestDecodeMessageRoundTrip(t *testing.T) {
	neg := fullMessage()
	neg.Retry, neg.Retried, neg.Headers, neg.Payload = -1, -2, nil, nil
	for _, m := range []asynqstore.Message{fullMessage(), {}, neg, {Type: "otp:send", Retry: 8}} {
		got, err := asynqstore.DecodeMessage(m.Encode())
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
}

// TestDecodeMessageSkipsUnknownFields: fields asynq may add later, and a
// known field number with another wire type, are skipped as protobuf
// skips them, not taken for errors or for the field.
func TestDecodeMessageSkipsUnknownFields(t *testing.T) {
	m := fullMessage()
	b := m.Encode()
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	b = protowire.AppendTag(b, 100, protowire.BytesType)
	b = protowire.AppendString(b, "later")
	b = protowire.AppendTag(b, 101, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 1)
	b = protowire.AppendTag(b, 102, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 1)
	b = protowire.AppendTag(b, 103, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	b = protowire.AppendTag(b, 103, protowire.EndGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType) // type is a string
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 5, protowire.BytesType) // retry is a varint
	b = protowire.AppendString(b, "x")
	var e []byte // a header entry with an unknown field
	e = protowire.AppendTag(e, 1, protowire.BytesType)
	e = protowire.AppendString(e, "c")
	e = protowire.AppendTag(e, 3, protowire.VarintType)
	e = protowire.AppendVarint(e, 1)
	e = protowire.AppendTag(e, 2, protowire.BytesType)
	e = protowire.AppendString(e, "3")
	b = protowire.AppendTag(b, 15, protowire.BytesType)
	b = protowire.AppendBytes(b, e)
	got, err := asynqstore.DecodeMessage(b)
	require.NoError(t, err)
	m.Headers["c"] = "3"
	require.Equal(t, m, got)

	// A repeated scalar: the last one wins.
	b = protowire.AppendTag(m.Encode(), 3, protowire.BytesType)
	b = protowire.AppendString(b, "id-2")
	got, err = asynqstore.DecodeMessage(b)
	require.NoError(t, err)
	require.Equal(t, "id-2", got.ID)
}

// TestDecodeMessageRejectsMalformed: bytes that are not a TaskMessage are
// an error, never a half-read message.
func TestDecodeMessageRejectsMalformed(t *testing.T) {
	full := fullMessage().Encode()
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	header := func(entry []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 15, protowire.BytesType), entry)
	}
	cases := map[string][]byte{
		"truncated value":       full[:len(full)-1],
		"field number 0":        {0x00, 0x01},
		"tag cut short":         {0x80},
		"varint cut short":      {0x28, 0xff},
		"varint over 64 bits":   {0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"length past the end":   {0x0a, 0x05, 'o', 't'},
		"lone end group":        protowire.AppendTag(nil, 7, protowire.EndGroupType),
		"unclosed group":        protowire.AppendTag(nil, 99, protowire.StartGroupType),
		"reserved wire type":    {0x0e, 0x00},
		"invalid UTF-8 string":  str(3, "id-\xff"),
		"invalid UTF-8 header":  header(str(1, "\xc3")),
		"malformed header":      header([]byte{0x0a, 0x09, 'k'}),
		"junk after a message":  append(append([]byte{}, full...), 0x0a),
		"text instead of proto": []byte("not a protobuf message at all"),
	}
	for name, b := range cases {
		_, err := asynqstore.DecodeMessage(b)
		require.Error(t, err, name)
		require.ErrorContains(t, err, "decode task message", name)
	}
}
