#!/usr/bin/env bash
# `just k8s-up`: a real single-node Kubernetes cluster on this machine, built from the
# package registries only (scripts/setup-k8s.sh), with the Dapr control plane installed by
# Dapr's own chart and the Taskmesh images imported, ready for `helm install`.
#
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, the kubelet
# and kube-proxy run as host processes (logs in $K8S_STATE/logs); CoreDNS and Dapr run as
# pods. RBAC and the Node authorizer are on. Every range stays inside the machine
# (scripts/k8s/guard.sh, set up before any pod starts). Prints a line per step with its
# duration. `just k8s-down` undoes all of it. Idempotent: a running cluster is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
# shellcheck source=scripts/k8s/env.sh
. scripts/k8s/env.sh
# shellcheck source=scripts/k8s/image-lib.sh
. scripts/k8s/image-lib.sh

[ "$(id -u)" -eq 0 ] || { k8s_log "run as root (containerd, the kubelet and the guard need it)"; exit 1; }
total_started=$SECONDS

# Its locals have names no step uses: bash's scoping is dynamic, and a step's own `name`
# would overwrite them.
step() { # step NAME COMMAND...: runs a step, then reports its duration.
  local step_name=$1 step_started=$SECONDS
  shift
  k8s_log "$step_name ..."
  "$@"
  k8s_log "$step_name: done in $((SECONDS - step_started))s"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      k8s_log "$what did not come up; last lines of the logs:"
      tail -n 15 "$K8S_LOGS"/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
}

# daemon NAME COMMAND...: starts a host process in its own session, logging to a file.
daemon() {
  local name=$1
  shift
  if [ -f "$K8S_RUN/$name.pid" ] && kill -0 "$(cat "$K8S_RUN/$name.pid")" 2>/dev/null; then
    return 0
  fi
  setsid "$@" >>"$K8S_LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$K8S_RUN/$name.pid"
}

binaries() {
  BIN="$(scripts/setup-k8s.sh)"
  export PATH="$BIN:$PATH"
}

prepare() {
  local before=""
  # What k8s-down must leave as it finds it: taken before anything of the cluster exists.
  [ -f "$K8S_RUN/created-dirs" ] || before="$(scripts/k8s/machine-state.sh)"
  mkdir -p "$K8S_STATE" "$K8S_RUN" "$K8S_LOGS" "$K8S_STATE/etcd"
  chmod 700 "$K8S_STATE/etcd"
  # What k8s-down may remove besides its own directories: the paths the kubelet, containerd
  # and the CNI plugins create outside their configured roots, when absent now, and the
  # network namespaces that exist now (it removes only newer ones).
  if [ -n "$before" ]; then
    echo "$before" > "$K8S_RUN/machine-state.before"
    for dir in /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni /run/netns /etc/cni; do
      [ -e "$dir" ] || echo "$dir"
    done > "$K8S_RUN/created-dirs"
    ip netns list 2>/dev/null | awk '{print $1}' > "$K8S_RUN/netns.before"
  fi
  scripts/k8s/guard.sh up
  scripts/k8s/pki.sh
}

