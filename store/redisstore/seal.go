package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
)

const keySize = 32 // AES-256

// formatV1 leads every sealed value: AES-256-GCM, random 96-bit nonce
// prepended. Another format (key rotation, another AEAD) gets another byte.
const formatV1 byte = 1

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	return aead, nil
}

// additionalData binds a sealed value to its Redis key: a value copied under
// another key (another state id, another prefix) does not open.
func additionalData(key string) []byte {
	ad := make([]byte, 0, 1+len(key))
	ad = append(ad, formatV1)
	return append(ad, key...)
}

// seal encodes v as JSON and encrypts it for key.
func (s *Store) seal(key string, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	defer clear(plain)
	out := make([]byte, 1, 1+len(plain)+s.aead.Overhead())
	out[0] = formatV1
	return s.aead.Seal(out, nil, plain, additionalData(key)), nil
}

// open decrypts a value sealed for key and decodes it into v.
func (s *Store) open(key string, sealed []byte, v any) error {
	if len(sealed) == 0 || sealed[0] != formatV1 {
		return errors.New("open record: unknown format")
	}
	plain, err := s.aead.Open(nil, nil, sealed[1:], additionalData(key))
	if err != nil {
		// Wrong key, tampering, or a value moved from another key.
		return fmt.Errorf("open record: %w", err)
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		// json errors quote the input; keep decrypted bytes out of errors.
		return errors.New("open record: malformed record")
	}
	return nil
}
