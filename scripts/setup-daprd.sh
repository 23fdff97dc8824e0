#!/usr/bin/env bash
# Provides daprd (or, with an argument, another command of the dapr module: scheduler,
# placement, and for the cluster of `just k8s-up` operator, injector, sentry) built from the
# Go module proxy. Prints the path of the binary. For daprd the order of preference is
# $DAPRD, ~/.dapr/bin/daprd (a normal Dapr install), the cache, a fresh build; `daprd
# --build` skips the first two (an image must hold this version). The cache is keyed by
# version and component set, so warm runs take no time.
set -euo pipefail

# v1.18.1, not v1.18.3: v1.18.2 and later need github.com/dapr/durabletask-go v0.12.2+ and
# a pulsar-client-go fork that the Go module proxy refuses ("403: This module version is
# not available"); v1.18.1 resolves completely. The dapr crate 0.20 targets 1.18.x.
DAPR_VERSION="${DAPR_VERSION:-v1.18.1}"
# The stable components plus two from the `allcomponents` set that Taskmesh uses: the SMTP
# output binding (notification e-mail, alpha in Dapr) and the SQLite name resolver (for
# hosts where mDNS does not work). Building all components would double the build.
EXTRA_COMPONENTS="bindings_smtp nameresolution_sqlite"
FLAVOUR="stable+smtp+sqlitenr"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
BIN="$CACHE/dapr-$DAPR_VERSION-$FLAVOUR/bin"
WANT="${1:-daprd}" # daprd | scheduler | placement | operator | injector | sentry

if [ "$WANT" = daprd ] && [ "${2:-}" != --build ]; then
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
if [ "$WANT" = scheduler ]; then
  # The scheduler (Jobs API) needs github.com/diagridio/go-etcd-cron v0.12.5, which the
  # proxy refuses; v0.12.3 is served and builds. Its sum is not in the checksum database,
  # so only this module skips it. A separate copy keeps daprd's source untouched.
  sched="$src-scheduler"
  if [ ! -f "$sched/go.mod" ]; then
    rm -rf "$sched.tmp" && cp -r "$src" "$sched.tmp"
    (cd "$sched.tmp" && go mod edit -replace \
      github.com/diagridio/go-etcd-cron=github.com/diagridio/go-etcd-cron@v0.12.3)
    mv "$sched.tmp" "$sched"
  fi
  src="$sched"
  export GONOSUMDB=github.com/diagridio/go-etcd-cron GOFLAGS="-mod=mod -modcacherw"
fi
cd "$src"
tags=""
if [ "$WANT" = daprd ]; then
  tags=stablecomponents
  for component in $EXTRA_COMPONENTS; do
    file="cmd/daprd/components/$component.go"
    grep -q '^//go:build allcomponents$' "$file" \
      && sed -i 's#^//go:build allcomponents$#//go:build allcomponents || stablecomponents#' "$file"
  done
fi
echo "setup-daprd: building $WANT $DAPR_VERSION (${tags:-no tags}); a cold build takes 10-20 minutes" >&2
go build -p 2 -trimpath ${tags:+-tags "$tags"} \
  -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v} -X github.com/dapr/kit/logger.DaprVersion=${DAPR_VERSION#v}" \
  -o "$BIN/$WANT.tmp" "./cmd/$WANT" >&2
mv "$BIN/$WANT.tmp" "$BIN/$WANT"
echo "$BIN/$WANT"
