#!/usr/bin/env bash
# Prints the path of a Vault binary for the tests: `vault` on the PATH when
# there is one, else a cached build, else it builds Vault from the Go module
# proxy (scripts/build-vault.sh; ~9 minutes and ~3.7 GB of modules the first
# time, seconds afterwards) and caches it outside the repository.
set -euo pipefail
if command -v vault >/dev/null 2>&1; then
  command -v vault
  exit 0
fi
version=${VAULT_VERSION:-v1.21.4}
cache=${TOKENBROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbroker}
bin="$cache/vault-$version/vault"
if [ ! -x "$bin" ]; then
  echo "ensure-vault: building Vault $version into $bin (first time only)" >&2
  mkdir -p "$(dirname "$bin")"
  VAULT_VERSION=$version "$(dirname "$0")/build-vault.sh" "$bin.tmp" >&2
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
