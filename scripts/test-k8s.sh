#!/usr/bin/env bash
# `just test-k8s`: the Helm chart proved on the pods of the cluster `just k8s-up` started.
#
#  1. helm/taskmesh-deps installs what values-local.yaml expects in `default` (Redis,
#     Kafka in KRaft mode, PostgreSQL, an SMTP sink); then `helm install --wait` of
#     helm/taskmesh with values-local.yaml + values-k8s-node.yaml: the migration hook
#     completes, every pod is Running and Ready with 2/2 containers, each daprd loaded its
#     components (its metadata API) and got its certificate from sentry (mTLS metric).
#  2. End to end from outside the cluster, with taskctl over the task-service NodePort and a
#     JWT: a recurring task with a due time is created and completed; the next occurrence
#     exists, analytics counts it, the user's notification is in their inbox; all through
#     Kafka, Dapr's Kubernetes name resolution, mTLS and the chart's access control.
#  3. The operators' way to the subscribers' methods (NOTES.txt) works; other ways are
#     denied.
#  4. `helm upgrade` (task-service 1 -> 2 replicas, another log level) while a client
#     creates tasks: every task created is counted by analytics, once.
#  5. A task-service pod deleted with --grace-period=0 --force under load: nothing lost.
#  6. values-prod.yaml against Kafka with SASL_SSL/SCRAM and Redis with TLS and a password
#     (a CA made here), only hostnames and replica counts overridden: the same flow.
#  7. `helm uninstall` leaves no object of either release; the guard dropped nothing.
# On failure it prints what an operator would look at: pods, events and the last lines of
# each failing container's log, daprd included.
set -euo pipefail
# No `cmd | grep -q` below: grep would stop reading, cmd die of SIGPIPE, and pipefail fail the check.
cd "$(dirname "$0")/.."
repo="$PWD"
# shellcheck source=scripts/k8s/env.sh
. scripts/k8s/env.sh
export PATH="$K8S_BIN:$PATH"
TASKCTL="${CARGO_TARGET_DIR:-$repo/target}/${TASKMESH_IMAGE_PROFILE:-debug}/taskctl"
[ -x "$TASKCTL" ] || { echo "test-k8s: $TASKCTL is missing: cargo build --workspace --bins" >&2; exit 1; }
kubectl get --raw /readyz >/dev/null 2>&1 || { echo "test-k8s: no cluster: run just k8s-up" >&2; exit 1; }

NS=taskmesh
TASKS_NODEPORT=30051
work="$(mktemp -d)"
started=$SECONDS
drops_before="$(scripts/k8s/guard.sh drops)"

