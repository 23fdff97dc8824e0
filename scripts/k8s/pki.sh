#!/usr/bin/env bash
# The local cluster's certificates, made with openssl into $K8S_PKI (kept across restarts,
# removed by `k8s-down --purge`): one cluster CA, the API server's serving certificate, a
# client certificate per component (its user and groups are what RBAC and the Node
# authorizer see), the kubelet's serving certificate, the service-account signing key,
# and a kubeconfig per client.
set -euo pipefail
# shellcheck source=scripts/k8s/env.sh
. "$(dirname "$0")/env.sh"

mkdir -p "$K8S_PKI"
cd "$K8S_PKI"
umask 077

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=taskmesh-local-cluster-ca" 2>/dev/null
fi
if [ ! -f sa.key ]; then
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi

# cert NAME SUBJECT [SANS]: a key and a CA-signed certificate for a client or server.
cert() {
  local name=$1 subject=$2 sans=${3:-}
  [ -f "$name.crt" ] && return 0
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  {
    echo "basicConstraints = CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    if [ -n "$sans" ]; then
      echo "extendedKeyUsage = serverAuth, clientAuth"
      echo "subjectAltName = $sans"
    else
      echo "extendedKeyUsage = clientAuth"
    fi
  } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

cert apiserver "/CN=kube-apiserver" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=taskmesh-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP"

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
  local name=$1
  cat > "$K8S_STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: taskmesh-local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $K8S_PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $K8S_PKI/$name.crt
    client-key: $K8S_PKI/$name.key
contexts:
- name: taskmesh-local
  context: {cluster: taskmesh-local, user: $name}
current-context: taskmesh-local
EOF
}
for client in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$client"; done
