#!/usr/bin/env bash
# What of the machine a cluster of `just k8s-up` could change, one line per fact, sorted:
# its processes, mounts, network namespaces, links, addresses, routes, iptables rules (no
# counters), nftables tables, the sysctls the guard sets, cgroups and directories.
# k8s-up saves it before it starts; k8s-down compares and names what is left.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/k8s/env.sh
. scripts/k8s/env.sh

{
  # Processes by name: only the cluster's, so that the rest of the machine may come and go.
  ps -eo comm= | grep -E '^(etcd|kube-|kubelet|containerd|runc|pause|coredns|daprd|operator|injector|sentry|placement|scheduler)' \
    | sed 's/^/process /' || true
  awk '{print "mount " $5}' /proc/self/mountinfo
  ip netns list 2>/dev/null | awk '{print "netns " $1}'
  ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
  ip -o addr show | awk '{print "addr " $2 " " $4}'
  ip route show table all | grep -v -E '^(local|broadcast|multicast) |^fe80::|^ff00::' | sed 's/^/route /' || true
  for tool in iptables ip6tables; do
    "$tool-save" 2>/dev/null | grep -E '^-A ' | sed "s/^/$tool /" || true
  done
  nft list tables 2>/dev/null | sed 's/^/nft /'
  for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    echo "sysctl $key=$(sysctl -n "$key" 2>/dev/null || echo absent)"
  done
  find /sys/fs/cgroup -maxdepth 2 -name 'kubepods*' 2>/dev/null | sed 's/^/cgroup /'
  for dir in "$K8S_STATE" "$K8S_RUN" /var/log/containers /var/log/pods /var/lib/kubelet \
    /var/lib/cni /run/netns /etc/cni; do
    if [ -e "$dir" ]; then echo "path $dir"; fi
  done
} | sort
