package embedded

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tokenbroker/tokenbroker/store/sealed"
)

// KeyFile is the name of the generated key file inside the data directory.
const KeyFile = "encryption.key"

// ParseKey decodes a base64 AES-256 key; see sealed.ParseKey.
func ParseKey(b64 string) ([]byte, error) { return sealed.ParseKey(b64) }

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

	key = make([]byte, sealed.KeySize)
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

// where binds a sealed value to its bucket and key, so that a value copied
// to another key or bucket (one account's tokens pasted under another
// account) fails to open instead of being served.
func where(bucket, key []byte) []byte {
	w := make([]byte, 0, 1+len(bucket)+len(key))
	w = append(w, bucket...)
	w = append(w, 0) // bucket names hold no NUL, so the split is unambiguous
	return append(w, key...)
}

// seal encodes v as JSON and encrypts it for bucket/key.
func (s *Store) seal(bucket, key []byte, v any) ([]byte, error) {
	return s.box.Seal(where(bucket, key), v)
}

// open decrypts a value sealed for bucket/key and decodes it into v.
func (s *Store) open(bucket, key, sealedValue []byte, v any) error {
	return s.box.Open(where(bucket, key), sealedValue, v)
}
