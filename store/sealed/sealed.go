// Package sealed encrypts the records stores keep outside the process: JSON
// sealed with AES-256-GCM, a random nonce, and additional data that binds
// each value to where it is stored, so a value copied elsewhere (one
// account's tokens pasted under another's key) fails to open instead of
// being served. The embedded store and the Redis store both use it.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the key length: AES-256.
const KeySize = 32

// formatV1 leads every sealed value: AES-256-GCM, random 96-bit nonce
// prepended. A later format (key rotation, another AEAD) gets another byte
// instead of guessing from the bytes that follow.
const formatV1 byte = 1

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct{ aead cipher.AEAD }

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	return &Box{aead: aead}, nil
}

// ParseKey decodes a base64 AES-256 key (standard or URL alphabet, padded or
// not, surrounding whitespace ignored). Errors never include the input.
func ParseKey(b64 string) ([]byte, error) {
	b64 = strings.TrimSpace(b64)
	if b64 == "" {
		return nil, errors.New("encryption key is empty")
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(b64)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("encryption key decodes to %d bytes, want %d", len(key), KeySize)
		}
		return key, nil
	}
	return nil, errors.New("encryption key is not valid base64")
}

func additionalData(where []byte) []byte {
	ad := make([]byte, 0, 1+len(where))
	ad = append(ad, formatV1)
	return append(ad, where...)
}

// Seal encodes v as JSON and encrypts it, bound to where (the value's
// storage location: bucket and key, Redis key, ...).
func (b *Box) Seal(where []byte, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	defer clear(plain)
	out := make([]byte, 1, 1+len(plain)+b.aead.Overhead())
	out[0] = formatV1
	return b.aead.Seal(out, nil, plain, additionalData(where)), nil
}

// Open decrypts a value sealed for where and decodes it into v.
func (b *Box) Open(where, sealed []byte, v any) error {
	if len(sealed) == 0 || sealed[0] != formatV1 {
		return errors.New("open record: unknown format")
	}
	plain, err := b.aead.Open(nil, nil, sealed[1:], additionalData(where))
	if err != nil {
		// Wrong key, tampering, or a value moved from another location.
		return fmt.Errorf("open record: %w", err)
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		// json errors quote offending input; keep decrypted bytes out of errors.
		return errors.New("open record: malformed record")
	}
	return nil
}