cleanup() {
  local rc=$?
  if [ -f "$work/forward.pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$work/forward.pids"
  fi
  if [ "$rc" -ne 0 ]; then diagnose >&2 || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "test-k8s: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
# Its locals have names no step uses: bash's scoping is dynamic, and a step's own `name`
# or `t` would overwrite them.
step() { # step NAME COMMAND...
  local step_name=$1 step_started=$SECONDS
  shift
  say "$step_name ..."
  "$@"
  say "$step_name: ok ($((SECONDS - step_started))s)"
}

# What an operator looks at: the pods, the events, and the last lines of every container
# that is not ready or restarted (the daprd sidecar included), with its previous run's.
diagnose() {
  echo "---- kubectl get pods -A -o wide"
  kubectl get pods -A -o wide || true
  echo "---- recent events"
  kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
  kubectl get pods -A -o json 2>/dev/null | python3 -c '
import json, sys
for pod in json.load(sys.stdin)["items"]:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    for c in pod.get("status", {}).get("containerStatuses", []) or []:
        if not c.get("ready") or c.get("restartCount", 0) > 0:
            print(ns, name, c["name"], c.get("restartCount", 0))' | while read -r ns pod container restarts; do
    echo "---- logs of $ns/$pod, container $container (restarts: $restarts)"
    kubectl -n "$ns" logs "$pod" -c "$container" --tail 25 2>&1 || true
    if [ "$restarts" -gt 0 ]; then
      echo "---- previous run of $ns/$pod, container $container"
      kubectl -n "$ns" logs "$pod" -c "$container" --previous --tail 25 2>&1 || true
    fi
  done
}

# forward NS TARGET REMOTE_PORT: a kubectl port-forward on a free local port, reused while
# it runs; prints the port. Callers run it in $(...), so what it started is kept in files.
forward() {
  local ns=$1 target=$2 remote=$3 port pid key log
  key="$work/forward-$ns-${target//\//_}-$remote"
  log="$key.log"
  if [ -f "$key" ]; then
    read -r port pid < "$key"
    if kill -0 "$pid" 2>/dev/null; then echo "$port"; return 0; fi
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  kubectl -n "$ns" port-forward "$target" "$port:$remote" >"$log" 2>&1 &
  pid=$!
  echo "$pid" >> "$work/forward.pids"
  for _ in $(seq 50); do
    if grep -q "Forwarding from" "$log"; then
      echo "$port $pid" > "$key"
      echo "$port"
      return 0
    fi
    sleep 0.2
  done
  fail "port-forward to $ns/$target:$remote: $(cat "$log")"
}

# eventually SECONDS DESCRIPTION COMMAND...: retries COMMAND until it succeeds.
eventually() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what (after ${deadline}s)"
    sleep 1
  done
}

secret() { openssl rand -hex 24; }

# The dependencies of values-local.yaml, in `default` as it expects.
install_deps() {
  local ns=$1 release=$2
  shift 2
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$ns" create secret generic taskmesh-deps-postgres \
    --from-literal=password="$PG_PASSWORD" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  helm upgrade --install "$release" helm/taskmesh-deps -n "$ns" --wait --timeout 5m \
    --set postgres.passwordSecret=taskmesh-deps-postgres "$@" >/dev/null
}

# The secrets the chart reads, made as its README says.
create_secrets() {
  local db_host=$1
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic taskmesh \
    --from-literal=database-url="postgres://taskmesh:$PG_PASSWORD@$db_host:5432/taskmesh" \
    --from-literal=jwt-secret="$JWT_SECRET" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic taskmesh-dapr-api-token \
    --from-literal=token="$DAPR_TOKEN" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

install_taskmesh() {
  local env=$1
  shift
  helm install taskmesh helm/taskmesh -n "$NS" --wait --timeout 6m \
    -f "helm/taskmesh/values-$env.yaml" -f helm/taskmesh/values-k8s-node.yaml "$@" >/dev/null
}

# Every Taskmesh pod Running and Ready with its app and an injected daprd.
pods_ready() {
  kubectl -n "$NS" get pods -l app.kubernetes.io/instance=taskmesh -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
bad = []
for p in pods:
    names = sorted(c["name"] for c in p["spec"]["containers"])
    statuses = p["status"].get("containerStatuses") or []
    ready = len(statuses) == 2 and all(c["ready"] for c in statuses)
    if "daprd" not in names or len(names) != 2 or p["status"]["phase"] != "Running" or not ready:
        bad.append(p["metadata"]["name"] + " " + str(names) + " " + p["status"]["phase"])
names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
missing = {"task-service", "notification-service", "recurring-service", "analytics-service",
           "taskmesh-ops"} - names
if missing or bad:
    sys.exit("not ready: " + "; ".join(bad) if bad else "no pod of %s" % sorted(missing))'
}

# Each sidecar's metadata API lists the components its app is scoped to, and its mTLS
# certificate came from sentry.
sidecars_loaded() {
  local pod app port metadata want
  for app in task-service notification-service recurring-service analytics-service; do
    pod="$(kubectl -n "$NS" get pods -l "app.kubernetes.io/name=$app" -o jsonpath='{.items[0].metadata.name}')"
    port="$(forward "$NS" "pod/$pod" 3500)"
    metadata="$(curl -sf --max-time 15 -H "dapr-api-token: $DAPR_TOKEN" "http://127.0.0.1:$port/v1.0/metadata")" \
      || fail "$app: the sidecar's metadata API did not answer"
    case $app in
      task-service) want="taskmesh-pubsub" ;;
      notification-service) want="taskmesh-pubsub taskmesh-state taskmesh-email" ;;
      *) want="taskmesh-pubsub taskmesh-state" ;;
    esac
    # taskmesh-secrets exists only where a component reads a Secret, scoped to those apps.
    if kubectl -n "$NS" get components.dapr.io taskmesh-secrets -o jsonpath='{.scopes}' 2>/dev/null \
      | grep "\"$app\"" >/dev/null; then
      want="$want taskmesh-secrets"
    fi
    for component in $want; do
      echo "$metadata" | python3 -c '
