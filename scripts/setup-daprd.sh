#!/usr/bin/env bash
# Provides daprd (and, on request, scheduler/placement) built from the Go module proxy.
# Prints the path of daprd. Order of preference: $DAPRD, ~/.dapr/bin/daprd, the cache,
# a fresh build. The cache is keyed by version and build tags so warm runs take no time.
set -euo pipefail

# v1.18.1, not v1.18.3: v1.18.2 and later need github.com/dapr/durabletask-go v0.12.2+ and
# a pulsar-client-go fork that the Go module proxy refuses ("403: This module version is
# not available"); v1.18.1 resolves completely. The dapr crate 0.20 targets 1.18.x.
DAPR_VERSION="${DAPR_VERSION:-v1.18.1}"
DAPR_TAGS="${DAPR_TAGS:-stablecomponents}"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
BIN="$CACHE/dapr-$DAPR_VERSION-$DAPR_TAGS/bin"
WANT="${1:-daprd}" # daprd | scheduler | placement

if [ "$WANT" = daprd ]; then
  if [ -n "${DAPRD:-}" ] && [ -x "$DAPRD" ]; then echo "$DAPRD"; exit 0; fi
  if [ -x "$HOME/.dapr/bin/daprd" ]; then echo "$HOME/.dapr/bin/daprd"; exit 0; fi
fi
if [ -x "$BIN/$WANT" ]; then echo "$BIN/$WANT"; exit 0; fi

command -v go >/dev/null || { echo "setup-daprd: Go is required to build $WANT" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw
mkdir -p "$BIN"
src="$CACHE/dapr-src-$DAPR_VERSION"
if [ ! -f "$src/go.mod" ]; then
  echo "setup-daprd: downloading github.com/dapr/dapr@$DAPR_VERSION from the Go module proxy" >&2
  dir=$(go mod download -json "github.com/dapr/dapr@$DAPR_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$src.tmp" && cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp" && mv "$src.tmp" "$src"
fi
cd "$src"
tags=""
[ "$WANT" = daprd ] && tags="$DAPR_TAGS"
echo "setup-daprd: building $WANT $DAPR_VERSION (tags: ${tags:-none}); a cold build takes 10-20 minutes" >&2
go build -p 2 -trimpath ${tags:+-tags "$tags"} \
  -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v} -X github.com/dapr/kit/logger.DaprVersion=${DAPR_VERSION#v}" \
  -o "$BIN/$WANT.tmp" "./cmd/$WANT" >&2
mv "$BIN/$WANT.tmp" "$BIN/$WANT"
echo "$BIN/$WANT"
