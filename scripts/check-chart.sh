#!/usr/bin/env bash
# Checks of helm/taskmesh, offline: helm lint per environment; the chart tests
# (helm/tests/test_chart.py: Kubernetes schemas, Dapr's CRD schemas, what differs per
# environment, the values schema); checkov on the rendered manifests; hadolint on the
# Dockerfile; then every rendered object through a real kube-apiserver
# (scripts/check-chart-apiserver.sh). Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(scripts/setup-chart-tools.sh)"
export HELM="$bin/helm"
# Dapr's own CRDs, from the dapr module setup-daprd.sh downloaded.
dapr_version="$(grep -m1 '^DAPR_VERSION=' scripts/setup-daprd.sh | grep -o 'v[0-9]*\.[0-9]*\.[0-9]*')"
DAPR_CRDS="$(go env GOMODCACHE)/github.com/dapr/dapr@${dapr_version}/charts/dapr/crds"
if [ ! -d "$DAPR_CRDS" ]; then
  GOFLAGS=-modcacherw go mod download "github.com/dapr/dapr@${dapr_version}" >&2
fi
export DAPR_CRDS

for env in local staging prod; do
  echo "== helm lint ($env)"
  "$HELM" lint --strict helm/taskmesh -f "helm/taskmesh/values-$env.yaml" --quiet
done

echo "== chart tests"
"$bin/python" helm/tests/test_chart.py

# Findings we accept, each explained in helm/taskmesh/README.md.
accepted="CKV_K8S_43,CKV_K8S_35,CKV2_K8S_6"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for env in local staging prod; do
  echo "== checkov ($env)"
  "$HELM" template taskmesh helm/taskmesh -n taskmesh -f "helm/taskmesh/values-$env.yaml" \
    > "$rendered/$env.yaml"
  "$bin/checkov" -f "$rendered/$env.yaml" --framework kubernetes --compact --quiet \
    --skip-download --skip-check "$accepted"
done

echo "== hadolint"
"$bin/hadolint" Dockerfile

echo "== the chart in a real kube-apiserver"
scripts/check-chart-apiserver.sh
echo "chart checks passed"