import json, sys
names = [c["name"] for c in json.load(sys.stdin).get("components", [])]
sys.exit(0 if sys.argv[1] in names else "%s not in %s" % (sys.argv[1], names))' "$component" \
        || fail "$app's sidecar did not load $component"
    done
    # daprd logs its workload certificate's expiry once sentry has signed it.
    kubectl -n "$NS" logs "$pod" -c daprd | grep '"msg":"Starting workload identity expiry watcher; cert expires on' >/dev/null \
      || fail "$app's sidecar got no certificate from sentry"
  done
}

# taskctl as USER against the task-service NodePort.
taskctl() {
  local user=$1
  shift
  HOME="$work/home-$user" XDG_CONFIG_HOME="$work/home-$user/.config" \
    TASKMESH_SERVER="http://$NODE_IP:$TASKS_NODEPORT" timeout 30 "$TASKCTL" "$@"
}

login() {
  taskctl "$1" login --user "$1" --secret "$JWT_SECRET" >/dev/null
}

# invoke APP METHOD JSON: an operator's call to a subscriber's method, the way NOTES.txt
# documents it (through the taskmesh-ops sidecar, one port-forward per release); prints
# the answer.
invoke() {
  local app=$1 method=$2 data=$3 port
  port="$(forward "$NS" deploy/taskmesh-ops 3500)"
  curl -sf --max-time 15 -H "dapr-api-token: $DAPR_TOKEN" -H 'content-type: application/json' \
    -d "$data" "http://127.0.0.1:$port/v1.0/invoke/$app/method/$method"
}

json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }

# kube-proxy programs a new Service's NodePort shortly after its pods are Ready: until
# then a connection is refused.
node_port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$NODE_IP/$TASKS_NODEPORT" 2>/dev/null; }

# The flow a user sees, as USER.
end_to_end() {
  local user=$1 id due next
  eventually 60 "task-service's NodePort $TASKS_NODEPORT does not accept connections" node_port_open
  login "$user"
  due="$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)"
  id="$(taskctl "$user" --json add "Water the plants" --due "$due" --every "FREQ=DAILY;COUNT=3" | json_field '["id"]')"
  taskctl "$user" done "$id" >/dev/null
  next_occurrence() {
    next="$(taskctl "$user" --json list | python3 -c '
import json, sys
tasks = [t for t in json.load(sys.stdin)["tasks"] if t["id"] != sys.argv[1] and t["title"] == "Water the plants"]
print(tasks[0]["id"] if tasks else "")' "$id")"
    [ -n "$next" ]
  }
  eventually 90 "$user's next occurrence was not created" next_occurrence
  counted() {
    local stats
    stats="$(invoke analytics-service stats/get "{\"user_id\":\"$user\"}")" || return 1
    echo "$stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["created"] == 2 and s["completed"] == 1 else 1)'
  }
  eventually 60 "analytics did not count $user's two tasks and one completion" counted
  notified() {
    invoke notification-service notifications/list "{\"user_id\":\"$user\"}" | grep rolled_over >/dev/null
  }
  eventually 60 "$user's roll-over notification did not arrive" notified
}

