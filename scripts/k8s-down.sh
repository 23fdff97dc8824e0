#!/usr/bin/env bash
# `just k8s-down`: stops the cluster of `just k8s-up` and leaves the machine as it was: no
# process, mount, network namespace, bridge, route, iptables or nftables rule, cgroup or
# state directory of the cluster's remains. Safe to run when nothing is up. The caches of
# ~/.cache/taskmesh (binaries, image tarballs) stay.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/k8s/env.sh
. scripts/k8s/env.sh
started=$SECONDS
[ "$(id -u)" -eq 0 ] || { k8s_log "run as root"; exit 1; }
export PATH="$K8S_BIN:$PATH"

pid_of() { cat "$K8S_RUN/$1.pid" 2>/dev/null || true; }

# stop NAME: SIGTERM, then SIGKILL after 10 s.
stop() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$K8S_RUN/$1.pid"; return 0; }
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$K8S_RUN/$1.pid"
}

# Pods first, through the kubelet, so that each sandbox's network is torn down by its CNI
# plugins (veth, IP, iptables rules) rather than left behind. Nothing recreates them once
# the controller manager and scheduler are gone.
if kill -0 "$(pid_of kubelet)" 2>/dev/null && kubectl get --raw /readyz >/dev/null 2>&1; then
  stop kube-controller-manager
  stop kube-scheduler
  kubectl delete pods --all --all-namespaces --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
  for _ in $(seq 120); do
    [ -z "$(ctr tasks ls -q 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
stop kubelet
stop kube-proxy
# Whatever the kubelet did not stop: its tasks, then containerd and its shims.
if ctr version >/dev/null 2>&1; then
  for task in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
fi
stop containerd
pkill -9 -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCKET" 2>/dev/null || true
stop kube-controller-manager
stop kube-scheduler
stop kube-apiserver
stop etcd

# Mounts under the cluster's directories (overlays, secrets, shm), innermost first.
awk -v a="$K8S_STATE" -v b="$K8S_RUN" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 {print $5}' \
  /proc/self/mountinfo | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done

# Network namespaces the runtime made (cni-*), unless they were there before k8s-up.
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
  grep -qx "$ns" "$K8S_RUN/netns.before" 2>/dev/null || ip netns delete "$ns" 2>/dev/null || true
done
ip link delete "$POD_BRIDGE" 2>/dev/null || true

# iptables: every chain the kubelet, kube-proxy and the CNI plugins made (KUBE-*, CNI-*),
# and every rule that jumps to one, in every table, for IPv4 and IPv6.
for tool in iptables ip6tables; do
  "$tool-save" 2>/dev/null | python3 -c '
import re, sys
ours = re.compile(r"^:?(KUBE-|CNI-)|-j (KUBE-|CNI-)|-A (KUBE-|CNI-)")
sys.stdout.write("".join(l for l in sys.stdin if not ours.search(l)))' | "$tool-restore" 2>/dev/null || true
done

scripts/k8s/guard.sh down

# nftables tables that appeared with the cluster (iptables-nft's, emptied above).
before="$(mktemp)"
cp "$K8S_RUN/machine-state.before" "$before" 2>/dev/null || : > "$before"
if [ -s "$before" ]; then
  comm -13 <(grep '^nft table ' "$before" | sort) <(scripts/k8s/machine-state.sh | grep '^nft table ' | sort) \
    | while read -r _ _ family table; do nft delete table "$family" "$table" 2>/dev/null || true; done
fi

# cgroups the kubelet made (cgroupfs driver), leaves first.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy/kubepods" ] && find "$hierarchy/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done

# Directories the kubelet, containerd and CNI create outside their configured roots, if
# k8s-up found them absent.
while read -r dir; do
  [ -n "$dir" ] && rm -rf "$dir"
done 2>/dev/null < "$K8S_RUN/created-dirs" || true
rm -rf "$K8S_STATE" "$K8S_RUN"

# The machine as k8s-up found it: anything else is named, and fails the command.
if [ -s "$before" ]; then
  left="$(diff <(cat "$before") <(scripts/k8s/machine-state.sh) | grep '^[<>]' || true)"
  rm -f "$before"
  if [ -n "$left" ]; then
    k8s_log "the machine differs from before k8s-up (< before, > now):"
    echo "$left" >&2
    exit 1
  fi
  k8s_log "cluster down in $((SECONDS - started))s; the machine is as k8s-up found it"
else
  rm -f "$before"
  k8s_log "cluster down in $((SECONDS - started))s"
fi
