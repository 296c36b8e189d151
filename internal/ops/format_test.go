package ops

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

const secretCode = "CANARY-5150"

func TestFormatPayload(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		// first is the summary line.
		first string
	}{
		{name: "v1 plaintext", in: `{"v":1,"to":"+8618701235678","code":"` + secretCode + `","template":{"id":"login","language":"en","params":{"name":"` + secretCode + `"}},"expires_at":"2030-01-01T00:00:00.123456789Z","created_at":"2029-12-31T23:55:00Z"}`,
			first: "to +861*******678 · template login · en",
			want:  []string{"\ncode: [redacted]\n", "\nparams: name (values hidden)", "\nexpires_at: 2030-01-01T00:00:00Z\n", "\ncreated_at: 2029-12-31T23:55:00Z\n"}},
		{name: "e-mail", in: `{"v":1,"to":"support@example.com","code":"` + secretCode + `","template":{"id":"t"}}`,
			first: "to s***@example.com · template t"},
		{name: "sealed and unknown fields", in: `{"v":2,"to":"+8618701235678","sealed":"k1:` + secretCode + `","future":{"code":"` + secretCode + `"}}`,
			first: "to +861*******678", want: []string{"\ncode: [redacted]", "\nfuture: [redacted]"}},
		{name: "v3 without code", in: `{"v":3,"to":"+8618701235678","template":{"id":"login"},"expires_at":"2030-01-01T00:00:00Z","retention_s":3600}`,
			first: "to +861*******678 · template login", want: []string{"\nexpires_at: 2030-01-01T00:00:00Z"}},
		{name: "scrubbed", in: `{"v":2,"to":"+8618701235678","scrubbed":true}`, first: "to +861*******678", want: []string{"\ncode: scrubbed, never sent"}},
		{name: "code nested in a known field", in: `{"v":{"code":"` + secretCode + `"},"to":["` + secretCode + `"],"template":"` + secretCode + `","expires_at":"` + secretCode + `"}`,
			first: "to [redacted]", want: []string{"\ntemplate: [redacted]", "\nexpires_at: [redacted]"}},
		{name: "not JSON", in: `code=` + secretCode, first: "(undecodable 16-byte payload, not shown)"},
		{name: "JSON array", in: `["` + secretCode + `"]`, first: "(undecodable 15-byte payload, not shown)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatPayload("otp:send", []byte(tc.in))
			require.NotContains(t, got, secretCode)
			require.NotContains(t, got, "+8618701235678")
			first, _, _ := strings.Cut(got, "\n")
			require.Equal(t, tc.first, first, got)
			for _, w := range tc.want {
				require.Contains(t, got, w)
			}
			// No wire internals, no JSON, nothing wider than the UI's box.
			for _, internal := range []string{"v:", "retention_s", "3600", `"`, "{"} {
				require.NotContains(t, got, internal)
			}
			for line := range strings.SplitSeq(got, "\n") {
				require.LessOrEqual(t, utf8.RuneCountInString(line), uiWidth, "line %q of\n%s", line, got)
			}
		})
	}
}

func TestFormatResult(t *testing.T) {
	got := FormatResult("", []byte(`{"message_id":"1778899001122334455","send_channel":"sms","attempts":2,"sent_at":"2030-01-01T00:00:00.5Z","outcome":"accepted","extra":"`+secretCode+`"}`))
	require.Equal(t, "accepted · sms · 2 attempts\n\nmessage_id: 1778899001122334455\nattempts: 2\naccepted_at: 2030-01-01T00:00:00Z\nextra: [redacted]", got)
	require.Equal(t, "", FormatResult("", nil))
	require.Equal(t, "(undecodable 11-byte result, not shown)", FormatResult("", []byte(secretCode)))
	// An unconfirmed acceptance shows as such; an old result ("delivered",
	// written before receipts) reads as accepted.
	got = FormatResult("", []byte(`{"message_id":"","send_channel":"","attempts":1,"sent_at":"2030-01-01T00:00:00Z","outcome":"accepted_unconfirmed"}`))
	require.True(t, strings.HasPrefix(got, "accepted unconfirmed\n\n"), got)
	got = FormatResult("", []byte(`{"message_id":"9","send_channel":"sms","attempts":1,"outcome":"delivered"}`))
	require.True(t, strings.HasPrefix(got, "accepted · sms\n\n"), got)
}

// A summary longer than the UI's box wraps at its separators, then at
// spaces; a long field value wraps onto indented lines.
func TestViewWraps(t *testing.T) {
	var v view
	v.summary("failed · sms · 4001 Message could not be delivered to the handset at all · 1.2 s after acceptance · 0.005 USD")
	v.field("error", "a very long provider message that goes on and on past the width")
	for _, line := range v.lines {
		require.LessOrEqual(t, utf8.RuneCountInString(line), uiWidth, "%q", line)
	}
	require.Equal(t, "failed · sms", v.lines[0])
	require.Equal(t, "· 4001 Message could not be delivered to", v.lines[1])
	require.Equal(t, "  the handset at all", v.lines[2])
	require.Equal(t, "· 1.2 s after acceptance · 0.005 USD", v.lines[3])
	require.Equal(t, "", v.lines[4])
	require.Equal(t, "error: a very long provider message that", v.lines[5])
	require.Equal(t, "  goes on and on past the width", v.lines[6])
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
