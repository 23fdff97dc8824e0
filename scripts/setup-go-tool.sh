#!/usr/bin/env bash
# Installs a Go tool from the Go module proxy into the cache, keyed by version, and prints
# its path. Usage: setup-go-tool.sh NAME MODULE/PATH/cmd/NAME@VERSION
set -euo pipefail

name="$1"
module="$2"
version="${module##*@}"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
bin="$CACHE/go-tools/$name-$version"
if [ ! -x "$bin/$name" ]; then
  echo "setup-go-tool: building $module" >&2
  mkdir -p "$bin"
  GOBIN="$bin" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw go install -trimpath "$module" >&2
fi
echo "$bin/$name"