etcd_server() {
  daemon etcd etcd --name "$NODE_NAME" --data-dir "$K8S_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 2147483648
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

control_plane() {
  local pki="$K8S_PKI"
  # The API server listens on the node's address only; the guard keeps it off the outside
  # interface anyway. Aggregator routing sends webhook calls (Dapr's injector) to endpoint
  # IPs: the host cannot reach ClusterIPs, whose range is blackholed.
  daemon kube-apiserver kube-apiserver \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range "$NODEPORT_RANGE" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --anonymous-auth=true \
    --client-ca-file "$pki/ca.crt" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --enable-aggregator-routing=true \
    --profiling=false --v=1
  wait_for kube-apiserver 120 kubectl get --raw /readyz
  daemon kube-controller-manager kube-controller-manager \
    --kubeconfig "$K8S_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$K8S_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$K8S_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_SUPERNET" \
    --allocate-node-cidrs=false --profiling=false --v=1
  daemon kube-scheduler kube-scheduler \
    --kubeconfig "$K8S_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$K8S_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$K8S_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
}

container_runtime() {
  mkdir -p "$K8S_STATE/cni/net.d" "$K8S_STATE/containerd" "$K8S_RUN/containerd"
  cat > "$K8S_STATE/cni/net.d/10-taskmesh.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "taskmesh",
  "plugins": [
    {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$K8S_STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  # restrict_oom_score_adj: root in this VM lacks CAP_SYS_RESOURCE, so runc cannot lower a
  # container's OOM score and every sandbox would fail to start.
  cat > "$K8S_STATE/containerd.toml" <<EOF
version = 2
root = "$K8S_STATE/containerd"
state = "$K8S_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$K8S_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$K8S_STATE/cni/net.d"
EOF
  daemon containerd containerd --config "$K8S_STATE/containerd.toml"
  wait_for containerd 60 ctr version
}

# Images the cluster itself runs: the pause image, CoreDNS and the Dapr control plane.
cluster_images() {
  local rootfs tar cmd name
  rootfs="$(mktemp -d)"
  img_rootfs_new "$rootfs/pause"
  img_add_binary "$rootfs/pause" "$BIN/pause" /pause
  img_import "$PAUSE_IMAGE" "$(IMG_USER=65535:65535 img_build "$PAUSE_IMAGE" "$rootfs/pause" /pause)"

  img_rootfs_new "$rootfs/coredns"
  img_add_binary "$rootfs/coredns" "$BIN/coredns" /coredns
  img_import "$LOCAL_REGISTRY/coredns:$(coredns_version)" \
    "$(IMG_USER=65532:65532 img_build "$LOCAL_REGISTRY/coredns:$(coredns_version)" "$rootfs/coredns" /coredns)"

  # One image holding every Dapr binary at /, as Dapr's own images do, tagged once for each
  # name the chart asks for.
  img_rootfs_new "$rootfs/dapr"
  for cmd in daprd operator injector sentry placement scheduler; do
    img_add_binary "$rootfs/dapr" "$BIN/$cmd" "/$cmd"
  done
  tar="$(IMG_USER=65532:65532 img_build "$LOCAL_REGISTRY/dapr/daprd:$(dapr_version)" "$rootfs/dapr" /daprd)"
  for name in daprd operator injector sentry placement scheduler; do
    img_import "$LOCAL_REGISTRY/dapr/$name:$(dapr_version)" "$tar"
  done
  rm -rf "$rootfs"
}

taskmesh_images() {
  scripts/k8s/build-images.sh --import
}

coredns_version() { sed -n 's#^require github.com/coredns/coredns v\([0-9.]*\)$#\1#p' "$repo/scripts/k8s/coredns/go.mod"; }
dapr_version() { grep -m1 '^DAPR_VERSION=' "$repo/scripts/setup-daprd.sh" | grep -o '[0-9]*\.[0-9]*\.[0-9]*'; }

node_agents() {
  mkdir -p "$K8S_STATE/kubelet" "$K8S_STATE/pod-logs"
  # No nameserver: pods get cluster DNS only, and nothing resolves outside the cluster.
  : > "$K8S_STATE/resolv.conf"
  cat > "$K8S_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $K8S_PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $K8S_PKI/kubelet-serving.crt
tlsPrivateKeyFile: $K8S_PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: $K8S_STATE/resolv.conf
podCIDR: $POD_CIDR
podLogsDir: $K8S_STATE/pod-logs
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
EOF
  daemon kubelet kubelet --config "$K8S_STATE/kubelet.yaml" \
    --kubeconfig "$K8S_STATE/kubelet.kubeconfig" --root-dir "$K8S_STATE/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
  cat > "$K8S_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_SUPERNET
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $K8S_STATE/kube-proxy.kubeconfig}
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
EOF
  daemon kube-proxy kube-proxy --config "$K8S_STATE/kube-proxy.yaml" --v=1
  wait_for "the node" 120 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

cluster_dns() {
  sed -e "s#@DNS_SERVICE_IP@#$DNS_SERVICE_IP#" -e "s#@CLUSTER_DOMAIN@#$CLUSTER_DOMAIN#" \
    -e "s#@IMAGE@#$LOCAL_REGISTRY/coredns:$(coredns_version)#" scripts/k8s/coredns.yaml \
    | kubectl apply -f - >/dev/null
  kubectl -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null
}

dapr_control_plane() {
  local chart
  chart="$(go env GOMODCACHE)/github.com/dapr/dapr@v$(dapr_version)/charts/dapr"
  [ -d "$chart" ] || GOFLAGS=-modcacherw go mod download "github.com/dapr/dapr@v$(dapr_version)"
  if helm status dapr -n "$DAPR_NAMESPACE" >/dev/null 2>&1; then return 0; fi
  # Dapr's own chart, from the module daprd was built from; only what a node of this kind
  # needs differs from its defaults: local images, one replica, in-memory scheduler and
  # placement storage (no volume provisioner here).
  helm install dapr "$chart" -n "$DAPR_NAMESPACE" --create-namespace --wait --timeout 5m \
    --set global.registry="$LOCAL_REGISTRY/dapr" --set global.tag="$(dapr_version)" \
    --set global.imagePullPolicy=IfNotPresent --set global.ha.enabled=false \
    --set global.mtls.enabled=true \
    --set dapr_scheduler.cluster.inMemoryStorage=true \
    --set dapr_placement.cluster.forceInMemoryLog=true >/dev/null
}

report() {
  k8s_log "host processes use $(k8s_host_rss_mb) MB; the cluster is up in $((SECONDS - total_started))s"
  k8s_log "KUBECONFIG=$KUBECONFIG; kubectl and helm are in $BIN"
}

step "binaries" binaries
step "guard and certificates" prepare
step "etcd" etcd_server
step "API server, controller manager, scheduler" control_plane
step "containerd" container_runtime
step "pause, CoreDNS and Dapr images" cluster_images
step "kubelet and kube-proxy" node_agents
step "CoreDNS" cluster_dns
step "Dapr control plane" dapr_control_plane
step "Taskmesh images" taskmesh_images
report
