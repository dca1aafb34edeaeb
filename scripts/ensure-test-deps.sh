#!/usr/bin/env bash
# What `make test` needs before it runs, set up or refused in one clear line:
# redis-server on the PATH and Chromium ($TOKENBROKER_CHROMIUM, default
# /usr/bin/chromium) are installed with apt-get when this runs as root on a
# system with apt, and Vault is built and cached by scripts/ensure-vault.sh.
# Prints the Vault binary's path on stdout; everything else goes to stderr.
# Exits non-zero when something is missing and cannot be installed, so that
# `make test` fails rather than testing less than CI (make test-short is the
# quick subset without them).
set -euo pipefail
# The project's Go (see the Makefile); the go command fetches it once.
export GOTOOLCHAIN=go1.27.3
cd "$(dirname "$0")/.."
chromium=${TOKENBROKER_CHROMIUM:-/usr/bin/chromium}

missing() {
  local m=()
  command -v redis-server >/dev/null 2>&1 || m+=(redis-server)
  [ -x "$chromium" ] || m+=(chromium)
  echo "${m[@]}"
}

need=$(missing)
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== make test: installing $need with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $need; } >&2
    need=$(missing)
  fi
fi
if [ -n "$need" ]; then
  where=""
  case " $need " in *" chromium "*) where=" (chromium is looked for at $chromium; TOKENBROKER_CHROMIUM names another)" ;; esac
  echo "make test needs $need: install it (Debian/Ubuntu: sudo apt-get install $need)$where, or run make test-short for the quick subset without it" >&2
  exit 1
fi
echo "== redis-server: $(redis-server --version | cut -d' ' -f1-3)" >&2
echo "== chromium: $("$chromium" --version 2>/dev/null || echo "$chromium")" >&2
vault=$(scripts/ensure-vault.sh)
echo "== vault: $("$vault" version)" >&2
echo "$vault"
