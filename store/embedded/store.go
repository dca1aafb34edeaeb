package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/sealed"
)

var _ broker.Store = (*Store)(nil)

// DBFile is the name of the database file inside Options.Dir.
const DBFile = "tokenbroker.db"

var (
	// ErrClosed is returned by every method once Close has been called.
	ErrClosed = errors.New("embedded store is closed")
	// ErrWrongKey means the database was written under another encryption key.
	// Nothing in it can be read; the broker must not start and overwrite it.
	ErrWrongKey = errors.New("encryption key does not match the key this data was written with")
	// ErrLocked means another process has the database open.
	ErrLocked = errors.New("database is locked by another process (is a second broker using the same data directory?)")
)

const (
	// lockTimeout bounds the wait for bbolt's file lock. bbolt waits forever by
	// default, so a second broker on the same directory would hang silently.
	lockTimeout = time.Second
	// janitorEvery is how often expired OAuth states are swept. TakeState
	// already refuses expired ones; the sweep only reclaims space.
	janitorEvery = time.Minute
)

// Bucket names; they are also part of every value's additional data.
var (
	bucketConnections = []byte("connections")
	bucketClients     = []byte("clients")
	bucketStates      = []byte("states")
	bucketMeta        = []byte("meta")
)

// keyCheck is a sealed marker written when the database is created, so that
// opening it with another key fails at once instead of on the first read.
var keyCheck = []byte("keycheck")

// Options configure Open.
type Options struct {
	// Dir holds tokenbroker.db and, when Key is nil, encryption.key. It is
	// created with mode 0700 when missing.
	Dir string
	// Key is the 32-byte AES-256 key. Nil loads <Dir>/encryption.key, or
	// generates it when absent (see LoadOrCreateKey).
	Key []byte
	// PreviousKeys are keys records may still be sealed with (key rotation):
	// they open, never seal, and a background re-seal moves every record to
	// the current key (see Reseal).
	PreviousKeys [][]byte
	// Now is the clock for state expiry; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

func (o Options) validate() error {
	if o.Dir == "" {
		return errors.New("dir is required")
	}
	if o.Key != nil && len(o.Key) != sealed.KeySize {
		return fmt.Errorf("key is %d bytes, want %d", len(o.Key), sealed.KeySize)
	}
	return nil
}

// Store is the embedded broker.Store. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	box    *sealed.Box
	now    func() time.Time
	log    *slog.Logger
	leases leaseTable
	hub    hub

	stop      chan struct{}
	janitor   sync.WaitGroup
	closeOnce sync.Once
}

// Open opens (creating when needed) the store in o.Dir and starts the state
// janitor. It fails fast when another process holds the database, and with
// ErrWrongKey when the key does not match the data.
func Open(o Options) (*Store, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store: create data dir: %w", err)
	}
	key := o.Key
	if key == nil {
		k, created, err := loadOrCreateKey(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("open embedded store: %w", err)
		}
		keyPath := filepath.Join(o.Dir, KeyFile)
		if created {
			o.Logger.Warn("generated a new encryption key; back it up, the data cannot be read without it",
				"path", keyPath)
		} else if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
			o.Logger.Warn("encryption key file is readable by other users; chmod 600 it", "path", keyPath,
				"mode", fi.Mode().Perm().String())
		}
		key = k
	}
	box, err := sealed.New(key, o.PreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}

	path := filepath.Join(o.Dir, DBFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open embedded store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	s := &Store{
		db:     db,
		box:    box,
		now:    o.Now,
		log:    o.Logger,
		leases: leaseTable{held: map[string]*lease{}},
		hub:    hub{subs: map[*subscriber]struct{}{}, done: make(chan struct{})},
		stop:   make(chan struct{}),
	}
	if err := db.Update(s.initialize); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	s.janitor.Add(1)
	go s.runJanitor()
	if len(o.PreviousKeys) > 0 {
		s.janitor.Add(1)
		go s.resealInBackground()
	}
	return s, nil
}

// initialize creates the buckets and checks the key against the marker.
func (s *Store) initialize(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketConnections, bucketClients, bucketStates, bucketMeta,
		bucketEndpoints, bucketOutbox, bucketSeen, bucketAttempts, bucketAudit} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyCheck); v != nil {
		var marker string
		if err := s.open(bucketMeta, keyCheck, v, &marker); err != nil {
			return ErrWrongKey
		}
		return nil
	}
	check, err := s.seal(bucketMeta, keyCheck, "tokenbroker")
	if err != nil {
		return err
	}
	return meta.Put(keyCheck, check)
}

// Ready reports whether the database is open and readable.
func (s *Store) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketConnections) == nil {
			return errors.New("connections bucket missing")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded store not ready: %w", err)
	}
	return nil
}

// Close stops the janitor, closes every subscription, marks every lease lost
// and closes the database. Calls after the first return nil.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.janitor.Wait()
		s.hub.close()
		s.leases.close()
		if cerr := s.db.Close(); cerr != nil {
			err = fmt.Errorf("close embedded store: %w", cerr)
		}
	})
	return err
}

func (s *Store) runJanitor() {
	defer s.janitor.Done()
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.sweepSeen(); err != nil {
				s.log.Error("sweep webhook event ids", "err", err)
			}
			n, err := s.sweepStates()
			if err != nil {
				s.log.Error("sweep expired oauth states", "err", err)
				continue
			}
			if n > 0 {
				s.log.Debug("swept expired oauth states", "count", n)
			}
		}
	}
}

// view and update translate bbolt's closed-database error into ErrClosed so
// that callers see one error for "the store is gone".
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return closedErr(s.db.View(fn))
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	return closedErr(s.db.Update(fn))
}

func closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
