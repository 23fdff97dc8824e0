#!/usr/bin/env bash
# Prints the path of a dapr CLI: `dapr` on PATH or ~/.dapr/bin/dapr when present, else one
# built from the Go module proxy (cached outside the repo, keyed by version).
# On this project's build machines the proxy refuses every github.com/dapr/cli version
# (403 "This module version is not available", checked for v1.14.1 to v1.18.2), so there
# the CLI must come from a normal Dapr install.
set -euo pipefail

if command -v dapr >/dev/null; then command -v dapr; exit 0; fi
if [ -x "$HOME/.dapr/bin/dapr" ]; then echo "$HOME/.dapr/bin/dapr"; exit 0; fi

VERSION=v1.18.0
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
bin="$CACHE/dapr-cli-$VERSION"
if [ ! -x "$bin/dapr" ]; then
  echo "setup-dapr-cli: building github.com/dapr/cli@$VERSION" >&2
  mkdir -p "$bin"
  if ! GOBIN="$bin" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw go install -trimpath \
    -ldflags "-s -w -X main.version=${VERSION#v} -X main.apiVersion=1.0" \
    "github.com/dapr/cli@$VERSION" >&2; then
    echo "setup-dapr-cli: the Go module proxy did not serve the dapr CLI; install Dapr's CLI and put it on PATH" >&2
    exit 1
  fi
  mv "$bin/cli" "$bin/dapr"
fi
echo "$bin/dapr"
