#!/usr/bin/env bash
# Keeps the local cluster's traffic inside this machine.
#   guard.sh up        before any pod starts: an nftables table that drops whatever is
#                      forwarded to or from the outside interface, pod-sourced packets
#                      leaving by it, and inbound packets on it for the cluster's ports and
#                      ranges; blackhole routes for the service range and the pod supernet
#                      (the pod bridge's own /24 is more specific, so pods still reach each
#                      other); IP forwarding on (its previous value is kept for `down`).
#   guard.sh down      removes all of it and restores IP forwarding.
#   guard.sh drops     prints the number of packets the guard dropped (0 is the promise).
set -euo pipefail
# shellcheck source=scripts/k8s/env.sh
. "$(dirname "$0")/env.sh"

TABLE=taskmesh_guard

up() {
  local ext
  ext="$(k8s_outside_interface)"
  [ -n "$ext" ] || { k8s_log "guard: no default route, so no outside interface to shut"; ext=none; }
  # Refuse to start over ranges the machine already routes: they would not stay private.
  for range in "$SERVICE_CIDR" "$POD_SUPERNET" "$NODE_IP/32"; do
    if ip -o route show match "$range" | grep -v -E '^(default|blackhole)' | grep -q .; then
      k8s_log "guard: $range is already routed on this machine ($(ip -o route show match "$range" | head -1)); set other ranges in scripts/k8s/env.sh"
      exit 1
    fi
  done
  mkdir -p "$K8S_RUN"
  [ -f "$K8S_RUN/ip_forward.before" ] || cat /proc/sys/net/ipv4/ip_forward > "$K8S_RUN/ip_forward.before"
  nft delete table inet "$TABLE" 2>/dev/null || true
  # Priority -200 in the filter hooks runs before kube-proxy's and any other table's rules;
  # a drop in any base chain is final.
  nft -f - <<EOF
table inet $TABLE {
  set cluster_ranges {
    type ipv4_addr; flags interval
    elements = { $POD_SUPERNET, $SERVICE_CIDR, $NODE_IP }
  }
  chain forward {
    type filter hook forward priority -200; policy accept;
    iifname "$ext" counter drop comment "forwarded from outside"
    oifname "$ext" counter drop comment "forwarded to outside"
  }
  chain output {
    type filter hook output priority -200; policy accept;
    oifname "$ext" ip saddr @cluster_ranges counter drop comment "cluster-sourced, leaving"
  }
  chain postrouting {
    type filter hook postrouting priority -200; policy accept;
    oifname "$ext" ip saddr @cluster_ranges counter drop comment "cluster-sourced, leaving"
  }
  chain input {
    type filter hook input priority -200; policy accept;
    iifname "$ext" ip daddr @cluster_ranges counter drop comment "to the cluster, from outside"
    iifname "$ext" tcp dport { $APISERVER_PORT, $ETCD_CLIENT_PORT, $ETCD_PEER_PORT, $KUBELET_PORT, 10249, 10256, 10257, 10259, $NODEPORT_RANGE } counter drop comment "cluster ports, from outside"
  }
}
EOF
  ip route replace blackhole "$SERVICE_CIDR"
  ip route replace blackhole "$POD_SUPERNET"
  ip addr show dev lo | grep -q " $NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo
  echo 1 > /proc/sys/net/ipv4/ip_forward
  # Pod-to-Service traffic between pods on one bridge goes through kube-proxy's rules only
  # when bridged packets pass iptables.
  if [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    [ -f "$K8S_RUN/bridge-nf.before" ] || cat /proc/sys/net/bridge/bridge-nf-call-iptables > "$K8S_RUN/bridge-nf.before"
    echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
  fi
}

down() {
  nft delete table inet "$TABLE" 2>/dev/null || true
  ip route del blackhole "$SERVICE_CIDR" 2>/dev/null || true
  ip route del blackhole "$POD_SUPERNET" 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  if [ -f "$K8S_RUN/ip_forward.before" ]; then
    cat "$K8S_RUN/ip_forward.before" > /proc/sys/net/ipv4/ip_forward
    rm -f "$K8S_RUN/ip_forward.before"
  fi
  if [ -f "$K8S_RUN/bridge-nf.before" ]; then
    cat "$K8S_RUN/bridge-nf.before" > /proc/sys/net/bridge/bridge-nf-call-iptables
    rm -f "$K8S_RUN/bridge-nf.before"
  fi
}

drops() {
  nft list table inet "$TABLE" | awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1)} END {print n + 0}'
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  drops) drops ;;
  *) echo "usage: $0 up|down|drops" >&2; exit 2 ;;
esac
