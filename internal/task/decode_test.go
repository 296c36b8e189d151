package task

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// decodeSeeds are payloads as producers write them and the odd inputs
// fastDecode must leave to encoding/json or get exactly right.
func decodeSeeds(t testing.TB) [][]byte {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	var seeds [][]byte
	for _, p := range []Payload{
		{To: "+8613800000000", Template: Template{ID: "login"}, ExpiresAt: exp},
		{To: "a@example.com", Template: Template{ID: "t", Language: "zh_CN", Params: map[string]string{"name": "王", "x": ""}},
			ExpiresAt: exp, CreatedAt: exp.Add(-time.Minute), RetentionSec: 3600},
		{To: "+1555", Code: "123456", Template: Template{ID: "t", Params: map[string]string{}}, ExpiresAt: exp},
		{To: "+1555", Sealed: "k1:abc", Template: Template{ID: "t"}, ExpiresAt: exp, Scrubbed: true},
	} {
		b, err := Encode(p)
		require.NoError(t, err)
		seeds = append(seeds, b)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, ` {"v":3} `, `{"v":3}{}`, `{"v":3} x`, `{"v":3,}`, `{,}`, `{"v":3 "to":"a"}`,
		`{"v":3,"to":"+1","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"TO":"+1","template":{"ID":"t"},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"to":"+1","to":"+2","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"to":"+1","template":{"id":"t","params":{"a":"1","a":"2"}},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"to":"+1","template":{"id":"t"},"template":{"language":"en"},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"to":"+1","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z","extra":1}`,
		`{"v":3,"to":"+1","template":{"id":"t","x":1},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":3,"to":"\u002b1\ud83d\ude00","template":{"id":"t\n"},"expires_at":"2030-01-01T00:00:00Z"}`,
		"{\"v\":3,\"to\":\"+1\xff\xfe\",\"template\":{\"id\":\"t\"},\"expires_at\":\"2030-01-01T00:00:00Z\"}",
		"{\"v\":3,\"to\":\"+1\u200b\",\"template\":{\"id\":\"t\x01\"},\"expires_at\":\"2030-01-01T00:00:00Z\"}",
		`{"v":3.0,"to":"+1"}`, `{"V":3,"to":"+1","template":{"id":"t"},"expires_at":"2030-01-01T00:00:00Z"}`, `{"v":3e0}`, `{"v":-0}`, `{"v":03}`, `{"v":-}`, `{"v":"3"}`, `{"v":null}`, `{"v":true}`,
		`{"v":99999999999999999999}`, `{"v":123456789012345678}`, `{"retention_s":-5}`, `{"retention_s":1.5}`,
		`{"scrubbed":true}`, `{"scrubbed":false}`, `{"scrubbed":null}`, `{"scrubbed":tru}`, `{"scrubbed":1}`,
		`{"expires_at":null}`, `{"expires_at":"2030-13-01T00:00:00Z"}`, `{"expires_at":"yesterday"}`, `{"expires_at":5}`,
		`{"expires_at":"2030-01-01T00:00:00+08:00"}`, `{"expires_at":"2030-01-01t00:00:00z"}`,
		`{"template":null}`, `{"template":{}}`, `{"template":{"params":null}}`, `{"template":{"params":{"a":1}}}`,
		`{"template":[]}`, `{"to":"unterminated`, `{"to":"a"`, "{\"to\":\"a\"}\n", "\t{\r\n\"v\" : 1 }",
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// requireSameAsJSON: Decode gives what encoding/json (decodeJSON and the
// same checks) gives, payload and error text alike.
func requireSameAsJSON(t testing.TB, b []byte) {
	want, wantErr := decodeJSON(b)
	if wantErr == nil {
		if err := check(want); err != nil {
			want, wantErr = Payload{}, err
		}
	}
	got, err := Decode(b)
	if wantErr != nil {
		require.EqualError(t, err, wantErr.Error(), "input %q", b)
		require.Zero(t, got)
		return
	}
	require.NoError(t, err, "input %q", b)
	require.Equal(t, want, got, "input %q", b)
	var fast Payload
	if fastDecode(b, &fast) { // when it takes an input, it reads it alike
		require.Equal(t, want, fast, "input %q", b)
	}
}

func TestDecodeSameAsEncodingJSON(t *testing.T) {
	for _, b := range decodeSeeds(t) {
		requireSameAsJSON(t, b)
	}
}

// TestDecodeTakesWhatProducersWrite: the fast path is not a dead branch:
// it reads every payload Encode writes.
func TestDecodeTakesWhatProducersWrite(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		const alphabet = "abc+@.123 王é_-/:"
		rs := []rune(alphabet)
		var b strings.Builder
		for range r.IntN(20) {
			b.WriteRune(rs[r.IntN(len(rs))])
		}
		return b.String()
	}
	for i := range 2000 {
		p := Payload{To: str() + "x", Template: Template{ID: str() + "t", Language: str()},
			ExpiresAt: time.Unix(r.Int64N(1<<33), r.Int64N(1e9)).UTC(), RetentionSec: r.Int64N(1 << 40)}
		if i%2 == 0 {
			p.CreatedAt = time.Unix(r.Int64N(1<<33), 0).In(time.FixedZone("", 3600*(r.IntN(25)-12)))
			p.Template.Params = map[string]string{}
			for range r.IntN(4) {
				p.Template.Params[str()] = str()
			}
		}
		if i%3 == 0 {
			p.Code = fmt.Sprint(r.IntN(1e6)) + "0"
		}
		b, err := Encode(p)
		require.NoError(t, err)
		var fast Payload
		require.True(t, fastDecode(b, &fast), "fast path declined %s", b)
		requireSameAsJSON(t, b)
	}
}

// FuzzDecode: any input decodes as encoding/json decodes it.
func FuzzDecode(f *testing.F) {
	for _, b := range decodeSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { requireSameAsJSON(t, b) })
}

func BenchmarkDecode(b *testing.B) {
	p, err := Encode(Payload{To: "+8613000000001", Template: Template{ID: "bench", Language: "en", Params: map[string]string{"name": "bench"}},
		ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now(), RetentionSec: 3600})
	require.NoError(b, err)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeJSON(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
