#!/usr/bin/env bash
# e2e-kind.sh - the end-to-end suite's cluster driver against a kind cluster:
# builds the kubelvs and e2e-echo images, loads them into kind and runs
# test/e2e with -install, so the suite installs the chart itself (the chart
# of PREVIOUS_CHART_REF first, if set, and upgrades from it), upgrades it and
# ends with helm uninstall. Needs docker, kind, helm and kubectl. (Our CI
# machines have no Docker engine; `make e2e` runs the suite in a guest kernel
# there instead.)
#
#   hack/e2e-kind.sh [test binary flags, e.g. -test.run 'TestE2E/wrr']
#
# KIND_CLUSTER (kubelvs-e2e; created when missing), IMG, ECHO_IMG,
# RELEASE (kubelvs), RELEASE_NAMESPACE (kubelvs-system),
# PREVIOUS_CHART_REF (a commit whose charts/kubelvs to upgrade from).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-kubelvs-e2e}
IMG=${IMG:-ghcr.io/kubelvs/kubelvs:dev}
ECHO_IMG=${ECHO_IMG:-kubelvs/e2e-echo:dev}
RELEASE=${RELEASE:-kubelvs}
RELEASE_NAMESPACE=${RELEASE_NAMESPACE:-kubelvs-system}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 3m
kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
docker build -t "$IMG" .
docker build -f test/e2e/echo/Dockerfile -t "$ECHO_IMG" .
kind load docker-image --name "$CLUSTER" "$IMG" "$ECHO_IMG"

args=(-kubeconfig "$WORK/kubeconfig" -install -release "$RELEASE" -release-namespace "$RELEASE_NAMESPACE"
	-chart "$ROOT/charts/kubelvs" -image "$IMG" -echo-image "$ECHO_IMG")
if [[ -n ${PREVIOUS_CHART_REF:-} ]]; then
	git archive "$PREVIOUS_CHART_REF" charts/kubelvs | tar -x -C "$WORK"
	args+=(-previous-chart "$WORK/charts/kubelvs")
fi
go test -tags e2e -count=1 -timeout 45m ./test/e2e -v -args "${args[@]}" "$@"
