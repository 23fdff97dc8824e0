#!/usr/bin/env bash
# `just up-cli`: the system through the dapr CLI's multi-app run (dapr/dapr.yaml).
# It starts what the component files expect on their default addresses (Redis on 6379,
# the Dapr scheduler on 50006, an SMTP sink on 1025), gives the CLI a runtime directory
# with our daprd (what `dapr init` would make), and stops everything on exit.
#
# Settings (integration/tests/up_cli.rs uses them; the defaults are `just up-cli`'s):
#   TASKMESH_BIN_DIR      the service binaries (default: the workspace's release build)
#   TASKMESH_UP_CLI_DATA  where the SQLite database and up-cli/ (Redis, the scheduler's
#                         data, mail) go (default: .data)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
daprd="$(scripts/setup-daprd.sh daprd)"
scheduler="$(scripts/setup-daprd.sh scheduler)"
dapr="$(scripts/setup-dapr-cli.sh)"
redis="$(scripts/setup-redis.sh)"
smtp_python="$(scripts/setup-smtp.sh)"

runtime="$CACHE/dapr-runtime"
mkdir -p "$runtime/.dapr/bin" "$runtime/.dapr/components"
ln -sf "$daprd" "$runtime/.dapr/bin/daprd"
cp dapr/config.yaml "$runtime/.dapr/config.yaml"

# dapr/dapr.yaml runs "$TASKMESH_BIN_DIR/<app>" itself, not `cargo run`: the CLI stops an
# app by killing its process, which would leave the service behind a cargo running.
if [ -z "${TASKMESH_BIN_DIR:-}" ]; then
  target="$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  TASKMESH_BIN_DIR="$target/release"
fi
export TASKMESH_BIN_DIR
for app in task-service notification-service recurring-service analytics-service; do
  if [ ! -x "$TASKMESH_BIN_DIR/$app" ]; then
    echo "up-cli: no $TASKMESH_BIN_DIR/$app; build it first (cargo build --release --workspace --bins)" >&2
    exit 1
  fi
done

data="${TASKMESH_UP_CLI_DATA:-.data}"
state="$data/up-cli"
mkdir -p "$state/redis" "$state/scheduler" "$state/mail"
export DATABASE_URL="sqlite://$data/task-service.db?mode=rwc"
pids=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Gone before this script is, so that the ports are free when it returns.
  wait
}
trap cleanup EXIT

# Every fixed port: the ones started here and dapr/dapr.yaml's (apps, sidecars, metrics).
ports=(6379 50006 58080 59090 52379 52380 1025)
while read -r port; do ports+=("$port"); done < <(
  grep -oE '(appPort|daprHTTPPort|METRICS_PORT): "?[0-9]+' dapr/dapr.yaml | grep -oE '[0-9]+$')
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${ports[@]}"; do
  if port_open "$port"; then
    echo "up-cli: port $port is taken (is \`just up\` or \`just up-cli\` running?); stop what runs there first" >&2
    exit 1
  fi
done
"$redis" --port 6379 --bind 127.0.0.1 --save '' --dir "$state/redis" >"$state/redis.log" 2>&1 &
pids+=($!)
"$scheduler" --port 50006 --listen-address 127.0.0.1 --healthz-port 58080 --metrics-port 59090 \
  --etcd-data-dir "$state/scheduler" --etcd-client-port 52379 \
  --etcd-initial-cluster dapr-scheduler-server-0=http://127.0.0.1:52380 \
  --override-broadcast-host-port 127.0.0.1:50006 >"$state/scheduler.log" 2>&1 &
pids+=($!)
"$smtp_python" -m aiosmtpd -n -l 127.0.0.1:1025 -c aiosmtpd.handlers.Mailbox "$state/mail" \
  >"$state/smtp.log" 2>&1 &
pids+=($!)
for port in 6379 50006 1025; do
  for _ in $(seq 100); do port_open "$port" && break; sleep 0.2; done
done
echo "up-cli: redis :6379, scheduler :50006, smtp :1025 (mail in $state/mail/new)" >&2

# The sidecars present APP_API_TOKEN to the apps, which also need it. The CLI (1.12) starts
# every daprd with its own environment (an app's `env:` reaches only the app), so here,
# unlike `just up` and the chart, the apps share one app token. Dev mode unless a JWT
# secret is given.
export APP_API_TOKEN="${APP_API_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
[ -n "${TASKMESH_JWT_SECRET:-}" ] || export TASKMESH_DEV_MODE=true
# CLI 1.12 (see setup-dapr-cli.sh) predates the scheduler and never passes
# --scheduler-host-address; daprd 1.18 also reads it from this variable, which the
# sidecars inherit from the CLI.
export DAPR_SCHEDULER_HOST_ADDRESS_DNS_A="${DAPR_SCHEDULER_HOST_ADDRESS_DNS_A:-127.0.0.1:50006}"
# The CLI puts itself, its sidecars and apps in a process group of their own, which a
# Ctrl-C at the terminal does not reach: this script passes it on and waits until the CLI
# has stopped them (it kills each daprd and app), then stops the rest on exit.
DAPR_RUNTIME_PATH="$runtime" "$dapr" run -f dapr/dapr.yaml &
cli=$!
trap 'kill -TERM "$cli" 2>/dev/null || true' INT TERM
status=0
while kill -0 "$cli" 2>/dev/null; do
  # A trapped signal ends `wait` early (with 128+n): wait again, for the CLI's own status.
  if wait "$cli"; then status=0; else status=$?; fi
done
exit "$status"
