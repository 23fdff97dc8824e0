#!/usr/bin/env bash
# Provides everything `just k8s-up` runs, built or installed from the package registries
# only, cached outside the repo and keyed by version, and prints the directory that holds
# (links to) all of it:
#   - Debian: containerd, runc, the CNI plugins, umoci, conntrack, iptables, nftables;
#   - the k8s.io/kubernetes module (scripts/setup-kube-apiserver.sh, whose Go build cache
#     the kube-apiserver of the chart check already warmed): kube-apiserver, etcd, kubelet,
#     kube-proxy, kube-controller-manager, kube-scheduler, kubectl;
#   - CoreDNS from its Go module (scripts/k8s/coredns: its own server, a cluster DNS's
#     plugins);
#   - the Dapr control plane from the github.com/dapr/dapr module daprd comes from
#     (scripts/setup-daprd.sh): operator, injector, sentry, placement, scheduler;
#   - helm (scripts/setup-chart-tools.sh);
#   - the pause image's binary, from Kubernetes' own build/pause/linux/pause.c.
# A line per step says what it did and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
# shellcheck source=scripts/k8s/env.sh
. scripts/k8s/env.sh
COREDNS_VERSION="$(sed -n 's#^require github.com/coredns/coredns \(v[0-9.]*\)$#\1#p' scripts/k8s/coredns/go.mod)"
PAUSE_VERSION=3.10
OUT="$K8S_BIN"
mkdir -p "$OUT"

step() { # step NAME COMMAND...: runs a step, then reports its duration.
  local step_name=$1 step_started=$SECONDS
  shift
  "$@"
  echo "setup-k8s: $step_name ($((SECONDS - step_started))s)" >&2
}

debian_packages() {
  local want=(containerd runc containernetworking-plugins umoci conntrack iptables nftables
    iproute2 openssl gcc libc6-dev)
  local missing=()
  for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-k8s: installing ${missing[*]} from the Debian packages" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
  # The package starts a system containerd; the cluster runs its own, on its own socket.
  $sudo systemctl disable --now containerd >/dev/null 2>&1 || $sudo service containerd stop \
    >/dev/null 2>&1 || true
}

kubernetes() {
  local bin
  bin="$(scripts/setup-kube-apiserver.sh build kubelet kube-proxy kube-controller-manager \
    kube-scheduler kubectl)"
  for cmd in kube-apiserver etcd kubelet kube-proxy kube-controller-manager kube-scheduler kubectl; do
    ln -sf "$bin/$cmd" "$OUT/$cmd"
  done
}

coredns() {
  local bin="$CACHE/coredns-$COREDNS_VERSION/bin"
  if [ ! -x "$bin/coredns" ]; then
    mkdir -p "$bin"
    echo "setup-k8s: building CoreDNS $COREDNS_VERSION; about 2 minutes cold on 2 cores" >&2
    (
      cd scripts/k8s/coredns
      CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw go build -p 2 -trimpath \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
        -o "$bin/coredns.tmp" . >&2
    )
    mv "$bin/coredns.tmp" "$bin/coredns"
  fi
  ln -sf "$bin/coredns" "$OUT/coredns"
}

dapr_control_plane() {
  local path
  for cmd in daprd operator injector sentry placement scheduler; do
    path="$(scripts/setup-daprd.sh "$cmd" --build)"
    ln -sf "$path" "$OUT/$cmd"
  done
}

helm_tool() {
  ln -sf "$(scripts/setup-chart-tools.sh)/helm" "$OUT/helm"
}

pause() {
  local bin="$CACHE/pause-$PAUSE_VERSION/bin"
  if [ ! -x "$bin/pause" ]; then
    scripts/setup-kube-apiserver.sh download
    mkdir -p "$bin"
    # As build/pause/Makefile does: a static binary with its version compiled in.
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-taskmesh" \
      -o "$bin/pause.tmp" "$CACHE/kubernetes-src-$KUBE_VERSION/build/pause/linux/pause.c"
    strip "$bin/pause.tmp"
    mv "$bin/pause.tmp" "$bin/pause"
  fi
  ln -sf "$bin/pause" "$OUT/pause"
}

step "Debian packages (containerd, runc, CNI plugins, umoci, nftables)" debian_packages
step "Kubernetes $KUBE_VERSION binaries" kubernetes
step "CoreDNS $COREDNS_VERSION" coredns
step "Dapr control plane" dapr_control_plane
step "helm" helm_tool
step "pause $PAUSE_VERSION" pause
echo "$OUT"
