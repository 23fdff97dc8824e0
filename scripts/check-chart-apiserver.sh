#!/usr/bin/env bash
# Installs helm/taskmesh into a real Kubernetes API server, so that the API server itself,
# not a copy of its schemas, accepts every object, Dapr's custom resources included.
#
# It starts etcd and kube-apiserver (scripts/setup-kube-apiserver.sh builds them) on free
# loopback ports in a temporary directory, creates Dapr's CRDs for real, and then for each
# environment (local, staging, prod), in a namespace of its own:
#   1. sends every object `helm template` renders, the hook Job included, as a server-side
#      dry-run create with strict field validation, so that an unknown or misspelt field, a
#      wrong type or a value the server's validation refuses fails the check;
#   2. runs `helm install --no-hooks` and checks that every object of the release exists.
#      --no-hooks: there are no nodes, so the migration Job (a pre-install hook) would never
#      finish and helm would wait for it forever; step 1 has the Job checked already.
# There is no kube-controller-manager, scheduler or kubelet: nothing is reconciled or run,
# which is all this needs. Exits non-zero, with the server's message, on any refusal.
# etcd, kube-apiserver and the temporary directory are removed on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

bin="$(scripts/setup-chart-tools.sh)"
HELM="$bin/helm"
PY="$bin/python" # has PyYAML
kube="$(scripts/setup-kube-apiserver.sh)"
dapr_version="$(grep -m1 '^DAPR_VERSION=' scripts/setup-daprd.sh | grep -o 'v[0-9]*\.[0-9]*\.[0-9]*')"
DAPR_CRDS="$(go env GOMODCACHE)/github.com/dapr/dapr@${dapr_version}/charts/dapr/crds"
if [ ! -d "$DAPR_CRDS" ]; then
  GOFLAGS=-modcacherw go mod download "github.com/dapr/dapr@${dapr_version}" >&2
fi

