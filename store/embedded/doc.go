// Package embedded is tokenbroker's default store: one bbolt file on local
// disk, every value sealed with AES-256-GCM. It implements all of broker.Store
// for a single replica. Leases and change notifications are in-process, which
// is exact for one replica and wrong for more; use the Vault and Redis store
// for a fleet.
//
// On disk, <Dir>/tokenbroker.db (mode 0600) has the buckets connections,
// clients, states and meta. Keys are the identity's parts, each prefixed with
// its uvarint length (account, vendor, user), so that no choice of names can
// collide and a prefix scan of one account never reaches another; state keys
// are SHA-256 of the state id, which is a credential. Values are a format byte,
// then AES-256-GCM with a random nonce over the record's JSON, with the format
// byte, bucket and key as additional data: a value copied under another key
// does not open. meta holds a sealed marker that makes Open fail with
// ErrWrongKey instead of serving errors on every read.
//
// Connection versions are sealed inside the record and drawn from the
// bucket's sequence, so a version is never reused, not even by a connection
// deleted and created again.
//
// A lease is held until Release or Close (renewal cannot fail in-process, so
// ttl never runs out); Lost closes only when the store is closed. Publish
// never blocks: a subscriber more than 256 changes behind loses changes and
// then receives one Change with an empty Key.Account, meaning "reload all".
package embedded
