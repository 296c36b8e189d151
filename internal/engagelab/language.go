package engagelab

import (
	"slices"
	"strings"
)

// Language is a template language, the request's "template.language".
type Language string

// The languages of the API spec's request parameters table; an empty
// language means LanguageDefault.
const (
	LanguageDefault            Language = "default" // the template's default language
	LanguageSimplifiedChinese  Language = "zh_CN"
	LanguageTraditionalChinese Language = "zh_HK"
	LanguageEnglish            Language = "en"
	LanguageJapanese           Language = "ja"
	LanguageThai               Language = "th"
	LanguageSpanish            Language = "es"
)

// Languages returns the languages the API accepts, in the spec's order. The
// slice is new on each call; callers may keep or change it.
func Languages() []Language {
	return []Language{LanguageDefault, LanguageSimplifiedChinese, LanguageTraditionalChinese,
		LanguageEnglish, LanguageJapanese, LanguageThai, LanguageSpanish}
}

// Known reports whether l is one of Languages (the empty language is not:
// callers treat it as LanguageDefault before asking).
func (l Language) Known() bool { return slices.Contains(Languages(), l) }

// LanguageList is Languages as text, "default, zh_CN, …", for error
// messages.
func LanguageList() string {
	var names []string
	for _, l := range Languages() {
		names = append(names, string(l))
	}
	return strings.Join(names, ", ")
}
