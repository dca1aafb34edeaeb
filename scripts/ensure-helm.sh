#!/usr/bin/env bash
# Prints the path of a Helm 3 binary for `make chart-check`: `helm` on the PATH
# when it is the pinned version, else a cached build, else it builds Helm from
# the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@<version>`; about 5
# minutes and ~1 GB of modules the first time, instant afterwards) and caches
# it outside the repository, as scripts/ensure-vault.sh does for Vault.
set -euo pipefail
# The project's Go (see the Makefile); the go command fetches it once.
export GOTOOLCHAIN=go1.27.3
version=${HELM_VERSION:-v3.22.0}
if command -v helm >/dev/null 2>&1 && helm version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  command -v helm
  exit 0
fi
cache=${TOKENBROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbroker}
bin="$cache/helm-$version/helm"
if [ ! -x "$bin" ]; then
  echo "ensure-helm: building Helm $version into $bin (first time only)" >&2
  mkdir -p "$(dirname "$bin")"
  tmp=$(mktemp -d "$(dirname "$bin")/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # Outside any module, so that the repository's go.mod plays no part; it
  # builds with the project's Go (GOTOOLCHAIN above). The -X flags are
  # those of Helm's own Makefile: the version, and the Kubernetes version that
  # `helm template` and `helm lint` assume (.Capabilities.KubeVersion, the
  # deprecation checks), taken from the k8s.io/client-go that Helm builds with
  # (v0.37.x is Kubernetes 1.37); without them Helm assumes Kubernetes 1.20.
  gomod=$(cd "$tmp" && GOFLAGS= go mod download -json "helm.sh/helm/v3@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  k8s=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")
  [ -n "$k8s" ] || { echo "ensure-helm: no k8s.io/client-go in $gomod" >&2; exit 1; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s"
  done
  (cd "$tmp" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$tmp" \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version") >&2
  mv "$tmp/helm" "$bin"
fi
echo "$bin"
