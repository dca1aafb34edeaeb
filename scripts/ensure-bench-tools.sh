#!/usr/bin/env bash
# wrk and nginx-light for `make bench-proxy`, valgrind for its instructions
# mode: Debian packages, installed when absent and this is root with apt;
# otherwise one line saying what to install.
set -euo pipefail
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-bench-tools: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "ensure-bench-tools: install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
exit 1
