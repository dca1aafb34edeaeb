#!/usr/bin/env bash
# Prints the path of a local Go vulnerability database for `make vulncheck`
# (govulncheck -db file://<path>): the OSV reports of the golang.org/x/vulndb
# module, fetched from the Go module proxy (`go mod download`), indexed into
# the v1 database layout (index/db.json, index/modules.json, ID/GO-*.json) by
# that module's own cmd/indexdb, and cached outside the repository, as
# scripts/ensure-helm.sh does for Helm. About 4 minutes the first time (the
# module and indexdb's dependencies), instant afterwards. VULNDB_VERSION picks
# another snapshot of the database.
set -euo pipefail
# The project's Go (see the Makefile); the go command fetches it once.
export GOTOOLCHAIN=go1.27.3
version=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
cache=${TOKENBROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbroker}
db="$cache/vulndb-$version"
if [ ! -f "$db/index/db.json" ] || [ ! -f "$db/index/modules.json" ]; then
  echo "ensure-vulndb: indexing golang.org/x/vulndb@$version into $db (first time only)" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/vulndb-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # Outside any module, so that the repository's go.mod plays no part.
  dir=$(cd "$tmp" && GOFLAGS= go mod download -json "golang.org/x/vulndb@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -d "$dir/data/osv" ] || { echo "ensure-vulndb: no data/osv in golang.org/x/vulndb@$version" >&2; exit 1; }
  (cd "$tmp" && GOFLAGS=-buildvcs=false go run "golang.org/x/vulndb/cmd/indexdb@$version" \
    -vulns "$dir/data/osv" -out "$tmp/db") >&2
  [ -f "$tmp/db/index/modules.json" ] || { echo "ensure-vulndb: indexdb wrote no index" >&2; exit 1; }
  rm -rf "$db"
  mv "$tmp/db" "$db"
fi
echo "$db"
