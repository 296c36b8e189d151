package api

import (
	"crypto/subtle"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMatchComparesEveryKey: match compares the key and the secret of every
// key, whichever matches and wherever it is in the file, so that neither
// which key matched nor how much of a guess was right shows in the time it
// takes; the first key that matches names the request. Fails with an early
// return on the first match, with the secret compared only when the key
// matched, and with the last match winning: checked (make mutate).
func TestMatchComparesEveryKey(t *testing.T) {
	kr := newKeyring([]Key{{"a", "ka", "sa"}, {"b", "kb", "sb"}, {"c", "kc", "sc:x"}, {"dup", "ka", "sa"}})
	calls := 0
	t.Cleanup(func() { constantTimeCompare = subtle.ConstantTimeCompare })
	constantTimeCompare = func(x, y []byte) int { calls++; return subtle.ConstantTimeCompare(x, y) }
	for _, c := range []struct{ key, secret, want string }{
		{"ka", "sa", "a"},
		{"kb", "sb", "b"},
		{"kc", "sc:x", "c"},
		{"kb", "sa", ""},
		{"ka", "s", ""},
		{"x", "y", ""},
		{"", "", ""},
	} {
		calls = 0
		require.Equal(t, c.want, kr.match(c.key, c.secret), "%s:%s", c.key, c.secret)
		require.Equal(t, 2*len(kr), calls, "%s:%s: comparisons", c.key, c.secret)
	}
}
