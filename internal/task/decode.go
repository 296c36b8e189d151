package task

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Decoding: the worker decodes a payload per attempt, and encoding/json's
// reflection was 7.5% of the binary's CPU in a bulk drain (issue 18).
// fastDecode reads the payloads producers write — one object, the known
// keys in lower case, each once, plain strings, integers, no null — by
// hand; anything else (an escape, invalid UTF-8, a key in another case,
// an unknown or repeated key, a null, a fraction, trailing data, any
// syntax error) it declines, and Decode falls back to encoding/json. So
// every payload decodes to what encoding/json makes of it and every error
// is encoding/json's (FuzzDecode checks both against decodeJSON).

// scanner reads JSON from b; ok turns false at the first thing fastDecode
// declines, after which every method is a no-op.
type scanner struct {
	b  []byte
	i  int
	ok bool
}

func (s *scanner) fail() { s.ok = false }

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c, after white space.
func (s *scanner) byte(c byte) {
	s.space()
	if !s.ok || s.i >= len(s.b) || s.b[s.i] != c {
		s.fail()
		return
	}
	s.i++
}

// peek is the next byte after white space, 0 at the end.
func (s *scanner) peek() byte {
	s.space()
	if !s.ok || s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// raw is the bytes of a string without escapes or control characters,
// valid UTF-8, quotes excluded.
func (s *scanner) raw() []byte {
	s.byte('"')
	if !s.ok {
		return nil
	}
	start, ascii := s.i, true
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(v) {
				s.fail() // encoding/json replaces invalid bytes with U+FFFD
				return nil
			}
			return v
		case c == '\\' || c < 0x20:
			s.fail()
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	s.fail()
	return nil
}

func (s *scanner) str() string { return string(s.raw()) }

// int reads an integer of at most 18 digits: no fraction, no exponent.
func (s *scanner) int() int64 {
	s.space()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	n := s.i - digits
	if !s.ok || n == 0 || n > 18 || (n > 1 && s.b[digits] == '0') ||
		(s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E')) {
		s.fail()
		return 0
	}
	v, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
	if err != nil {
		s.fail()
	}
	return v
}

func (s *scanner) bool() bool {
	s.space()
	switch {
	case !s.ok:
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false
	}
	s.fail()
	return false
}

// time reads a string as time.Time's UnmarshalJSON does.
func (s *scanner) time() time.Time {
	s.space()
	start := s.i
	s.raw()
	var t time.Time
	if s.ok && t.UnmarshalJSON(s.b[start:s.i]) != nil {
		s.fail()
	}
	return t
}

// object reads an object whose keys are each read by field (which
// returns false for a key it does not know); a key seen twice declines.
func (s *scanner) object(field func(key []byte) bool) {
	s.byte('{')
	if s.peek() == '}' {
		s.i++
		return
	}
	var buf [12][]byte
	seen := buf[:0]
	for s.ok {
		key := s.raw()
		for _, k := range seen {
			if string(k) == string(key) {
				s.fail()
			}
		}
		if !s.ok {
			return
		}
		seen = append(seen, key)
		s.byte(':')
		if !s.ok || !field(key) {
			s.fail()
			return
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.fail()
		}
	}
}

// fastDecode decodes b into p, or reports false (p then undefined) for
// anything it leaves to encoding/json.
func fastDecode(b []byte, p *Payload) bool {
	s := &scanner{b: b, ok: true}
	s.object(func(key []byte) bool {
		switch string(key) {
		case "v":
			v := s.int()
			if int64(int(v)) != v {
				s.fail()
			}
			p.V = int(v)
		case "to":
			p.To = s.str()
		case "code":
			p.Code = s.str()
		case "sealed":
			p.Sealed = s.str()
		case "expires_at":
			p.ExpiresAt = s.time()
		case "created_at":
			p.CreatedAt = s.time()
		case "retention_s":
			p.RetentionSec = s.int()
		case "scrubbed":
			p.Scrubbed = s.bool()
		case "template":
			s.object(func(key []byte) bool {
				switch string(key) {
				case "id":
					p.Template.ID = s.str()
				case "language":
					p.Template.Language = s.str()
				case "params":
					p.Template.Params = map[string]string{}
					s.object(func(key []byte) bool {
						p.Template.Params[string(key)] = s.str()
						return true
					})
				default:
					return false
				}
				return true
			})
		default:
			return false
		}
		return true
	})
	s.space()
	return s.ok && s.i == len(s.b)
}
