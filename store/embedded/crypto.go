package embedded

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFile is the name of the generated key file inside the data directory.
const KeyFile = "encryption.key"

const keySize = 32 // AES-256

// formatV1 leads every sealed value: AES-256-GCM, random 96-bit nonce
// prepended. A later format (key rotation, another AEAD) gets another byte
// instead of guessing from the bytes that follow.
const formatV1 byte = 1

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
		if len(key) != keySize {
			return nil, fmt.Errorf("encryption key decodes to %d bytes, want %d", len(key), keySize)
		}
		return key, nil
	}
	return nil, errors.New("encryption key is not valid base64")
}

// LoadOrCreateKey returns the key in <dir>/encryption.key, generating it
// (mode 0600, dir created 0700) when the file does not exist.
func LoadOrCreateKey(dir string) ([]byte, error) {
	key, _, err := loadOrCreateKey(dir)
	return key, err
}

func loadOrCreateKey(dir string) (key []byte, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create key dir: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	key, err = readKeyFile(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}

	key = make([]byte, keySize)
	_, _ = rand.Read(key) // crypto/rand.Read never fails; it crashes the program instead
	// O_EXCL: when two processes race to create the key, one loses and reads the
	// winner's key rather than overwriting it after data was sealed with it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		key, err = readKeyFile(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create key file %s: %w", path, err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync() // the key must be on disk before any data sealed with it
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, false, fmt.Errorf("write key file %s: %w", path, err)
	}
	return key, true, nil
}

func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("encryption key is %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	return aead, nil
}

// additionalData binds a sealed value to where it is stored, so that a value
// copied to another key or bucket (one account's tokens pasted under another
// account) fails to open instead of being served.
func additionalData(bucket, key []byte) []byte {
	ad := make([]byte, 0, 2+len(bucket)+len(key))
	ad = append(ad, formatV1)
	ad = append(ad, bucket...)
	ad = append(ad, 0) // bucket names hold no NUL, so the split is unambiguous
	return append(ad, key...)
}

// seal encodes v as JSON and encrypts it for bucket/key.
func (s *Store) seal(bucket, key []byte, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	out := make([]byte, 1, 1+len(plain)+s.aead.Overhead())
	out[0] = formatV1
	out = s.aead.Seal(out, nil, plain, additionalData(bucket, key))
	clear(plain)
	return out, nil
}

// open decrypts a value sealed for bucket/key and decodes it into v.
func (s *Store) open(bucket, key, sealed []byte, v any) error {
	if len(sealed) == 0 || sealed[0] != formatV1 {
		return errors.New("open record: unknown format")
	}
	plain, err := s.aead.Open(nil, nil, sealed[1:], additionalData(bucket, key))
	if err != nil {
		// Wrong key, tampering, or a value moved from another key.
		return fmt.Errorf("open record: %w", err)
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		// json errors quote offending input; keep decrypted bytes out of errors.
		return errors.New("open record: malformed record")
	}
	return nil
}
