package producer

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// The guard counts an e-mail address in its canonical form: after 5 sends
// to victim@example.com, case variants are refused by the guard, and a
// zero-width space is refused as invalid (issue 9, item 3).
func TestDestinationGuardCanonicalEmail(t *testing.T) {
	b := setupWith(t, nil)
	ctx := context.Background()
	r := validRequest()
	r.To = "victim@example.com"
	for range DefaultDestinationLimit {
		_, err := b.p.Send(ctx, r)
		require.NoError(t, err)
	}
	for _, to := range []string{"victim@EXAMPLE.com", "VICTIM@example.com", "victim@example.COM", "ViCtIm@ExAmPlE.cOm"} {
		v := validRequest()
		v.To = to
		_, err := b.p.Send(ctx, v)
		var dl *DestinationLimitError
		require.True(t, errors.As(err, &dl), "%s: want a DestinationLimitError, got %v", to, err)
		res := b.p.SendBatch(ctx, []Request{v})
		require.ErrorIs(t, res[0].Err, ErrDestinationLimited, "SendBatch %s", to)
	}
	for _, to := range []string{"vic\u200btim@example.com", "victim@example.com\u200b", "\u202evictim@example.com", "vic\u2066tim@example.com", "\ufeffvictim@example.com"} {
		v := validRequest()
		v.To = to
		_, err := b.p.Send(ctx, v)
		var ve *ValidationError
		require.ErrorAs(t, err, &ve, "%q", to)
		require.Equal(t, "to", ve.Field)
		require.Contains(t, ve.Reason, "invisible formatting character")
	}
}

// Invalid UTF-8 and control characters are refused in every field, naming
// it, instead of being replaced on the way to the provider (issue 9, item 4).
func TestValidateEncodingAndControls(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Request)
	}{
		{"to", func(r *Request) { r.To = "+86187\xff01235678" }},
		{"to", func(r *Request) { r.To = "b\xffob@example.com" }},
		{"to", func(r *Request) { r.To = "bob@exa\x1bmple.com" }},
		{"to", func(r *Request) { r.To = "bob@example.com\u0085" }},
		{"code", func(r *Request) { r.Code = "9182\xff73" }},
		{"code", func(r *Request) { r.Code = "9182\x0073" }},
		{"template", func(r *Request) { r.TemplateID = "lo\x1b[31mgin\nX" }},
		{"template", func(r *Request) { r.TemplateID = "log\xffin" }},
		{"template", func(r *Request) { r.TemplateID = "login\u0090" }},
		{"template", func(r *Request) { r.TemplateID = "log\u200bin" }},
		{"language", func(r *Request) { r.Language = "e\xffn" }},
		{"language", func(r *Request) { r.Language = "en\n" }},
		{"params", func(r *Request) { r.Params = map[string]string{"na\xffme": "Bob"} }},
		{"params", func(r *Request) { r.Params = map[string]string{"na\nme": "Bob"} }},
		{"params", func(r *Request) { r.Params = map[string]string{"name": "B\xffob"} }},
	}
	for _, tc := range cases {
		r := validRequest()
		tc.mod(&r)
		err := r.Validate()
		var ve *ValidationError
		require.ErrorAs(t, err, &ve, "request %+q", r)
		require.Equal(t, tc.field, ve.Field, err.Error())
		require.ErrorIs(t, err, ErrInvalid)
		require.NotContains(t, err.Error(), canary)
	}
	r := validRequest()
	r.Params = map[string]string{"name": "Zoë\nSecond line ✓"}
	require.NoError(t, r.Validate(), "a param value may hold any valid text")
	// The dedup key is checked too.
	var ve *ValidationError
	require.ErrorAs(t, validateDedupKey("k\xff"), &ve)
	require.Equal(t, "id", ve.Field)
}

// isDedupKey says what ^[A-Za-z0-9._:/@+=-]+$ says, for every byte value
// alone, between allowed characters, and for the empty key.
func TestIsDedupKeyMatchesItsRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9._:/@+=-]+$`)
	cases := []string{"", "a", "campaign-7:row/12@x+y=z_w.v", "ü", "a b", "a\x00", "日本"}
	for b := range 256 {
		cases = append(cases, string([]byte{byte(b)}), "ok"+string([]byte{byte(b)})+"ok")
	}
	for _, c := range cases {
		require.Equal(t, re.MatchString(c), isDedupKey(c), "%q", c)
	}
}
