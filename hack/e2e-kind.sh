#!/usr/bin/env bash
# e2e-kind.sh - the same end-to-end suite against a kind cluster: builds the
# kubelvs and e2e-echo images, loads them into kind, installs the chart and
# runs test/e2e with -kubeconfig. Needs docker, kind, helm and kubectl.
# (Our CI machines have no Docker engine; `make e2e` runs the suite in a
# guest kernel there instead.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-kubelvs-e2e}
IMG=${IMG:-ghcr.io/kubelvs/kubelvs:dev}
ECHO_IMG=${ECHO_IMG:-kubelvs/e2e-echo:dev}
KUBECONFIG_FILE=$(mktemp)
trap 'rm -f "$KUBECONFIG_FILE"' EXIT

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 3m
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
docker build -t "$IMG" .
docker build -f test/e2e/echo/Dockerfile -t "$ECHO_IMG" .
kind load docker-image --name "$CLUSTER" "$IMG" "$ECHO_IMG"
kubectl --kubeconfig "$KUBECONFIG_FILE" create namespace kubelvs-system --dry-run=client -o yaml |
	kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f -
kubectl --kubeconfig "$KUBECONFIG_FILE" label namespace kubelvs-system pod-security.kubernetes.io/enforce=privileged --overwrite
helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install kubelvs charts/kubelvs -n kubelvs-system \
	--set image.repository="${IMG%:*}" --set image.tag="${IMG##*:}" --set image.pullPolicy=IfNotPresent --wait --timeout 5m
KUBELVS_IMAGE="$IMG" go test -tags e2e -count=1 -timeout 30m ./test/e2e -v -args \
	-kubeconfig "$KUBECONFIG_FILE" -echo-image "$ECHO_IMG"
