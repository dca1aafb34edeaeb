package vaultstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
)

var (
	_ broker.ConnectionStore = (*Store)(nil)
	_ broker.ClientStore     = (*Store)(nil)
)

const (
	// DefaultMount and DefaultPrefix place the secrets at
	// secret/data/tokenbroker/... (policy.hcl grants exactly that).
	DefaultMount  = "secret"
	DefaultPrefix = "tokenbroker"
	// DefaultMaxVersions is how many versions of a key Vault keeps. Old
	// versions hold old tokens, which are secrets too (a refresh token that
	// has not been rotated out is still valid); three leave room to inspect a
	// bad write without keeping a long history.
	DefaultMaxVersions = 3

	// readConcurrency bounds the reads in flight while listing or walking
	// connections: enough to walk 10,000 connections in seconds, few enough
	// that N replicas starting at once do not flood Vault.
	readConcurrency = 8
	// walkPage is how many connections are read before fn is called for
	// them, so that a walk holds a page in memory, not the whole store.
	walkPage = 256
)

// Options configure New.
type Options struct {
	// Client is a logged-in client (see NewClient). The Store does not own
	// it: Close leaves it, and its token renewal, to the caller.
	Client *api.Client
	// Mount is the KV v2 mount; DefaultMount when empty.
	Mount string
	// Prefix is the folder under the mount; DefaultPrefix when empty.
	Prefix string
	// MaxVersions is the max_versions set on every key created;
	// DefaultMaxVersions when zero.
	MaxVersions int
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

func (o Options) validate() error {
	if o.Client == nil {
		return errors.New("client is required")
	}
	for name, p := range map[string]string{"mount": o.Mount, "prefix": o.Prefix} {
		if p == "" {
			continue
		}
		for seg := range strings.SplitSeq(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("%s %q must be a relative path without empty, \".\" or \"..\" segments", name, p)
			}
		}
	}
	if o.MaxVersions < 0 {
		return errors.New("max versions must not be negative")
	}
	return nil
}

// Store keeps connections and OAuth clients in Vault KV v2. It is safe for
// concurrent use and holds no lock across a Vault call (it holds none at all:
// Vault's check-and-set is the only serialisation).
type Store struct {
	client      *api.Client
	kv          *api.KVv2
	mount       string
	prefix      string
	maxVersions int
	log         *slog.Logger
	closed      atomic.Bool
}

// New returns a Store on o.Client. It makes no call to Vault; see Ready.
func New(o Options) (*Store, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("vault store: %w", err)
	}
	s := &Store{
		client:      o.Client,
		mount:       o.Mount,
		prefix:      o.Prefix,
		maxVersions: o.MaxVersions,
		log:         o.Logger,
	}
	if s.mount == "" {
		s.mount = DefaultMount
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.maxVersions == 0 {
		s.maxVersions = DefaultMaxVersions
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.kv = s.client.KVv2(s.mount)
	return s, nil
}

// Ready reads one metadata path under the prefix. Vault checks the token and
// the policy before it looks for the path, so a 404 (the usual answer) proves
// Vault is reachable and unsealed, the token valid, and the policy granting;
// unlike a LIST it costs the same for ten connections or a million.
func (s *Store) Ready(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	_, err := s.client.Logical().ReadWithContext(ctx, s.mount+"/metadata/"+s.prefix+"/connections")
	if err != nil {
		return fmt.Errorf("vault store not ready: %w", s.safe(err))
	}
	return nil
}

// Close makes every later call fail with ErrClosed. The client stays open:
// it belongs to the caller.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// safe scrubs a Vault error of the client's token and of secrets.
func (s *Store) safe(err error, secrets ...string) error {
	return safeError(err, append(secrets, s.client.Token())...)
}

// seg encodes a caller-supplied value as one path segment (see the package
// documentation for why base64url).
func seg(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

func unseg(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err
}

// Paths relative to the mount, as the KVv2 helpers take them.

func (s *Store) connectionsRoot() string { return s.prefix + "/connections" }

func (s *Store) accountPath(account string) string {
	return s.connectionsRoot() + "/" + seg(account)
}

func (s *Store) vendorPath(account, vendor string) string {
	return s.accountPath(account) + "/" + seg(vendor)
}

func (s *Store) connectionPath(k broker.Key) string {
	if k.UserID == "" {
		return s.vendorPath(k.Account, k.Vendor) + "/app"
	}
	return s.vendorPath(k.Account, k.Vendor) + "/users/" + seg(k.UserID)
}

func (s *Store) clientPath(account, vendor string) string {
	return s.prefix + "/clients/" + seg(account) + "/" + seg(vendor)
}

// list returns the names under folder (a path relative to the mount, without
// the trailing slash); sub-folders end with "/". A missing folder is empty.
func (s *Store) list(ctx context.Context, folder string) ([]string, error) {
	secret, err := s.client.Logical().ListWithContext(ctx, s.mount+"/metadata/"+folder)
	if err != nil {
		return nil, s.safe(err)
	}
	if secret == nil || secret.Data == nil {
		return nil, nil
	}
	raw, _ := secret.Data["keys"].([]any)
	names := make([]string, 0, len(raw))
	for _, v := range raw {
		if name, ok := v.(string); ok {
			names = append(names, name)
		}
	}
	return names, nil
}

// describe names a connection in errors and logs; identities are not secrets.
func describe(k broker.Key) string {
	if k.UserID == "" {
		return fmt.Sprintf("%q/%q", k.Account, k.Vendor)
	}
	return fmt.Sprintf("%q/%q user %q", k.Account, k.Vendor, k.UserID)
}

func validKey(k broker.Key) error {
	if k.Account == "" || k.Vendor == "" {
		return errors.New("account and vendor are required")
	}
	return nil
}
