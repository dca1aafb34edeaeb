// Package vaultstore keeps connections and per-account OAuth clients in a
// HashiCorp Vault KV v2 mount: the production home of tokenbroker's secrets
// (broker.ConnectionStore and broker.ClientStore). States, leases, change
// notifications and the status index live in Redis, not here.
//
// # Layout
//
// One KV v2 secret per connection and per client, under Options.Mount and
// Options.Prefix (defaults "secret" and "tokenbroker"):
//
//	<mount>/data/<prefix>/connections/<account>/<vendor>/app            app-level connection
//	<mount>/data/<prefix>/connections/<account>/<vendor>/users/<user>   user-level connection
//	<mount>/data/<prefix>/clients/<account>/<vendor>                    the account's own OAuth client
//
// Account, vendor and user come from callers (JWT claims, URL paths), so each
// is one path segment in unpadded base64url (RFC 4648 §5): the alphabet has no
// "/" and no ".", so no value can add a segment, climb with "..", or collide
// with another value, and the fixed words "app", "users", "connections",
// "clients" can never be produced by a caller. The body is the connection's
// JSON (the broker.Connection fields); its version is the KV v2 version.
//
// # How to find a connection (operators)
//
// Encode each part, then read it:
//
//	enc() { printf %s "$1" | basenc --base64url | tr -d '='; }
//	vault kv get -mount=secret "tokenbroker/connections/$(enc acme)/$(enc servicenow)/app"
//	vault kv get -mount=secret "tokenbroker/connections/$(enc acme)/$(enc servicenow)/users/$(enc user-42)"
//
// Every key's metadata also carries the identity in clear text
// (custom_metadata account, vendor, user), so `vault kv metadata get` on a
// listed key says whose it is.
//
// # Versions, check-and-set and delete
//
// Every write is a check-and-set on the version the writer read, and every
// key is created with cas_required=true, so nothing (not even an operator's
// `vault kv put` without -cas) can write a key blindly. A delete writes a
// tombstone version by check-and-set and then destroys the data of every
// version up to it; the metadata stays, so the version numbers of a key never
// repeat and a writer holding a version from before a disconnect can never
// write again. See DeleteConnection. Use the broker's disconnect, not
// `vault kv delete` or `vault kv metadata delete`, which bypass both rules.
package vaultstore
