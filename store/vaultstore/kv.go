package vaultstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
)

// tombstoneField marks the version a delete writes: a body with no secret in
// it, which takes a version number so that the deleted record's versions can
// never be written to again (see DeleteConnection).
const tombstoneField = "tokenbrokerDeleted"

// maxCustomValue is KV v2's limit on one custom_metadata value.
const maxCustomValue = 512

// latest is the newest version of a key.
type latest struct {
	// version is the key's current version; 0 when the key has none
	// (never written, or metadata only).
	version int
	// data is the record; nil when the current version holds none (deleted,
	// destroyed, or a tombstone).
	data map[string]any
}

// readLatest reads the current version of path.
func (s *Store) readLatest(ctx context.Context, path string, secrets ...string) (latest, error) {
	sec, err := s.kv.Get(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return latest{}, nil
	}
	if err != nil {
		return latest{}, s.safe(err, secrets...)
	}
	var l latest
	if md := sec.VersionMetadata; md != nil {
		l.version = md.Version
		if md.Destroyed || !md.DeletionTime.IsZero() {
			return l, nil
		}
	}
	if _, dead := sec.Data[tombstoneField]; !dead {
		l.data = sec.Data
	}
	return l, nil
}

// write stores data as the version after cas by check-and-set and returns the
// new version. Vault's refusal is broker.ErrVersionConflict.
func (s *Store) write(ctx context.Context, path string, data map[string]any, cas int, secrets ...string) (int, error) {
	sec, err := s.kv.Put(ctx, path, data, api.WithCheckAndSet(cas))
	if isCASMismatch(err) {
		return 0, broker.ErrVersionConflict
	}
	if err != nil {
		return 0, s.safe(err, secrets...)
	}
	if sec.VersionMetadata == nil || sec.VersionMetadata.Version <= 0 {
		return 0, errors.New("vault: write answered without a version")
	}
	return sec.VersionMetadata.Version, nil
}

// prepareKey writes the metadata of a key about to be created: how many
// versions to keep, check-and-set required for every write, and the identity
// in clear text for operators. Writing metadata before the first version is
// allowed by KV v2 and is idempotent, so two creators racing both succeed
// here and then race on the check-and-set write, as they should.
func (s *Store) prepareKey(ctx context.Context, path string, identity map[string]string) error {
	custom := map[string]any{}
	for k, v := range identity {
		// KV v2 refuses long values and unprintable characters in custom
		// metadata; such an identity is still stored, just not labelled.
		if v != "" && len(v) <= maxCustomValue && !strings.ContainsFunc(v, notPrintable) {
			custom[k] = v
		}
	}
	err := s.kv.PutMetadata(ctx, path, api.KVMetadataPutInput{
		MaxVersions:    s.maxVersions,
		CASRequired:    true,
		CustomMetadata: custom,
	})
	if err != nil {
		return fmt.Errorf("write metadata: %w", s.safe(err))
	}
	return nil
}

func notPrintable(r rune) bool { return !unicode.IsPrint(r) }

// destroyUpTo destroys the data of every version of path up to and including
// upTo: the data is gone for good, the metadata (and so the version counter)
// stays. Versions above upTo belong to a record created after the delete and
// are left alone.
func (s *Store) destroyUpTo(ctx context.Context, path string, upTo int) error {
	md, err := s.kv.GetMetadata(ctx, path)
	if err != nil {
		return fmt.Errorf("read metadata: %w", s.safe(err))
	}
	var versions []int
	for _, v := range md.Versions {
		if v.Version <= upTo && !v.Destroyed {
			versions = append(versions, v.Version)
		}
	}
	if len(versions) == 0 {
		return nil
	}
	if err := s.kv.Destroy(ctx, path, versions); err != nil {
		return fmt.Errorf("destroy versions %v: %w", versions, s.safe(err))
	}
	return nil
}

// toData turns a record into the KV data map: its JSON object, with numbers
// kept as written.
func toData(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// fromData is the inverse of toData.
func fromData(m map[string]any, v any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
