package ops

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const secretCode = "CANARY-5150"

func TestFormatPayload(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{name: "v1 plaintext", in: `{"v":1,"to":"+8618701235678","code":"` + secretCode + `","template":{"id":"login","language":"en","params":{"name":"` + secretCode + `"}},"expires_at":"2030-01-01T00:00:00Z","created_at":"2029-12-31T23:55:00Z"}`,
			want: []string{`"to": "+861*******678"`, `"code": "[redacted]"`, `"id": "login"`, `"language": "en"`, `"name": "[redacted]"`, `"expires_at": "2030-01-01T00:00:00Z"`, `"v": 1`}},
		{name: "e-mail", in: `{"v":1,"to":"support@example.com","code":"` + secretCode + `","template":{"id":"t"}}`,
			want: []string{`"to": "s***@example.com"`}},
		{name: "sealed and unknown fields", in: `{"v":2,"to":"+8618701235678","sealed":"k1:` + secretCode + `","future":{"code":"` + secretCode + `"}}`,
			want: []string{`"sealed": "[redacted]"`, `"future": "[redacted]"`}},
		{name: "v3 without code", in: `{"v":3,"to":"+8618701235678","template":{"id":"login"},"expires_at":"2030-01-01T00:00:00Z","retention_s":3600}`,
			want: []string{`"v": 3`, `"retention_s": 3600`, `"to": "+861*******678"`}},
		{name: "scrubbed", in: `{"v":2,"to":"+8618701235678","scrubbed":true}`, want: []string{`"scrubbed": true`}},
		{name: "code nested in a known field", in: `{"v":{"code":"` + secretCode + `"},"to":["` + secretCode + `"],"template":"` + secretCode + `"}`,
			want: []string{`"v": "[redacted]"`, `"to": "[redacted]"`, `"template": "[redacted]"`}},
		{name: "not JSON", in: `code=` + secretCode, want: []string{"undecodable 16-byte payload"}},
		{name: "JSON array", in: `["` + secretCode + `"]`, want: []string{"undecodable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatPayload("otp:send", []byte(tc.in))
			require.NotContains(t, got, secretCode)
			require.NotContains(t, got, "+8618701235678")
			for _, w := range tc.want {
				require.Contains(t, got, w)
			}
		})
	}
}

func TestFormatResult(t *testing.T) {
	got := FormatResult("", []byte(`{"message_id":"177","send_channel":"sms","attempts":2,"sent_at":"2030-01-01T00:00:00Z","extra":"`+secretCode+`"}`))
	for _, w := range []string{`"message_id": "177"`, `"send_channel": "sms"`, `"attempts": 2`, `"extra": "[redacted]"`} {
		require.Contains(t, got, w)
	}
	require.NotContains(t, got, secretCode)
	require.Equal(t, "", FormatResult("", nil))
	require.Contains(t, FormatResult("", []byte(secretCode)), "undecodable")
	// An unconfirmed acceptance shows as such.
	got = FormatResult("", []byte(`{"message_id":"","send_channel":"","attempts":1,"sent_at":"2030-01-01T00:00:00Z","outcome":"accepted_unconfirmed"}`))
	require.Contains(t, got, `"outcome": "accepted_unconfirmed"`)
}

func TestCheckExposure(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.2:1"} {
		require.NoError(t, CheckExposure(addr, false, false), addr)
	}
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "10.0.0.5:8080", "example.com:8080", "nonsense"} {
		err := CheckExposure(addr, false, false)
		require.ErrorIs(t, err, ErrExposed, addr)
		require.Contains(t, err.Error(), "OTPQ_UI_USER and OTPQ_UI_PASSWORD")
		require.Contains(t, err.Error(), "--ui-read-only")
		require.NoError(t, CheckExposure(addr, true, false), "auth protects %s", addr)
		require.NoError(t, CheckExposure(addr, false, true), "read-only protects %s", addr)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	redis := fakeOpt{}
	_, err := New(Config{Addr: "0.0.0.0:8080", Redis: redis})
	require.ErrorIs(t, err, ErrExposed)
	_, err = New(Config{Addr: "127.0.0.1:8080", Redis: redis, User: "ops"})
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "both OTPQ_UI_USER and OTPQ_UI_PASSWORD")
	_, err = New(Config{Addr: "8080", Redis: redis})
	require.ErrorIs(t, err, ErrConfig)
	_, err = New(Config{Addr: "127.0.0.1:8080"})
	require.ErrorIs(t, err, ErrConfig)
}
