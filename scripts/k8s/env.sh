# The local cluster's layout, sourced by scripts/k8s-up.sh, k8s-down.sh and test-k8s.sh.
# Every address range stays inside this machine: the node's address lives on `lo`, pods on
# a bridge of their own, and scripts/k8s/guard.sh drops anything that would leave.

K8S_STATE="${TASKMESH_K8S_STATE:-/var/lib/taskmesh-k8s}" # etcd, PKI, kubelet, containerd
K8S_RUN="${TASKMESH_K8S_RUN:-/run/taskmesh-k8s}"         # sockets, pids, runc state
K8S_LOGS="$K8S_STATE/logs"
K8S_PKI="$K8S_STATE/pki"

NODE_NAME=taskmesh-node
# A local, non-loopback address: the API server advertises it to pods (the `kubernetes`
# Service), and the kubelet registers the node with it.
NODE_IP=10.245.0.1
POD_SUPERNET=10.244.0.0/16
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
POD_BRIDGE=taskmesh0
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local

APISERVER_PORT=6443
ETCD_CLIENT_PORT=2479
ETCD_PEER_PORT=2480
KUBELET_PORT=10250
# NodePorts exist on NODE_IP only (kube-proxy's nodePortAddresses).
NODEPORT_RANGE=30000-32767

CONTAINERD_SOCKET="$K8S_RUN/containerd.sock"
export CONTAINERD_ADDRESS="$CONTAINERD_SOCKET" CONTAINERD_NAMESPACE=k8s.io
export KUBECONFIG="$K8S_STATE/admin.kubeconfig"

DAPR_NAMESPACE=dapr-system
# Images made by scripts/k8s/build-images.sh and imported into containerd.
LOCAL_REGISTRY=localhost:5000
PAUSE_IMAGE=registry.k8s.io/pause:3.10

# The interface the machine's default route leaves by: what the guard shuts.
k8s_outside_interface() {
  ip -o route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
}

k8s_log() { echo "k8s: $*" >&2; }

# Where scripts/setup-k8s.sh puts (links to) the cluster's binaries, keyed by the
# Kubernetes version scripts/setup-kube-apiserver.sh builds.
KUBE_VERSION="$(sed -n 's/^KUBE_VERSION="\${KUBE_VERSION:-\(v[0-9.]*\)}"$/\1/p' scripts/setup-kube-apiserver.sh)"
K8S_BIN="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}/k8s-node-$KUBE_VERSION/bin"

# The resident memory (MB) of the cluster's host processes: etcd, the control plane,
# containerd, the kubelet and kube-proxy.
k8s_host_rss_mb() {
  local rss=0 pid process
  for process in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    pid="$(cat "$K8S_RUN/$process.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo $((rss / 1024))
}