# load USER SECONDS: creates tasks one after another for SECONDS, each retried with its
# request id until acknowledged (an idempotent retry never makes a second task); prints
# how many were acknowledged.
load() {
  local user=$1 until=$((SECONDS + $2)) n=0
  login "$user"
  while [ "$SECONDS" -lt "$until" ]; do
    n=$((n + 1))
    for attempt in $(seq 60); do
      taskctl "$user" add "load $n" --request-id "$user-$n" >/dev/null 2>&1 && break
      [ "$attempt" -lt 60 ] || { echo "task $n never acknowledged" >&2; return 1; }
      sleep 0.5
    done
  done
  echo "$n"
}

# delivered USER N: analytics counted exactly N tasks created by USER.
delivered() {
  local user=$1 want=$2 got
  got="$(invoke analytics-service stats/get "{\"user_id\":\"$user\"}")" || return 1
  got="$(echo "$got" | json_field '["created"]')"
  [ "$got" = "$want" ] || { say "analytics counted $got of $want tasks of $user"; return 1; }
}

upgrade_under_load() {
  load bob 45 > "$work/bob.count" &
  local loader=$!
  sleep 5
  helm upgrade taskmesh helm/taskmesh -n "$NS" --wait --timeout 6m \
    -f helm/taskmesh/values-local.yaml -f helm/taskmesh/values-k8s-node.yaml \
    --set apps.task-service.replicas=2 --set log.level=info >/dev/null
  wait "$loader" || fail "the client could not create tasks during the upgrade"
  local created
  created="$(cat "$work/bob.count")"
  say "$created tasks created during the upgrade"
  [ "$(kubectl -n "$NS" get deploy task-service -o jsonpath='{.status.readyReplicas}')" = 2 ] \
    || fail "task-service does not run 2 ready replicas after the upgrade"
  eventually 120 "not every task created during the upgrade was delivered" delivered bob "$created"
}

force_delete_under_load() {
  load carol 30 > "$work/carol.count" &
  local loader=$! pod
  sleep 8
  pod="$(kubectl -n "$NS" get pods -l app.kubernetes.io/name=task-service -o jsonpath='{.items[0].metadata.name}')"
  kubectl -n "$NS" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
  wait "$loader" || fail "the client could not create tasks around the forced deletion"
  local created
  created="$(cat "$work/carol.count")"
  say "$created tasks created around the forced deletion of $pod"
  eventually 180 "a committed event was lost when $pod was killed" delivered carol "$created"
}

# status PORT TARGET [TOKEN]: the HTTP status of an invocation through the sidecar on PORT.
status() {
  curl -s --max-time 15 -o /dev/null -w '%{http_code}' ${3:+-H "dapr-api-token: $3"} \
    -H 'content-type: application/json' -d '{"user_id":"alice"}' \
    "http://127.0.0.1:$1/v1.0/invoke/$2"
}

# Operators reach the subscribers' methods through the taskmesh-ops sidecar (NOTES.txt):
# those methods answer. Everything else is denied by the access-control policy: other
# methods from taskmesh-ops, and the operator methods from any app's sidecar; and nothing
# answers without the sidecar's API token.
operator_access() {
  local pod port code target
  invoke analytics-service stats/get '{"user_id":"alice"}' | grep '"created"' >/dev/null \
    || fail "the documented operator call to stats/get did not answer"
  invoke notification-service notifications/list '{"user_id":"alice"}' | grep rolled_over >/dev/null \
    || fail "the documented operator call to notifications/list did not answer"
  port="$(forward "$NS" deploy/taskmesh-ops 3500)"
  for target in analytics-service/method/state/purge \
    task-service/method/taskmesh.tasks.v1.TaskService/CreateTask; do
    code="$(status "$port" "$target" "$DAPR_TOKEN")"
    [ "$code" = 403 ] || fail "taskmesh-ops reached $target ($code); the policy must deny it"
  done
  code="$(status "$port" analytics-service/method/stats/get)"
  [ "$code" = 401 ] || fail "a call without the API token got $code, not 401"
  for app in task-service recurring-service; do
    pod="$(kubectl -n "$NS" get pods -l "app.kubernetes.io/name=$app" -o jsonpath='{.items[0].metadata.name}')"
    port="$(forward "$NS" "pod/$pod" 3500)"
    for target in analytics-service/method/stats/get notification-service/method/notifications/list; do
      code="$(status "$port" "$target" "$DAPR_TOKEN")"
      [ "$code" = 403 ] || fail "$app's sidecar reached $target ($code); the policy must deny it"
    done
  done
}

