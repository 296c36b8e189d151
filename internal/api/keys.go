package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrKeys is wrapped by every error of ParseKeys. Its messages name the
// line and what is wrong with it, never a key or a secret.
var ErrKeys = errors.New("api keys")

// Key is one credential of the API: a client authenticates with HTTP Basic
// base64(Key:Secret), as with EngageLab's dev_key:dev_secret. Name is
// what logs and metrics show; several keys may share a name (the old and
// new key of a rotation).
type Key struct {
	Name, Key, Secret string
}

// maxKeyName bounds a key's name: it becomes a metric label.
const maxKeyName = 64

// ParseKeys reads a keys file: one key per line, name:key:secret (the
// secret may hold ':'); blank lines and lines starting with # are ignored.
// A name holds letters, digits and . _ - only.
func ParseKeys(r io.Reader) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok1 := strings.Cut(line, ":")
		key, secret, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2:
			return nil, fmt.Errorf("%w: line %d: want name:key:secret", ErrKeys, n)
		case !validName(name):
			return nil, fmt.Errorf("%w: line %d: the name must be 1 to %d letters, digits, '.', '_' or '-'", ErrKeys, n, maxKeyName)
		case key == "" || secret == "":
			return nil, fmt.Errorf("%w: line %d (%s): empty key or secret", ErrKeys, n, name)
		case strings.ContainsFunc(key+secret, func(c rune) bool { return c < 0x21 || c == 0x7f }):
			return nil, fmt.Errorf("%w: line %d (%s): white space or control characters in the key or secret", ErrKeys, n, name)
		}
		keys = append(keys, Key{Name: name, Key: key, Secret: secret})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeys, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key in the file", ErrKeys)
	}
	return keys, nil
}

func validName(s string) bool {
	if s == "" || len(s) > maxKeyName {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// constantTimeCompare is subtle.ConstantTimeCompare; a test counts its
// calls to check that match compares every key whatever matches.
var constantTimeCompare = subtle.ConstantTimeCompare

// keyring checks Basic credentials against every key, in constant time.
type keyring []hashedKey

type hashedKey struct {
	name        string
	key, secret [sha256.Size]byte
}

func newKeyring(keys []Key) keyring {
	kr := make(keyring, len(keys))
	for i, k := range keys {
		kr[i] = hashedKey{name: k.Name, key: sha256.Sum256([]byte(k.Key)), secret: sha256.Sum256([]byte(k.Secret))}
	}
	return kr
}

// match returns the name of the key that key:secret authenticates, or "".
// Every key is compared, key and secret both, whatever matched before:
// neither the position of the matching key nor the length of a secret
// shows in the time taken.
func (kr keyring) match(key, secret string) string {
	k, s := sha256.Sum256([]byte(key)), sha256.Sum256([]byte(secret))
	name := ""
	for _, h := range kr {
		ok := constantTimeCompare(h.key[:], k[:]) & constantTimeCompare(h.secret[:], s[:])
		if ok == 1 && name == "" {
			name = h.name
		}
	}
	return name
}
