# Taskmesh: the entry point for people and CI. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments also reach the shell as "$@", so `*args` recipes pass them on unchanged
# (`--every "FREQ=WEEKLY;BYDAY=MO"`, a JSON body, a header with spaces).
set positional-arguments := true

export CARGO_BUILD_JOBS := env_var_or_default("CARGO_BUILD_JOBS", "2")

grpcurl_module := "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"

default:
    @just --list

# Install or build what the system and its tests need, cached in ~/.cache/taskmesh:
# PostgreSQL and Redis (Debian packages), Kafka (Maven Central jars), daprd and the
# scheduler (built from the Go module proxy unless $DAPRD or ~/.dapr/bin/daprd exists),
# the dapr CLI, and kube-apiserver with etcd for the chart check.
setup:
    scripts/setup-postgres.sh
    scripts/setup-redis.sh >/dev/null
    scripts/setup-kafka.sh >/dev/null
    scripts/setup-daprd.sh daprd >/dev/null
    scripts/setup-daprd.sh scheduler >/dev/null
    scripts/setup-dapr-cli.sh >/dev/null
    scripts/setup-kube-apiserver.sh >/dev/null

# Build every crate.
build:
    cargo build --workspace --all-targets

# Run the system locally: Redis, daprd sidecars, task-service (SQLite in .data/, dev mode)
# and the subscriber services. Ctrl-C stops everything.
up: setup
    cargo build --release --workspace --bins
    mkdir -p .data
    "${CARGO_TARGET_DIR:-target}/release/taskmesh-up"

# The same system through the dapr CLI's multi-app run (dapr/dapr.yaml), for those who
# have the dapr CLI (the Go module proxy here does not serve it). Ctrl-C stops everything.
up-cli: setup
    cargo build --release --workspace --bins
    mkdir -p .data
    scripts/up-cli.sh

# Every test: unit, API (SQLite and a throwaway PostgreSQL), process, CLI, and the
# integration tests with real daprd, Redis and Kafka.
test: setup
    cargo build --workspace --bins
    cargo test --workspace --all-targets --no-fail-fast
    scripts/check-chart.sh

# The Helm chart's checks alone (lint, schemas, per-environment tests, checkov, hadolint,
# and a real kube-apiserver accepting every object).
chart-check:
    scripts/check-chart.sh

# The image build commands for the four services (run them where Docker exists).
images tag="0.1.0" registry="ghcr.io/taskmesh":
    @for app in task-service notification-service recurring-service analytics-service; do       echo "docker build --build-arg SERVICE=$app -t {{registry}}/$app:{{tag}} .";     done

# A real single-node Kubernetes cluster on this machine (as root): containerd, the kubelet
# and the control plane built from the package registries, CoreDNS, the Dapr control plane
# from Dapr's own chart, and the Taskmesh images imported. Cached builds; see the README.
k8s-up:
    cargo build --workspace --bins
    scripts/k8s-up.sh

# Stops the cluster of `just k8s-up` and removes everything it made on the machine.
k8s-down:
    scripts/k8s-down.sh

# The Helm chart installed, upgraded, disturbed and removed on the cluster of `just k8s-up`.
test-k8s:
    cargo build --workspace --bins
    scripts/test-k8s.sh

# Format check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    "$(scripts/setup-chart-tools.sh)/hadolint" Dockerfile

# Lint and every test without a cluster (.ci/run then runs k8s-up, test-k8s, k8s-down).
ci: lint test

# Load-test the task API on SQLite and PostgreSQL and print throughput, latency, RSS.
bench-api: setup
    cargo build --release -p task-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-api"

# The event path through real daprd on Redis Streams and Kafka: PublishEvent and
# BulkPublishEvent ceilings (the relay's batches), the outbox relay draining a 20,000
# backlog as a ratio to the latter, CPU per event, CreateTask-to-subscriber latency at 500/s
# (BENCH_BROKERS, BENCH_BACKLOG, BENCH_SECS, BENCH_RATE).
bench-events: setup
    cargo build --release -p task-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-events"

# analytics-service's events/s for a user with 100 and with 100,000 tasks (seeded through
# daprd first; BENCH_LIGHT_TASKS, BENCH_HEAVY_TASKS, BENCH_EVENTS), and their ratio.
bench-analytics: setup
    cargo build --release -p analytics-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-analytics"

# task-service at 10,000 and at 1,000,000 tasks (or `just bench-scale 100000`), on SQLite
# and PostgreSQL seeded in bulk: every read and write's rate, p50, p99 and their ratios,
# RSS, bytes per task; BENCH_SCALE_RELAY=1 adds the outbox relay draining as many events.
bench-scale *args: setup
    cargo build --release -p task-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-scale" "$@"

# The subscriber services on Redis through real daprd: each one's events/s as a ratio to a
# subscriber that does nothing (analytics and notifications new and redelivered, recurring
# completions), CPU per event, CompleteTask-to-next-occurrence latency (BENCH_EVENTS).
bench-consumers: setup
    cargo build --release --workspace --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-consumers"

# WatchTasks on two replicas sharing PostgreSQL: change-to-watcher latency p50/p99 (through
# the watcher's replica and through the other), deliveries/s, cut-offs and RSS at each
# number of watchers per replica (BENCH_WATCHERS=50,200,500,1000; BENCH_USERS,
# BENCH_RATE, BENCH_SECS, BENCH_P99_MS), and up to which it holds.
bench-watch: setup
    cargo build --release -p task-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-watch"

# The whole system under steady mixed load with one fault of the matrix injected every
# minute, then lost, duplicated, max backlog and every process's RSS; e.g. `just soak`,
# `just soak 30 kafka` (Kafka with SASL/SCRAM over TLS).
soak minutes="10" broker="redis": setup
    cargo build --release --workspace --bins
    "${CARGO_TARGET_DIR:-target}/release/soak" {{minutes}} {{broker}}

# Under `just up`: `just deadletters recurring-service` lists; after a fix `just deadletters
# recurring-service replay <event id>` (or `replay --all`) runs them through the app's
# handler again; `discard <id>|--all` forgets them.
# A subscriber's dead letters (events it failed): list, replay after a fix, or discard.
deadletters app action="list" which="":
    scripts/deadletters.sh {{app}} {{action}} {{which}}

# Run grpcurl (built from the Go module proxy on first use), e.g. `just grpcurl -plaintext localhost:50051 list`.
grpcurl *args:
    "$(scripts/setup-go-tool.sh grpcurl {{grpcurl_module}})" "$@"

# Run taskctl, e.g. `just taskctl list`.
taskctl *args:
    cargo run -q -p taskctl -- "$@"
