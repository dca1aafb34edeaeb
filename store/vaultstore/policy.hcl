# Vault policy for tokenbroker: everything it needs, and nothing else.
#
# It assumes the defaults BROKER_VAULT_MOUNT=secret (a KV v2 mount) and
# BROKER_VAULT_PREFIX=tokenbroker; replace "secret/" and "tokenbroker/" in
# every path below if you change them. Load it with
#
#   vault policy write tokenbroker policy.hcl
#
# and attach it to the broker's AppRole role or Kubernetes role
# (token_policies=tokenbroker). Token renewal (auth/token/renew-self) and the
# start-up check (auth/token/lookup-self) come from Vault's built-in
# "default" policy, which tokens carry unless token_no_default_policy is set.
#
# store/vaultstore's tests load this file and run the store on a token that
# has only it, so a missing capability fails the build.

# Connection and client records: read, create, and new versions, always by
# check-and-set (every key has cas_required=true). A delete writes a
# tombstone version ("update"); the broker never uses the data "delete"
# endpoint, which would not destroy anything.
path "secret/data/tokenbroker/*" {
  capabilities = ["create", "read", "update"]
}

# Metadata: "read" for versions during a delete, and for /readyz;
# "create"/"update" to set max_versions, cas_required and the clear-text
# identity on each new key; "list" to walk accounts, vendors and users;
# "delete" to remove an OAuth client's key with its whole history.
path "secret/metadata/tokenbroker/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Destroy the data of a deleted connection's versions: no token stays in
# Vault's history.
path "secret/destroy/tokenbroker/*" {
  capabilities = ["update"]
}
