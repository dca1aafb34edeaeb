#!/usr/bin/env bash
# Prints the path of a pinned Redocly CLI (the OpenAPI linter `make lint` runs
# on docs/openapi.yaml), installed once from npm into the cache folder
# ($TOKENBROKER_CACHE, default ~/.cache/tokenbroker) and reused afterwards.
# Needs Node.js and npm.
set -euo pipefail
version=${REDOCLY_VERSION:-2.77.0}
cache=${TOKENBROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbroker}
dir="$cache/redocly-$version"
bin="$dir/node_modules/.bin/redocly"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null 2>&1 || { echo "ensure-redocly: make lint needs Node.js and npm to install @redocly/cli (Debian/Ubuntu: apt-get install npm)" >&2; exit 1; }
  echo "ensure-redocly: installing @redocly/cli@$version into $dir (first time only)" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$dir.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "@redocly/cli@$version" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
echo "$bin"
