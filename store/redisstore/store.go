package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/sealed"
)

var (
	_ broker.StateStore = (*Store)(nil)
	_ broker.Leaser     = (*Store)(nil)
	_ broker.Notifier   = (*Store)(nil)
	_ broker.Indexer    = (*Store)(nil)
)

// ErrClosed is returned by every method once Close has been called.
var ErrClosed = errors.New("redis store is closed")

// ErrUntrusted wraps a value read from Redis that does not open with the
// fleet's keys: forged, tampered, moved from another key, or sealed with a
// key no longer configured. It is never used as if it were genuine.
var ErrUntrusted = errors.New("redis value failed authentication")

// DefaultPrefix leads every key and the change channel when Options.Prefix
// is empty.
const DefaultPrefix = "tokenbroker"

// closeReleaseTimeout bounds Close's best-effort release of held leases;
// a lease that cannot be released lapses at its ttl anyway.
const closeReleaseTimeout = 2 * time.Second

// validPrefix keeps prefixes free of hash-tag braces (a '{' in the prefix
// would put every key in one Cluster slot) and of SCAN glob characters (so
// IndexReset can match "<prefix>:idx:*" without escaping).
func validPrefix(p string) bool {
	for _, r := range p {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case strings.ContainsRune("._/:-", r):
		default:
			return false
		}
	}
	return true
}

// Options configure New.
type Options struct {
	// Client is the Redis client (see NewClient). A successful New takes
	// ownership of it (Close closes it), so that the store's subscriptions
	// and lease renewers can never outlive their connection; when New fails
	// the caller still owns it. Give each Store its own client.
	Client goredis.UniversalClient
	// Prefix leads every key and the change channel, so that several
	// deployments (or tests) can share one Redis; default "tokenbroker".
	// Letters, digits and . _ / : - only.
	Prefix string
	// Key is the 32-byte AES-256 key that seals (encrypts and
	// authenticates) everything the store reads back from Redis: OAuth
	// states (they hold the PKCE verifier), change messages and index
	// records. Every replica must use the same key.
	Key []byte
	// PreviousKeys still open values (key rotation) but never seal; Reseal
	// moves what Redis holds to Key.
	PreviousKeys [][]byte
	// Now is the clock for state expiry; nil means time.Now. Lease timing
	// uses the real clock: it races Redis' own expiry.
	Now func() time.Time
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

func (o Options) validate() error {
	if o.Client == nil {
		return errors.New("client is required")
	}
	if !validPrefix(o.Prefix) {
		return errors.New("prefix may hold only letters, digits and . _ / : -")
	}
	if len(o.Key) != sealed.KeySize {
		return fmt.Errorf("key is %d bytes, want %d", len(o.Key), sealed.KeySize)
	}
	return nil
}

// Store is the Redis part of the production broker.Store. It is safe for
// concurrent use.
type Store struct {
	client goredis.UniversalClient
	prefix string
	box    *sealed.Box
	now    func() time.Time
	log    *slog.Logger

	// The two lease scripts; see leases.go for why scripts and not a lock
	// library. Fields, not package variables: no global state.
	renewScript, releaseScript *goredis.Script
	enqueueScript, popScript   *goredis.Script
	resealScript               *goredis.Script // reseal.go
	resealAuditScript          *goredis.Script // audit.go
	resealFieldScript          *goredis.Script // reseal.go

	mu      sync.Mutex
	closed  bool
	leases  map[*lease]struct{} // held leases, released and marked lost by Close
	done    chan struct{}       // closed by Close: ends every subscription
	workers sync.WaitGroup      // subscription pumps and lease renewers

	closeOnce sync.Once
	closeErr  error
}

// New returns a Store over o.Client. It does not contact Redis: Ready does,
// so that a broker can start (and report not ready) while Redis is down.
func New(o Options) (*Store, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	box, err := sealed.New(o.Key, o.PreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		client:            o.Client,
		prefix:            o.Prefix,
		box:               box,
		now:               o.Now,
		log:               o.Logger,
		renewScript:       goredis.NewScript(renewLua),
		releaseScript:     goredis.NewScript(releaseLua),
		enqueueScript:     goredis.NewScript(enqueueLua),
		popScript:         goredis.NewScript(popLua),
		resealScript:      goredis.NewScript(resealLua),
		resealAuditScript: goredis.NewScript(resealAuditLua),
		resealFieldScript: goredis.NewScript(resealHashFieldLua),
		leases:            map[*lease]struct{}{},
		done:              make(chan struct{}),
	}, nil
}

// Ready reports whether Redis answers PING (/readyz).
func (s *Store) Ready(ctx context.Context) error {
	if s.isClosed() {
		return fmt.Errorf("redis not ready: %w", ErrClosed)
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis not ready: %w", err)
	}
	return nil
}

// Close ends every subscription (their channels close), stops the lease
// renewers, releases the held leases (best effort: an unreleased lease lapses
// at its ttl) and marks them lost, then closes the client, which New took
// over. Calls after the first return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		held := make([]*lease, 0, len(s.leases))
		for l := range s.leases {
			held = append(held, l)
		}
		s.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), closeReleaseTimeout)
		defer cancel()
		for _, l := range held {
			l.stopRenewer()
			<-l.renewerDone
			if err := l.release(ctx); err != nil {
				s.log.Warn("release lease on close", "lease", l.name, "err", err)
			}
			l.markLost()
		}
		s.workers.Wait()
		if err := s.client.Close(); err != nil {
			s.closeErr = fmt.Errorf("close redis store: %w", err)
		}
	})
	return s.closeErr
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// key joins the prefix and parts with ':'.
func (s *Store) key(parts ...string) string {
	n := len(s.prefix)
	for _, p := range parts {
		n += 1 + len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, s.prefix...)
	for _, p := range parts {
		b = append(b, ':')
		b = append(b, p...)
	}
	return string(b)
}
