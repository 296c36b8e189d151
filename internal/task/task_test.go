package task

import (
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
		`{"v":3,"to":"+1","code":"` + canary + `","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`:                 "version 3 carries no code",
		`{"v":4,"to":"+1","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`:                                         "unsupported version 4",
	}
	for in, want := range cases {
		_, err := Decode([]byte(in))
		require.ErrorIs(t, err, ErrBadPayload)
		require.Contains(t, err.Error(), want)
		require.NotContains(t, err.Error(), canary)
	}
}

// TestEncodeCodeKeyVersion: a payload without a code is version 3 and
// decodes; a version 3 payload that carries a code is refused.
func TestEncodeCodeKeyVersion(t *testing.T) {
	p := payload()
	p.Code, p.RetentionSec = "", 3600
	b, err := Encode(p)
	require.NoError(t, err)
	require.NotContains(t, string(b), `"code"`)
	require.NotContains(t, string(b), `"sealed"`)
	got, err := Decode(b)
	require.NoError(t, err)
	require.Equal(t, VersionCodeKey, got.V)
	require.Equal(t, int64(3600), got.RetentionSec)
}

// TestCodeValues: the code key's two forms round-trip, and junk is refused
// without echoing it.
func TestCodeValues(t *testing.T) {
	code, sealed, err := ParseCodeValue(CodeValue(canary))
	require.NoError(t, err)
	require.Equal(t, canary, code)
	require.Empty(t, sealed)
	code, sealed, err = ParseCodeValue(SealedCodeValue("k1:AAAA"))
	require.NoError(t, err)
	require.Empty(t, code)
	require.Equal(t, "k1:AAAA", sealed)
	for _, junk := range []string{"", "p:", "x:" + canary, canary} {
		_, _, err = ParseCodeValue(junk)
		require.ErrorIs(t, err, ErrBadPayload)
		require.NotContains(t, err.Error(), canary)
	}
	require.NotEqual(t, SealContext("+1", "a"), SealContext("+1", "b"))
}