tmp="$(mktemp -d)"
etcd_pid="" apiserver_pid="" servers_up=""
cleanup() {
  local rc=$?
  # If the servers did not come up, their own logs say why (a flag, a port, etcd); once
  # they are up, a refusal is reported by the API server's response instead.
  if [ "$rc" -ne 0 ] && [ -z "$servers_up" ]; then
    for log in etcd kube-apiserver; do
      if [ -s "$tmp/$log.log" ]; then
        echo "-- last lines of $log's log" >&2
        tail -n 20 "$tmp/$log.log" >&2
      fi
    done
  fi
  # The API server first, so that it does not log etcd's disappearance at length.
  for pid in $apiserver_pid $etcd_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The client half: plain HTTPS with the bearer token, so no kubectl is needed.
cat > "$tmp/kube.py" <<'PY'
"""Talks to the API server for check-chart-apiserver.sh; see the subcommands at the end."""
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

SERVER, TOKEN, CA = sys.argv[1], open(sys.argv[2]).read().strip(), sys.argv[3]
CTX = ssl.create_default_context(cafile=CA)


def call(method, path, body=None):
    """Returns (HTTP status, decoded body, Warning headers); never raises on HTTP errors."""
    req = urllib.request.Request(
        SERVER + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Accept": "application/json",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as resp:
            status, raw, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, headers = err.code, err.read(), err.headers
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = {"message": raw.decode(errors="replace")}
    return status, payload, headers.get_all("Warning") or []


def docs(paths):
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield doc


_resources = {}


def resource(api_version, kind):
    """(plural, namespaced) for a kind, from the server's discovery. Retries briefly: a
    just-established CRD can take a moment to appear in discovery."""
    base = "/api/" + api_version if "/" not in api_version else "/apis/" + api_version
    for _ in range(20):
        if base not in _resources:
            status, body, _ = call("GET", base)
            if status == 200:
                _resources[base] = {r["kind"]: (r["name"], r["namespaced"])
                                    for r in body["resources"] if "/" not in r["name"]}
        if kind in _resources.get(base, {}):
            return base, *_resources[base][kind]
        _resources.pop(base, None)
        time.sleep(0.5)
    sys.exit(f"the API server does not serve kind {kind} in {api_version}")


def url(obj, default_ns):
    base, plural, namespaced = resource(obj["apiVersion"], obj["kind"])
    if namespaced:
        ns = obj.get("metadata", {}).get("namespace") or default_ns
        return f"{base}/namespaces/{ns}/{plural}"
    return f"{base}/{plural}"


def describe(obj):
    return f'{obj["kind"]}/{obj.get("metadata", {}).get("name", "?")}'


def create(paths, default_ns, dry_run):
    """Creates every object (or dry-runs it), strictly; prints one line per object and the
    server's message for each refusal. Exits 1 if anything was refused."""
    query = "?fieldValidation=Strict&fieldManager=check-chart-apiserver"
    if dry_run:
        query += "&dryRun=All"
    accepted, refused = 0, 0
    for obj in docs(paths):
        status, body, warnings = call("POST", url(obj, default_ns) + query, obj)
        if status in (200, 201):
            accepted += 1
            print(f"  accepted {describe(obj)}")
        else:
            refused += 1
            reason = (body or {}).get("message", body)
            print(f"  REFUSED  {describe(obj)} (HTTP {status}): {reason}")
        for warning in warnings:
            print(f"  warning  {describe(obj)}: {warning}")
    print(f"  {accepted} accepted, {refused} refused")
    if refused:
        sys.exit(1)
    return accepted


def exists(paths, default_ns):
    """Checks that every object in the manifests is stored on the server."""
    missing = 0
    count = 0
    for obj in docs(paths):
        count += 1
        status, _, _ = call("GET", f'{url(obj, default_ns)}/{obj["metadata"]["name"]}')
        if status != 200:
            missing += 1
            print(f"  MISSING  {describe(obj)} (HTTP {status})")
    if missing:
        sys.exit(1)
    print(f"  all {count} objects of the release are stored")


def wait_established(paths, timeout=60):
    deadline = time.time() + timeout
    for crd in docs(paths):
        name = crd["metadata"]["name"]
        while True:
            status, body, _ = call(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conditions = {c["type"]: c for c in (body or {}).get("status", {}).get("conditions", [])}
            if conditions.get("Established", {}).get("status") == "True":
                break
            if conditions.get("NamesAccepted", {}).get("status") == "False":
                sys.exit(f"CRD {name}: {conditions['NamesAccepted'].get('message')}")
            if time.time() > deadline:
                sys.exit(f"CRD {name} not Established after {timeout}s: {conditions}")
            time.sleep(0.2)
        print(f"  established {name}")


command, args = sys.argv[4], sys.argv[5:]
if command == "ready":  # exit 0 once /readyz says ok
    try:
        status, _, _ = call("GET", "/readyz")
    except OSError:
        status = 0
    sys.exit(0 if status == 200 else 1)
elif command == "namespace":
    create_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args[0]}}
    status, body, _ = call("POST", "/api/v1/namespaces?fieldValidation=Strict", create_ns)
    if status != 201:
        sys.exit(f"creating namespace {args[0]}: HTTP {status}: {body}")
elif command == "create":
    create(args, None, dry_run=False)
elif command == "dry-run":  # NAMESPACE FILE...
    create(args[1:], args[0], dry_run=True)
elif command == "exists":  # NAMESPACE FILE...
    exists(args[1:], args[0])
elif command == "wait-established":
    wait_established(args)
else:
    sys.exit(f"unknown command {command}")
PY

# Three free loopback ports: etcd's client and peer ports, the API server's port.
read -r etcd_port peer_port api_port < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# etcd: one member, in the temp dir. --unsafe-no-fsync: the data is thrown away anyway,
# and fsyncs are what makes etcd slow on a busy disk.
"$kube/etcd" --name check --data-dir "$tmp/etcd" --log-level warn --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "check=http://127.0.0.1:$peer_port" \
  > "$tmp/etcd.log" 2>&1 &
etcd_pid=$!

# Credentials: a static bearer token (the whole authentication there is), and an RSA key
# for service-account tokens, which the API server refuses to start without.
token="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
echo "$token" > "$tmp/token"
echo "$token,check-chart,check-chart,system:masters" > "$tmp/tokens.csv"
openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null

# kube-apiserver: a self-signed serving certificate in --cert-dir (for 127.0.0.1, so the
# client can verify it), AlwaysAllow (authorisation is not under test), no endpoint
# reconciler (a loopback address is not a valid Endpoints address, and there is no cluster).
"$kube/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --cert-dir "$tmp/certs" \
  --token-auth-file "$tmp/tokens.csv" --anonymous-auth=false \
  --authorization-mode AlwaysAllow \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$tmp/sa.pub" --service-account-signing-key-file "$tmp/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --endpoint-reconciler-type none \
  --profiling=false \
  > "$tmp/kube-apiserver.log" 2>&1 &
apiserver_pid=$!

server="https://127.0.0.1:$api_port"
ca="$tmp/certs/apiserver.crt"
kube_py() { "$PY" "$tmp/kube.py" "$server" "$tmp/token" "$ca" "$@"; }

echo "== starting etcd and kube-apiserver on 127.0.0.1:$api_port"
for _ in $(seq 1 240); do
  kill -0 "$etcd_pid" 2>/dev/null || { echo "etcd exited" >&2; exit 1; }
  kill -0 "$apiserver_pid" 2>/dev/null || { echo "kube-apiserver exited" >&2; exit 1; }
  if [ -s "$ca" ] && kube_py ready; then break; fi
  sleep 0.5
done
kube_py ready || { echo "kube-apiserver not ready after 120s" >&2; exit 1; }
servers_up=1
echo "   ready after $((SECONDS - start))s"

export KUBECONFIG="$tmp/kubeconfig"
cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: check
    cluster: {server: "$server", certificate-authority: "$ca"}
users:
  - name: check
    user: {token: "$token"}
contexts:
  - name: check
    context: {cluster: check, user: check}
current-context: check
EOF
chmod 600 "$KUBECONFIG"

echo "== Dapr $dapr_version CRDs"
kube_py create "$DAPR_CRDS"/*.yaml
kube_py wait-established "$DAPR_CRDS"/*.yaml

summary=()
for env in local staging prod; do
  ns="taskmesh-$env"
  release="taskmesh-$env"
  values="helm/taskmesh/values-$env.yaml"
  kube_py namespace "$ns"
  echo "== $env: server-side dry-run (strict) of every rendered object, hooks included"
  "$HELM" template "$release" helm/taskmesh -n "$ns" -f "$values" > "$tmp/$env.yaml"
  dry_out="$(kube_py dry-run "$ns" "$tmp/$env.yaml")" || { echo "$dry_out"; echo "the API server refused objects of $env (above)" >&2; exit 1; }
  echo "$dry_out"
  accepted="$(tail -n1 <<<"$dry_out" | grep -o '^ *[0-9]*' | tr -d ' ')"
  echo "== $env: helm install --no-hooks"
  "$HELM" install "$release" helm/taskmesh -n "$ns" -f "$values" --no-hooks --hide-notes --timeout 60s \
    || { echo "helm install of $env failed (above)" >&2; exit 1; }
  "$HELM" get manifest "$release" -n "$ns" > "$tmp/$env-release.yaml"
  installed="$(grep -c '^kind:' "$tmp/$env-release.yaml" || true)"
  kube_py exists "$ns" "$tmp/$env-release.yaml"
  summary+=("$env: $accepted objects accepted by strict server-side dry-run; helm install created $installed (hooks skipped)")
done

echo "== summary ($("$kube/kube-apiserver" --version), $("$kube/etcd" --version | head -n1), $((SECONDS - start))s in all)"
printf '  %s\n' "${summary[@]}"
echo "chart accepted by the API server"
