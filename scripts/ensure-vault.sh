#!/usr/bin/env bash
# Prints the path of a Vault binary for the tests: `vault` on the PATH when
# there is one, else a cached build, else it builds Vault from the Go module
# proxy (scripts/build-vault.sh) and caches it outside the repository.
#
# Everything lives under the cache folder ($TOKENBROKER_CACHE, default
# ~/.cache/tokenbroker): the binary, and the Go module download and build
# cache of the Vault build (go-mod/, go-build/), so that a second machine of
# the same kind given a copy of the folder (a CI cache) reuses the binary, or
# after a version bump most of the downloads and compiled packages. The first
# build downloads ~3.7 GB of modules and compiles ~2,500 packages: 10 to 25
# minutes on 2 cores; build-vault.sh prints its progress.
#
# Concurrent callers (parallel test packages, several checkouts) wait for one
# build instead of each starting their own.
set -euo pipefail
# The project's Go (see the Makefile); the go command fetches it once.
export GOTOOLCHAIN=go1.27.3
if command -v vault >/dev/null 2>&1; then
  command -v vault
  exit 0
fi
version=${VAULT_VERSION:-v1.21.4}
cache=${TOKENBROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbroker}
bin="$cache/vault-$version/vault"
mkdir -p "$(dirname "$bin")"
if [ ! -x "$bin" ] && command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/vault-$version.lock"
  if ! flock -n 9; then
    echo "ensure-vault: another Vault build is running; waiting for it" >&2
    flock 9
  fi
fi
if [ ! -x "$bin" ]; then
  echo "ensure-vault: building Vault $version into $bin (first time only)" >&2
  tmp=$(mktemp "$bin.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  GOMODCACHE=${VAULT_GOMODCACHE:-$cache/go-mod} GOCACHE=${VAULT_GOCACHE:-$cache/go-build} \
    VAULT_VERSION=$version "$(dirname "$0")/build-vault.sh" "$tmp" >&2
  mv "$tmp" "$bin"
fi
echo "$bin"
