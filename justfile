# Taskmesh: the entry point for people and CI. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_BUILD_JOBS := env_var_or_default("CARGO_BUILD_JOBS", "2")

grpcurl_module := "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"

default:
    @just --list

# Install what the tests need (PostgreSQL server binaries from the Debian packages).
setup:
    scripts/setup-postgres.sh

# Build every crate.
build:
    cargo build --workspace --all-targets

# Run task-service on SQLite in dev mode (public dev secret, loudly logged) on :50051.
up:
    mkdir -p .data
    TASKMESH_DEV_MODE="${TASKMESH_DEV_MODE:-true}" \
    DATABASE_URL="${DATABASE_URL:-sqlite://$PWD/.data/task-service.db?mode=rwc}" \
    cargo run --release -p task-service

# Every test: unit, API (SQLite and a throwaway PostgreSQL), process and CLI tests.
test: setup
    cargo test --workspace --all-targets --no-fail-fast

# Format check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# What CI runs.
ci: lint test

# Load-test the task API on SQLite and PostgreSQL and print throughput, latency, RSS.
bench-api: setup
    cargo build --release -p task-service -p taskmesh-integration --bins
    "${CARGO_TARGET_DIR:-target}/release/bench-api"

# Run grpcurl (built from the Go module proxy on first use), e.g. `just grpcurl -plaintext localhost:50051 list`.
grpcurl *args:
    "$(scripts/setup-go-tool.sh grpcurl {{grpcurl_module}})" {{args}}

# Run taskctl, e.g. `just taskctl list`.
taskctl *args:
    cargo run -q --release -p taskctl -- {{args}}
