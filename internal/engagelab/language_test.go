package engagelab

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The languages are exactly the spec's list ("template.language"), in its
// order, and matched case-sensitively.
func TestLanguages(t *testing.T) {
	require.Equal(t, []Language{"default", "zh_CN", "zh_HK", "en", "ja", "th", "es"}, Languages())
	require.Equal(t, "default, zh_CN, zh_HK, en, ja, th, es", LanguageList())
	require.True(t, LanguageEnglish.Known())
	require.False(t, Language("EN").Known(), "languages are case-sensitive")
	require.False(t, Language("").Known())
	require.False(t, Language("fr").Known())
}
