package producer

import (
	"fmt"

	"github.com/otpq/otpq/internal/sealing"
)

// Keys is a parsed payload key ring, built by ParseKeys: the first key
// seals codes at rest (AES-256-GCM), every key of the ring opens them, so
// keys can be rotated. Producers (Config.PayloadKeys) and workers
// (worker.Config.PayloadKeys) take the same type. A nil *Keys holds no key.
type Keys sealing.Keyring

// ParseKeys reads a key ring written kid:base64(32 bytes)[,kid2:…], the
// format of OTPQ_PAYLOAD_KEY. An empty string yields nil (no keys), not an
// error. Its errors never contain a key.
func ParseKeys(s string) (*Keys, error) {
	kr, err := sealing.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("payload keys: %w", err)
	}
	return (*Keys)(kr), nil
}
