#!/usr/bin/env bash
# Prints the path of a dapr CLI: `dapr` on PATH or ~/.dapr/bin/dapr when present, else one
# built from the Go module proxy (cached outside the repo, keyed by version).
#
# Why v1.12.0: the proxy refuses every later github.com/dapr/cli release we tried (403
# "This module version is not available": v1.13.0 to v1.18.2) and its version list, which
# is also why `go install ...@v1.12.0` fails (it reads the list for deprecations). The
# v1.12.0 module zip itself is served, so it builds from a writable copy, as daprd does.
# What Taskmesh uses of the CLI (`dapr invoke`, `dapr list`, `dapr run -f`) is the same
# in 1.12 and talks to our 1.18 sidecars over their stable HTTP API.
set -euo pipefail

if command -v dapr >/dev/null; then command -v dapr; exit 0; fi
if [ -x "$HOME/.dapr/bin/dapr" ]; then echo "$HOME/.dapr/bin/dapr"; exit 0; fi

VERSION="${DAPR_CLI_VERSION:-v1.12.0}"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
bin="$CACHE/dapr-cli-$VERSION"
if [ ! -x "$bin/dapr" ]; then
  command -v go >/dev/null || { echo "setup-dapr-cli: Go is required to build the dapr CLI" >&2; exit 1; }
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw
  echo "setup-dapr-cli: building github.com/dapr/cli@$VERSION from the Go module proxy" >&2
  dir=$(go mod download -json "github.com/dapr/cli@$VERSION" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no module directory")))')
  src="$CACHE/dapr-cli-src-$VERSION"
  rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  mkdir -p "$bin"
  (cd "$src" && go build -p 2 -trimpath \
    -ldflags "-s -w -X main.version=${VERSION#v} -X main.apiVersion=1.0" \
    -o "$bin/dapr.tmp" . >&2)
  mv "$bin/dapr.tmp" "$bin/dapr"
  rm -rf "$src"
fi
echo "$bin/dapr"
