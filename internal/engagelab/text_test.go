package engagelab

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestPrintable(t *testing.T) {
	require.Equal(t, `a\x1b[2J\nb\u202ec\u200bd\xffé`, Printable("a\x1b[2J\nb\u202ec\u200bd\xffé", 512))
	require.Equal(t, "plain text, 中文", Printable("plain text, 中文", 512))
	once := Printable("\x1b"+strings.Repeat("é", 300), 128)
	require.LessOrEqual(t, len(once), 128)
	require.True(t, utf8.ValidString(once))
	require.True(t, strings.HasPrefix(once, `\x1bé`) && strings.HasSuffix(once, "é…"), once)
	require.Equal(t, once, Printable(once, 128), "escaped text passes unchanged")
	// Never a cut inside an escape.
	cut := Printable(strings.Repeat("a", 122)+"\x1b\x1b", 128)
	require.Equal(t, strings.Repeat("a", 122)+`…`, cut)
}
