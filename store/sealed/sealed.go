// Package sealed encrypts the records stores keep outside the process: JSON
// sealed with AES-256-GCM, a random nonce, and additional data that binds
// each value to where it is stored, so a value copied elsewhere (one
// account's tokens pasted under another's key) fails to open instead of
// being served. The embedded store and the Redis store both use it.
//
// A Box holds a key ring: one current key that seals, and previous keys
// that only open, so BROKER_ENCRYPTION_KEY can be rotated without making
// records written under the old key unreadable (docs/operations.md, "Rotating
// the encryption key"). Each value names the key that sealed it, and
// Current reports whether a value still needs re-sealing.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the key length: AES-256.
const KeySize = 32

// Formats lead every sealed value, so a later format gets another byte
// instead of guessing from the bytes that follow.
const (
	// formatV1: AES-256-GCM, random 96-bit nonce prepended; no key id (the
	// format before key rotation; still opened, with every key of the ring).
	formatV1 byte = 1
	// formatV2: as v1, with the 4-byte id of the sealing key after the
	// format byte. The id is part of the additional data.
	formatV2 byte = 2
)

const keyIDSize = 4

// ErrUnknownKey means a value was sealed with a key the ring does not hold.
var ErrUnknownKey = errors.New("sealed with a key that is not configured")

type key struct {
	id   uint32
	aead cipher.AEAD
}

// Box seals with its current key and opens with any key of its ring. It is
// safe for concurrent use.
type Box struct {
	current key
	byID    map[uint32]key
	all     []key // current first: the order v1 values are tried in
}

// New returns a Box that seals with current and also opens values sealed
// with any of previous. Every key is 32 bytes.
func New(current []byte, previous ...[]byte) (*Box, error) {
	b := &Box{byID: map[uint32]key{}}
	for i, raw := range append([][]byte{current}, previous...) {
		k, err := newKey(raw)
		if err != nil {
			if i == 0 {
				return nil, err
			}
			return nil, fmt.Errorf("previous key %d: %w", i, err)
		}
		if _, dup := b.byID[k.id]; dup {
			continue // the same key listed twice, or current repeated among the previous
		}
		b.byID[k.id] = k
		b.all = append(b.all, k)
	}
	b.current = b.all[0]
	return b, nil
}

func newKey(raw []byte) (key, error) {
	if len(raw) != KeySize {
		return key{}, fmt.Errorf("encryption key is %d bytes, want %d", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, fmt.Errorf("encryption key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return key{}, fmt.Errorf("encryption key: %w", err)
	}
	return key{id: KeyID(raw), aead: aead}, nil
}

// KeyID is the public identifier of a key: the first 4 bytes of a SHA-256
// over a fixed label and the key. It names the key in sealed values and in
// logs; it reveals nothing usable about the key.
func KeyID(raw []byte) uint32 {
	h := sha256.New()
	h.Write([]byte("tokenbroker sealed key id\x00"))
	h.Write(raw)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// FormatKeyID renders a key id for logs and commands.
func FormatKeyID(id uint32) string {
	var b [keyIDSize]byte
	binary.BigEndian.PutUint32(b[:], id)
	return hex.EncodeToString(b[:])
}

// CurrentKeyID is the id of the key that seals.
func (b *Box) CurrentKeyID() string { return FormatKeyID(b.current.id) }

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

// ParseKeys decodes a comma-separated list of base64 keys (the previous
// keys of a ring); empty entries are skipped. Errors name the position,
// never the input.
func ParseKeys(list string) ([][]byte, error) {
	var keys [][]byte
	for i, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, err := ParseKey(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// additionalData is the format byte, the key id for v2, and where.
func additionalData(header, where []byte) []byte {
	ad := make([]byte, 0, len(header)+len(where))
	ad = append(ad, header...)
	return append(ad, where...)
}

// Seal encodes v as JSON and encrypts it with the current key, bound to
// where (the value's storage location: bucket and key, Redis key, ...).
func (b *Box) Seal(where []byte, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	defer clear(plain)
	return b.sealPlain(where, plain), nil
}

// Open decrypts a value sealed for where, with whichever key of the ring
// sealed it, and decodes it into v.
func (b *Box) Open(where, sealed []byte, v any) error {
	plain, err := b.open(where, sealed)
	if err != nil {
		return err
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		// json errors quote offending input; keep decrypted bytes out of errors.
		return errors.New("open record: malformed record")
	}
	return nil
}

func (b *Box) open(where, sealed []byte) ([]byte, error) {
	switch {
	case len(sealed) > 0 && sealed[0] == formatV1:
		ad := additionalData(sealed[:1], where)
		for _, k := range b.all {
			if plain, err := k.aead.Open(nil, nil, sealed[1:], ad); err == nil {
				return plain, nil
			}
		}
		// Wrong key, tampering, or a value moved from another location.
		return nil, errors.New("open record: message authentication failed")
	case len(sealed) > 1+keyIDSize && sealed[0] == formatV2:
		id := binary.BigEndian.Uint32(sealed[1:])
		k, ok := b.byID[id]
		if !ok {
			return nil, fmt.Errorf("open record: key %s: %w", FormatKeyID(id), ErrUnknownKey)
		}
		plain, err := k.aead.Open(nil, nil, sealed[1+keyIDSize:], additionalData(sealed[:1+keyIDSize], where))
		if err != nil {
			return nil, fmt.Errorf("open record: %w", err)
		}
		return plain, nil
	}
	return nil, errors.New("open record: unknown format")
}

// Current reports whether sealed was sealed by the current key in the
// current format; a value that is not needs re-sealing before a previous
// key can be dropped. It does not authenticate: Open does.
func (b *Box) Current(sealed []byte) bool {
	return len(sealed) > 1+keyIDSize && sealed[0] == formatV2 &&
		binary.BigEndian.Uint32(sealed[1:]) == b.current.id
}

// Reseal opens a value sealed for where with any key of the ring and seals
// it again with the current key, without decoding it.
func (b *Box) Reseal(where, sealed []byte) ([]byte, error) {
	plain, err := b.open(where, sealed)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return b.sealPlain(where, plain), nil
}

func (b *Box) sealPlain(where, plain []byte) []byte {
	out := make([]byte, 1+keyIDSize, 1+keyIDSize+len(plain)+b.current.aead.Overhead())
	out[0] = formatV2
	binary.BigEndian.PutUint32(out[1:], b.current.id)
	return b.current.aead.Seal(out, nil, plain, additionalData(out[:1+keyIDSize], where))
}