# No object of the release is left (PVCs aside: the chart makes none).
uninstall_leaves_nothing() {
  helm uninstall taskmesh -n "$NS" --wait >/dev/null
  # --wait returns once deletion has begun; pods take their grace period to go.
  kubectl -n "$NS" wait --for=delete pod -l app.kubernetes.io/instance=taskmesh --timeout=120s >/dev/null 2>&1 || true
  local left
  left="$(kubectl api-resources --verbs=list --namespaced -o name | grep -v -E '^(events|events.events.k8s.io)$' \
    | xargs -n1 kubectl -n "$NS" get -o name -l app.kubernetes.io/instance=taskmesh --ignore-not-found 2>/dev/null || true)"
  [ -z "$left" ] || fail "helm uninstall left: $left"
  left="$(kubectl -n "$NS" get pods -o name)"
  [ -z "$left" ] || fail "pods left after helm uninstall: $left"
}

# A CA and the certificates of the production-like Kafka and Redis, made here.
production_certificates() {
  local deps_ns=$1 dir="$work/pki"
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 2 \
    -subj "/CN=taskmesh-test-ca" 2>/dev/null
  for name in kafka redis-master; do
    openssl req -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -out "$dir/$name.csr" \
      -subj "/CN=$name.$deps_ns.svc.$CLUSTER_DOMAIN" 2>/dev/null
    printf 'subjectAltName = DNS:%s.%s.svc.%s,DNS:%s.%s.svc,DNS:%s\nextendedKeyUsage = serverAuth\n' \
      "$name" "$deps_ns" "$CLUSTER_DOMAIN" "$name" "$deps_ns" "$name" > "$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 2 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
    kubectl -n "$deps_ns" create secret generic "$name-tls" --from-file=tls.crt="$dir/$name.crt" \
      --from-file=tls.key="$dir/$name.key" --from-file=ca.crt="$dir/ca.crt" \
      --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done
}

production() {
  local deps_ns=taskmesh-prod-deps kafka_password redis_password
  kafka_password="$(secret)" redis_password="$(secret)"
  kubectl create namespace "$deps_ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  production_certificates "$deps_ns"
  kubectl -n "$deps_ns" create secret generic kafka-scram --from-literal=username=taskmesh \
    --from-literal=password="$kafka_password" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$deps_ns" create secret generic redis-password --from-literal=password="$redis_password" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  install_deps "$deps_ns" taskmesh-prod-deps \
    --set kafka.saslSsl.enabled=true --set kafka.saslSsl.usersSecret=kafka-scram \
    --set kafka.saslSsl.tlsSecret=kafka-tls \
    --set redis.tls.enabled=true --set redis.tls.secret=redis-master-tls \
    --set redis.passwordSecret=redis-password
  create_secrets "postgres.$deps_ns.svc.$CLUSTER_DOMAIN"
  # The credentials values-prod.yaml names, as an operator creates them.
  kubectl -n "$NS" create secret generic taskmesh-redpanda --from-literal=username=taskmesh \
    --from-literal=password="$kafka_password" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic taskmesh-redis --from-literal=password="$redis_password" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic taskmesh-smtp --from-literal=user=taskmesh \
    --from-literal=password=unused --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic taskmesh-ca --from-file=ca.crt="$work/pki/ca.crt" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  local replicas=()
  for app in task-service notification-service recurring-service analytics-service; do
    replicas+=(--set "apps.$app.replicas=1")
  done
  helm install taskmesh helm/taskmesh -n "$NS" --wait --timeout 8m \
    -f helm/taskmesh/values-prod.yaml -f helm/taskmesh/values-k8s-node.yaml "${replicas[@]}" \
    --set pubsub.brokers="kafka.$deps_ns.svc.$CLUSTER_DOMAIN:9093" \
    --set stateStore.redisHost="redis-master.$deps_ns.svc.$CLUSTER_DOMAIN:6379" \
    --set email.host="mailpit.$deps_ns.svc.$CLUSTER_DOMAIN" --set email.port=1025 \
    --set dapr.tracing.otlpEndpoint= >/dev/null
  pods_ready
  end_to_end dave
  memory "with values-prod installed"
}

