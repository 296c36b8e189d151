package bulk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/otpq/otpq/producer"
)

// jsonFields are the keys of a JSON Lines row, matched exactly (encoding/json
// would match "TO" or "Code" too, and let a repeated key silently win).
var jsonFields = map[string]bool{"to": true, "code": true, "template": true, "language": true, "params": true, "id": true}

// parseJSONRow reads one JSON Lines row strictly: an object whose keys are
// the lower-case field names, each at most once, with string values (params:
// an object of strings, or null), no invalid UTF-8 and no lone surrogate
// escape in any string (encoding/json turns both into U+FFFD, which would
// change a code silently). A reject names the field and never holds a value.
func parseJSONRow(line int, data []byte) (producer.Request, string, *Reject) {
	flaws := stringFlaws(data)
	dec := json.NewDecoder(bytes.NewReader(data))
	next := 0 // index in flaws of the next string token
	// str reads the next token; a string is checked against its flaw.
	str := func() (json.Token, string, error) {
		tok, err := dec.Token()
		if err != nil {
			return nil, "", err
		}
		if _, ok := tok.(string); ok && next < len(flaws) {
			flaw := flaws[next]
			next++
			return tok, flaw, nil
		}
		return tok, "", nil
	}
	rej := func(field, format string, args ...any) *Reject {
		return &Reject{Line: line, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	tok, _, err := str()
	if err != nil {
		return producer.Request{}, "", jsonReject(line, err)
	}
	if tok != json.Delim('{') {
		return producer.Request{}, "", rej("row", "not a JSON object")
	}
	var req producer.Request
	var id string
	seen := map[string]bool{}
	for dec.More() {
		tok, flaw, err := str()
		if err != nil {
			return producer.Request{}, "", jsonReject(line, err)
		}
		key := tok.(string) // object keys are strings
		switch {
		case flaw != "":
			return producer.Request{}, "", rej("row", "a field name: %s", flaw)
		case !jsonFields[key]:
			return producer.Request{}, "", rej(key, "unknown field (field names are lower case: to, code, template, language, params, id)")
		case seen[key]:
			return producer.Request{}, "", rej(key, "appears twice on the line")
		}
		seen[key] = true
		if key == "params" {
			params, r := parseJSONParams(line, dec, str)
			if r != nil {
				return producer.Request{}, "", r
			}
			req.Params = params
			continue
		}
		tok, flaw, err = str()
		if err != nil {
			return producer.Request{}, "", jsonReject(line, err)
		}
		var v string
		switch t := tok.(type) {
		case string:
			if flaw != "" {
				return producer.Request{}, "", rej(key, "%s", flaw)
			}
			v = t
		case nil:
		default:
			return producer.Request{}, "", rej(key, "must be a string")
		}
		setField(&req, &id, key, v)
	}
	if _, _, err := str(); err != nil { // the closing brace
		return producer.Request{}, "", jsonReject(line, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return producer.Request{}, "", jsonReject(line, err)
		}
		return producer.Request{}, "", rej("row", "more than one JSON value on the line")
	}
	return req, id, nil
}

// parseJSONParams reads the value of "params": null, or an object of
// strings with distinct keys.
func parseJSONParams(line int, dec *json.Decoder, str func() (json.Token, string, error)) (map[string]string, *Reject) {
	rej := func(format string, args ...any) *Reject {
		return &Reject{Line: line, Field: "params", Reason: fmt.Sprintf(format, args...)}
	}
	tok, _, err := str()
	switch {
	case err != nil:
		return nil, jsonReject(line, err)
	case tok == nil:
		return nil, nil
	case tok != json.Delim('{'):
		return nil, rej("must be a string map")
	}
	var params map[string]string
	for dec.More() {
		tok, flaw, err := str()
		if err != nil {
			return nil, jsonReject(line, err)
		}
		key := tok.(string)
		if flaw != "" {
			return nil, rej("a key: %s", flaw)
		}
		if _, dup := params[key]; dup {
			return nil, rej("key %q appears twice", key)
		}
		tok, flaw, err = str()
		if err != nil {
			return nil, jsonReject(line, err)
		}
		v, ok := tok.(string)
		if !ok {
			return nil, rej("must be a string map")
		}
		if flaw != "" {
			return nil, rej("value of %q: %s", key, flaw)
		}
		if params == nil {
			params = map[string]string{}
		}
		params[key] = v
	}
	if _, _, err := str(); err != nil { // the closing brace
		return nil, jsonReject(line, err)
	}
	return params, nil
}

// stringFlaws scans the raw bytes of a JSON text and returns, for each
// string literal in order (keys included), "" or what is wrong with it
// before encoding/json would silently replace it: invalid UTF-8, or a
// \uD800–\uDFFF escape that is not half of a surrogate pair. Syntax errors
// are left to the decoder.
func stringFlaws(data []byte) []string {
	var flaws []string
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		var flaw string
		i, flaw = stringFlaw(data, i+1)
		flaws = append(flaws, flaw)
	}
	return flaws
}

// stringFlaw scans the string literal whose content starts at data[i]; it
// returns where the literal ends (its closing quote, or past the end of
// data) and what is wrong with it ("" or the last flaw found).
func stringFlaw(data []byte, i int) (end int, flaw string) {
	for i < len(data) && data[i] != '"' {
		n, f := 1, ""
		switch c := data[i]; {
		case c == '\\':
			n, f = escapeFlaw(data, i)
		case c >= utf8.RuneSelf:
			var r rune
			r, n = utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n == 1 {
				f = "not valid UTF-8"
			}
		}
		if f != "" {
			flaw = f
		}
		i += n
	}
	return i, flaw
}

// escapeFlaw reads the escape at data[i] (a backslash): its length, and
// its flaw when it is a \uD800–\uDFFF escape that is not half of a
// surrogate pair. Any other escape counts 2 bytes; the decoder checks it.
func escapeFlaw(data []byte, i int) (n int, flaw string) {
	if i+1 >= len(data) || data[i+1] != 'u' {
		return 2, ""
	}
	r, ok := hex4(data[i+2:])
	switch {
	case !ok:
		return 2, ""
	case r >= 0xD800 && r < 0xDC00:
		if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
			if lo, ok := hex4(data[i+8:]); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				return 8, "" // a surrogate pair
			}
		}
		return 2, loneSurrogate(data[i+2 : i+6])
	case r >= 0xDC00 && r <= 0xDFFF:
		return 2, loneSurrogate(data[i+2 : i+6])
	}
	return 2, ""
}

func loneSurrogate(hex []byte) string {
	return "holds a lone surrogate escape (\\u" + string(hex) + "), not a character"
}

// hex4 decodes 4 hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
