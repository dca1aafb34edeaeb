// Package redisstore is the Redis half of tokenbroker's production store: what
// the fleet shares and what is short-lived. Vault holds the connections'
// secrets; everything here can be rebuilt from Vault (states and leases are
// short-lived by nature, the index by `broker reindex`).
//
// It implements broker.StateStore, broker.Leaser, broker.Notifier and
// broker.Indexer with go-redis v9, on a single node, Sentinel or Cluster
// (see NewClient).
//
// Keys, all under Options.Prefix (P, default "tokenbroker"):
//
//	P:state:<hex SHA-256 of the state id>   sealed OAuth state, PX ttl
//	P:lease:<name>                          random owner token, PX ttl
//	P:changes                               pub/sub channel of broker.Change JSON
//	P:idx:{<account>|<vendor>}:app          app-level connection JSON, tokens blanked
//	P:idx:{<account>|<vendor>}:users        SET of user ids with a user-level connection
//	P:idx:{<account>|<vendor>}:flagged      SET of those flagged refreshTokenExpired
//
// The state id is the OAuth callback's credential, so only its hash names a
// key. States hold the PKCE verifier, so their values are sealed with
// AES-256-GCM, bound to their key. Nothing else in Redis is secret: leases
// hold random owner tokens, changes and the index hold identities and flags,
// never a token string.
//
// Redis 6.2 or later is required (GETDEL takes a state in one step).
//
// In index keys, account and vendor are query-escaped (so neither contains
// '|', '{', '}' or ':') and wrapped in a Cluster hash tag: the three keys of
// one account and vendor live in one slot, so that a write can be one
// MULTI/EXEC and a Summary one pipeline to one node.
package redisstore