# memory LABEL: what the cluster uses now, host processes (etcd, the control plane,
# containerd, the kubelet, kube-proxy) and every pod's containers (the kubepods cgroup's
# resident memory); fails above 6 GiB, the target for the cluster with Taskmesh installed.
memory() {
  local host pods
  host="$(k8s_host_rss_mb)"
  pods="$(awk '$1 == "total_rss" {print int($2 / 1048576)}' /sys/fs/cgroup/memory/kubepods/memory.stat 2>/dev/null \
    || echo 0)"
  say "memory $1: $((host + pods)) MB (host processes $host MB, pods $pods MB)"
  [ $((host + pods)) -le 6144 ] || fail "the cluster uses more than 6 GiB"
}

guard_dropped_nothing() {
  local drops
  drops="$(scripts/k8s/guard.sh drops)"
  [ "$drops" = "$drops_before" ] || fail "the guard dropped $((drops - drops_before)) packets: something tried to leave the machine"
}

# Releases and namespaces an interrupted run left behind: the deps' PostgreSQL would keep
# the old run's password.
leftovers() {
  local release ns
  for release in taskmesh/taskmesh taskmesh-deps/default taskmesh-prod-deps/taskmesh-prod-deps; do
    ns=${release#*/} release=${release%/*}
    if helm status "$release" -n "$ns" >/dev/null 2>&1; then
      helm uninstall "$release" -n "$ns" --wait >/dev/null
    fi
  done
  kubectl delete namespace "$NS" taskmesh-prod-deps --ignore-not-found --wait >/dev/null
  kubectl -n default delete secret taskmesh-deps-postgres --ignore-not-found >/dev/null
}

PG_PASSWORD="$(secret)" JWT_SECRET="$(secret)" DAPR_TOKEN="$(secret)"
step "a clean start" leftovers
# The images of the binaries just built (k8s-up imported those of its own time).
step "Taskmesh images" scripts/k8s/build-images.sh --import
step "dependencies (helm/taskmesh-deps in default)" install_deps default taskmesh-deps
step "secrets" create_secrets "postgres.default.svc.$CLUSTER_DOMAIN"
step "helm install (values-local)" install_taskmesh local
step "every pod 2/2 Ready" pods_ready
step "sidecars: components and sentry certificates" sidecars_loaded
step "end to end: a recurring task through Kafka, invocation and the subscribers" end_to_end alice
memory "with values-local installed"
step "operator access" operator_access
step "helm upgrade under load" upgrade_under_load
step "task-service pod force-deleted under load" force_delete_under_load
step "helm uninstall (local)" uninstall_leaves_nothing
helm uninstall taskmesh-deps -n default --wait >/dev/null
step "values-prod: SASL_SSL Kafka, Redis with TLS and a password" production
step "helm uninstall (prod)" uninstall_leaves_nothing
helm uninstall taskmesh-prod-deps -n taskmesh-prod-deps --wait >/dev/null
step "the guard dropped nothing" guard_dropped_nothing
say "all checks passed in $((SECONDS - started))s"
