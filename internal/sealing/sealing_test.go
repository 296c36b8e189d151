package sealing

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const secret = "CANARY-4711"

type bundle struct {
	old, cur string // keyring entries
}

func setup(t *testing.T) bundle {
	t.Helper()
	old, err := GenerateKey("k1")
	require.NoError(t, err)
	cur, err := GenerateKey("k2")
	require.NoError(t, err)
	return bundle{old: old, cur: cur}
}

func TestSealOpenRoundTrip(t *testing.T) {
	b := setup(t)
	kr, err := Parse(b.cur)
	require.NoError(t, err)
	require.True(t, kr.Enabled())
	require.Equal(t, "k2", kr.SealingKeyID())
	s, err := kr.Seal(secret, "+15550001")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(s, "k2:"))
	require.NotContains(t, s, secret)
	s2, err := kr.Seal(secret, "+15550001")
	require.NoError(t, err)
	require.NotEqual(t, s, s2, "a fresh nonce for every seal")
	got, err := kr.Open(s, "+15550001")
	require.NoError(t, err)
	require.Equal(t, secret, got)
}

func TestRotationOldKeysStillOpen(t *testing.T) {
	b := setup(t)
	before, err := Parse(b.old)
	require.NoError(t, err)
	sealedOld, err := before.Seal(secret, "x")
	require.NoError(t, err)

	after, err := Parse(b.cur + "," + b.old) // new key first: it seals, both open
	require.NoError(t, err)
	got, err := after.Open(sealedOld, "x")
	require.NoError(t, err)
	require.Equal(t, secret, got)
	sealedNew, err := after.Seal(secret, "x")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(sealedNew, "k2:"))

	_, err = before.Open(sealedNew, "x")
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Contains(t, err.Error(), `"k2"`)
	var none *Keyring
	_, err = none.Open(sealedNew, "x")
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Contains(t, err.Error(), "no OTPQ_PAYLOAD_KEY")
}

func TestOpenRejectsTamperingAndOtherContext(t *testing.T) {
	b := setup(t)
	kr, err := Parse(b.cur)
	require.NoError(t, err)
	s, err := kr.Seal(secret, "+15550001")
	require.NoError(t, err)

	_, err = kr.Open(s, "+15550002")
	require.ErrorIs(t, err, ErrOpen, "sealed for another destination")

	id, body, _ := strings.Cut(s, ":")
	raw, err := base64.RawStdEncoding.DecodeString(body)
	require.NoError(t, err)
	raw[len(raw)-1] ^= 1
	_, err = kr.Open(id+":"+base64.RawStdEncoding.EncodeToString(raw), "+15550001")
	require.ErrorIs(t, err, ErrOpen)
	require.NotContains(t, err.Error(), secret)

	for _, junk := range []string{"", "nokid", "k2:!!!", "k2:AAAA"} {
		_, err = kr.Open(junk, "+15550001")
		require.ErrorIs(t, err, ErrOpen, junk)
	}
}

func TestParseErrors(t *testing.T) {
	kr, err := Parse("  ")
	require.NoError(t, err)
	require.False(t, kr.Enabled())

	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	good := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cases := map[string]string{
		"nokey":                    "want kid:base64key",
		":" + good:                 "key ID must be",
		"bad id:" + good:           "key ID must be",
		"a:" + short:               "16 bytes, want 32",
		"a:@@@":                    "not base64",
		"a:" + good + ",a:" + good: "appears twice",
	}
	for in, want := range cases {
		_, err := Parse(in)
		require.ErrorIs(t, err, ErrBadKeyring, in)
		require.Contains(t, err.Error(), want, in)
		require.NotContains(t, err.Error(), good)
	}
	// URL-safe, unpadded keys are accepted too.
	_, err = Parse("u:" + base64.RawURLEncoding.EncodeToString(make([]byte, 32)))
	require.NoError(t, err)
}
