#!/usr/bin/env bash
# helm-test.sh: lint and render the chart, check dist/install.yaml and the
# chart's CRD copy are current, then run test/chart (rendered objects, schema
# rejections, RBAC and CRD parity) with helm required rather than skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}
helm=$bins/helm
[[ -x $helm ]] || { echo "helm-test.sh: $helm not found; run 'make test-bins'" >&2; exit 1; }

"$helm" lint --strict charts/kubelvs
"$helm" lint --strict charts/kubelvs -f test/chart/testdata/values-custom.yaml
"$helm" template kubelvs charts/kubelvs -n kubelvs-system >/dev/null
"$helm" template kubelvs charts/kubelvs -n kubelvs-system -f test/chart/testdata/values-custom.yaml >/dev/null
hack/gen-install.sh --check
KUBEBUILDER_ASSETS=$bins KUBELVS_REQUIRE_ENVTEST=1 go test -count=1 ./test/chart/
