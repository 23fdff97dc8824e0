#!/usr/bin/env bash
# Provides a real kube-apiserver and an etcd for it, built from the Go module proxy (no
# release downloads, no Docker), for scripts/check-chart-apiserver.sh. Prints the directory
# holding both binaries; progress goes to stderr. Both are built once and cached, keyed by
# version, so warm runs take no time. With the argument `download` it only fetches and
# prepares the sources (network, little CPU) and prints nothing. `build CMD...` also builds
# the named commands of the kubernetes module (kubelet, kubectl, ...) into the same
# directory, with the same flags, for scripts/setup-k8s.sh.
set -euo pipefail

# Kubernetes v1.34.2: the k8s.io/* v0.34.2 libraries it is built from are the ones the chart's
# other tools were checked against. etcd v3.6.5 is the version that Kubernetes v1.34.2 itself
# pins for its integration tests (hack/lib/etcd.sh in the kubernetes module).
KUBE_VERSION="${KUBE_VERSION:-v1.34.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
BIN="$CACHE/kube-apiserver-$KUBE_VERSION+etcd-$ETCD_VERSION/bin"
MODE="${1:-build}" # build | download
shift || true
CMDS=(kube-apiserver "$@")

missing=""
for cmd in etcd "${CMDS[@]}"; do [ -x "$BIN/$cmd" ] || missing+=" $cmd"; done
if [ "$MODE" = build ] && [ -z "$missing" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "setup-kube-apiserver: Go is required" >&2; exit 1; }
# -mod=mod: the go.mod files are edited below, so go.sum gains lines for the published
# modules that replace the in-repo ones (checked against the checksum database as usual).
# GOWORK=off: the kubernetes module ships a go.work naming its (absent) staging/ dirs.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=mod -modcacherw -buildvcs=false"

# Copies a module from the module cache into a writable directory (the cache is read-only).
# $1 module@version, $2 destination; the destination appears only when complete.
copy_module() {
  local dir
  echo "setup-kube-apiserver: downloading $1 from the Go module proxy" >&2
  dir=$(go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$2.tmp" && cp -r "$dir" "$2.tmp" && chmod -R u+w "$2.tmp"
}

# Lists the replace directives of the go.mod in the current directory whose target is a
# local path starting with $1, as "module" lines.
local_replaces() {
  go mod edit -json | python3 -c '
import json, sys
prefix = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith(prefix):
        print(r["Old"]["Path"])' "$1"
}

# kubernetes: its go.mod replaces the 31 k8s.io/* libraries with ./staging/src/k8s.io/*,
# which the module zip does not contain (nested modules are cut out of it), and its vendor/
# is incomplete for the same reason. Each library is published as its own module at
# v0.<minor>.<patch>, the same code, so the replaces are pointed there instead.
kube_src="$CACHE/kubernetes-src-$KUBE_VERSION"
if [ ! -f "$kube_src/go.mod" ]; then
  copy_module "k8s.io/kubernetes@$KUBE_VERSION" "$kube_src"
  (
    cd "$kube_src.tmp"
    rm -rf vendor go.work go.work.sum
    staged=$(local_replaces ./staging/)
    [ -n "$staged" ] || { echo "setup-kube-apiserver: no staging replaces in go.mod" >&2; exit 1; }
    edits=()
    for m in $staged; do edits+=("-dropreplace=$m" "-replace=$m=$m@v0.${KUBE_VERSION#v1.}"); done
    go mod edit "${edits[@]}"
    echo "setup-kube-apiserver: resolving kube-apiserver's dependencies" >&2
    go list -deps ./cmd/kube-apiserver >/dev/null
  )
  rm -rf "$kube_src" && mv "$kube_src.tmp" "$kube_src"
fi

# etcd: the binary is go.etcd.io/etcd/server/v3's root package. Its go.mod replaces the
# sibling modules (api, client/pkg, client/v3, pkg) with ../ paths of the etcd repository,
# which are not in the module zip; it already requires them at the same version, so dropping
# the replaces uses the published modules.
etcd_src="$CACHE/etcd-server-src-$ETCD_VERSION"
if [ ! -f "$etcd_src/go.mod" ]; then
  copy_module "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$etcd_src"
  (
    cd "$etcd_src.tmp"
    edits=()
    for m in $(local_replaces ../); do edits+=("-dropreplace=$m"); done
    [ ${#edits[@]} -eq 0 ] || go mod edit "${edits[@]}"
    echo "setup-kube-apiserver: resolving etcd's dependencies" >&2
    go list -deps . >/dev/null
  )
  rm -rf "$etcd_src" && mv "$etcd_src.tmp" "$etcd_src"
fi

[ "$MODE" = download ] && exit 0

mkdir -p "$BIN"
if [ ! -x "$BIN/etcd" ]; then
  echo "setup-kube-apiserver: building etcd $ETCD_VERSION; a cold build takes about a minute on 2 cores" >&2
  started=$SECONDS
  (
    cd "$etcd_src"
    # As etcd's own build.sh: static, trimmed paths.
    go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" . >&2
  )
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  echo "setup-kube-apiserver: built etcd in $((SECONDS - started))s" >&2
fi

minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
# The version variables hack/lib/version.sh sets: without them the server reports
# v0.0.0-master, and helm would refuse the chart's kubeVersion constraint (>=1.27.0-0).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for cmd in "${CMDS[@]}"; do
  [ -x "$BIN/$cmd" ] && continue
  [ -d "$kube_src/cmd/$cmd" ] || { echo "setup-kube-apiserver: no command $cmd in k8s.io/kubernetes" >&2; exit 1; }
  echo "setup-kube-apiserver: building $cmd $KUBE_VERSION (kube-apiserver takes about 3 minutes cold on 2 cores, kubelet about 5)" >&2
  started=$SECONDS
  (
    cd "$kube_src"
    # The tags of Kubernetes' own release builds (hack/lib/golang.sh): notest, and
    # grpcnotrace to drop golang.org/x/net/trace.
    go build -p 2 -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" \
      -o "$BIN/$cmd.tmp" "./cmd/$cmd" >&2
  )
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  echo "setup-kube-apiserver: built $cmd in $((SECONDS - started))s" >&2
done
echo "$BIN"
