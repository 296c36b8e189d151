package task

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const canary = "CANARY-31337"

func payload() Payload {
	return Payload{To: "+15550001", Code: canary, Template: Template{ID: "t"},
		ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), CreatedAt: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func TestEncodeVersions(t *testing.T) {
	b, err := Encode(payload())
	require.NoError(t, err)
	p, err := Decode(b)
	require.NoError(t, err)
	require.Equal(t, Version, p.V)
	require.Equal(t, canary, p.Code)

	sealed := payload()
	sealed.Code, sealed.Sealed = "", "k1:AAAA"
	b, err = Encode(sealed)
	require.NoError(t, err)
	require.NotContains(t, string(b), `"code"`)
	p, err = Decode(b)
	require.NoError(t, err)
	require.Equal(t, VersionSealed, p.V)
	require.Equal(t, "k1:AAAA", p.Sealed)

	both := payload()
	both.Sealed = "k1:AAAA"
	_, err = Encode(both)
	require.Error(t, err)
	require.NotContains(t, err.Error(), canary)
}

// TestDecodeV1FromBeforeSealing: a payload written by a build that
// predates sealing (code always present, no sealed field) still decodes.
func TestDecodeV1FromBeforeSealing(t *testing.T) {
	old := `{"v":1,"to":"+15550001","code":"` + canary + `","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z","created_at":"2029-01-01T00:00:00Z"}`
	p, err := Decode([]byte(old))
	require.NoError(t, err)
	require.Equal(t, canary, p.Code)
}

func TestDecodeRejectsMixedVersions(t *testing.T) {
	cases := map[string]string{
		`{"v":1,"to":"+1","sealed":"k:AA","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`:                         "version 1 cannot carry a sealed code",
		`{"v":2,"to":"+1","code":"` + canary + `","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`:                 "needs a sealed code",
		`{"v":2,"to":"+1","code":"` + canary + `","sealed":"k:AA","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`: "needs a sealed code",
		`{"v":3,"to":"+1","code":"` + canary + `","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`:                 "unsupported version 3",
	}
	for in, want := range cases {
		_, err := Decode([]byte(in))
		require.ErrorIs(t, err, ErrBadPayload)
		require.Contains(t, err.Error(), want)
		require.NotContains(t, err.Error(), canary)
	}
}

func TestScrub(t *testing.T) {
	for _, p := range []Payload{payload(), func() Payload { p := payload(); p.Code, p.Sealed = "", "k1:AAAA"; return p }()} {
		b, err := Encode(p)
		require.NoError(t, err)
		out, expires, ok := Scrub(b)
		require.True(t, ok)
		require.True(t, p.ExpiresAt.Equal(expires), "the expiry is read in the same pass: %s", expires)
		require.NotContains(t, string(out), canary)
		require.NotContains(t, string(out), "k1:AAAA")
		var m map[string]any
		require.NoError(t, json.Unmarshal(out, &m))
		require.Equal(t, "+15550001", m["to"], "the rest of the payload is kept for operators")
		_, err = Decode(out)
		require.ErrorIs(t, err, ErrBadPayload)
		require.Contains(t, err.Error(), "scrubbed")

		_, _, ok = Scrub(out)
		require.False(t, ok, "already scrubbed")
	}
	_, _, ok := Scrub([]byte("junk"))
	require.False(t, ok)
}
