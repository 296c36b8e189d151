// Package sealing encrypts OTP codes at rest with AES-256-GCM under a
// keyring of named keys, so that a code stored in Redis cannot be read by
// whoever can read Redis, and keys can be rotated: the first key of the
// ring seals, every key of the ring opens.
//
// A keyring is written kid:base64key[,kid:base64key…], each key 32 bytes
// (standard or URL base64, padded or not), as in OTPQ_PAYLOAD_KEY. A sealed
// value is kid:base64(nonce‖ciphertext‖tag); the associated data binds it
// to its key ID and to a context string chosen by the caller (otpq uses the
// destination, so a sealed code cannot be moved to another task's payload).
// No error of this package contains a key or a plaintext.
package sealing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// Sentinel errors. Use errors.Is.
var (
	// ErrBadKeyring: the keyring text is malformed.
	ErrBadKeyring = errors.New("bad payload keyring")
	// ErrUnknownKey: the sealed value names a key ID the ring lacks (a
	// worker without the key, or a key removed from the ring too early).
	ErrUnknownKey = errors.New("unknown payload key")
	// ErrOpen: the sealed value is malformed or fails authentication
	// (tampered, or sealed for another context).
	ErrOpen = errors.New("cannot open sealed value")
)

type key struct {
	id   string
	aead cipher.AEAD
}

// Keyring holds the keys. The zero value and nil hold none. A Keyring is
// safe for concurrent use.
type Keyring struct {
	keys []key
}

// Parse reads a keyring in the kid:base64key[,…] form. An empty string
// yields a nil Keyring (encryption off), not an error.
func Parse(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	kr := &Keyring{}
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		id, b64, ok := strings.Cut(part, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: entry %d: want kid:base64key", ErrBadKeyring, i+1)
		case !validID(id):
			return nil, fmt.Errorf("%w: entry %d: key ID must be 1-32 letters, digits, '-', '_' or '.'", ErrBadKeyring, i+1)
		case seen[id]:
			return nil, fmt.Errorf("%w: key ID %q appears twice", ErrBadKeyring, id)
		}
		seen[id] = true
		raw, err := decodeB64(b64)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q is not base64", ErrBadKeyring, id)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("%w: key %q is %d bytes, want %d (AES-256)", ErrBadKeyring, id, len(raw), KeySize)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrBadKeyring, id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrBadKeyring, id, err)
		}
		kr.keys = append(kr.keys, key{id: id, aead: aead})
	}
	return kr, nil
}

func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func validID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Enabled reports whether the ring holds a key.
func (k *Keyring) Enabled() bool { return k != nil && len(k.keys) > 0 }

// SealingKeyID is the ID of the key that seals ("" when none).
func (k *Keyring) SealingKeyID() string {
	if !k.Enabled() {
		return ""
	}
	return k.keys[0].id
}

// Seal encrypts plaintext with the ring's first key, bound to context.
func (k *Keyring) Seal(plaintext, context string) (string, error) {
	if !k.Enabled() {
		return "", fmt.Errorf("%w: the keyring is empty", ErrUnknownKey)
	}
	kk := k.keys[0]
	nonce := make([]byte, kk.aead.NonceSize(), kk.aead.NonceSize()+len(plaintext)+kk.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("sealing: nonce: %w", err)
	}
	out := kk.aead.Seal(nonce, nonce, []byte(plaintext), ad(kk.id, context))
	return kk.id + ":" + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open decrypts a value made by Seal with the same context. It returns
// ErrUnknownKey when the ring lacks the value's key, ErrOpen otherwise.
func (k *Keyring) Open(sealed, context string) (string, error) {
	id, b64, ok := strings.Cut(sealed, ":")
	if !ok || !validID(id) {
		return "", fmt.Errorf("%w: not kid:ciphertext", ErrOpen)
	}
	var kk *key
	if k != nil {
		for i := range k.keys {
			if k.keys[i].id == id {
				kk = &k.keys[i]
			}
		}
	}
	if kk == nil {
		return "", fmt.Errorf("%w %q (this process has %s)", ErrUnknownKey, id, k.describe())
	}
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(raw) < kk.aead.NonceSize()+kk.aead.Overhead() {
		return "", fmt.Errorf("%w: ciphertext of key %q is malformed", ErrOpen, id)
	}
	n := kk.aead.NonceSize()
	plain, err := kk.aead.Open(nil, raw[:n], raw[n:], ad(id, context))
	if err != nil {
		return "", fmt.Errorf("%w: authentication with key %q failed (tampered, or sealed for another task)", ErrOpen, id)
	}
	return string(plain), nil
}

func (k *Keyring) describe() string {
	if !k.Enabled() {
		return "no OTPQ_PAYLOAD_KEY"
	}
	ids := make([]string, len(k.keys))
	for i, kk := range k.keys {
		ids[i] = kk.id
	}
	return "keys " + strings.Join(ids, ",")
}

func ad(id, context string) []byte { return []byte("otpq/sealing/v1\x00" + id + "\x00" + context) }

// GenerateKey returns a new keyring entry kid:base64key with a random key.
func GenerateKey(id string) (string, error) {
	if !validID(id) {
		return "", fmt.Errorf("%w: key ID must be 1-32 letters, digits, '-', '_' or '.'", ErrBadKeyring)
	}
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return id + ":" + base64.StdEncoding.EncodeToString(b), nil
}
