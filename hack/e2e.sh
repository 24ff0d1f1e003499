#!/usr/bin/env bash
# e2e.sh - the end-to-end suite (test/e2e, build tag e2e) with the local
# driver: inside a throw-away guest kernel, etcd and kube-apiserver, the
# controller and the agent as processes (with the RBAC of the Helm chart),
# backends and clients in network namespaces.
#
#   hack/e2e.sh [test binary flags, e.g. -test.run 'TestE2E/wrr' -test.v]
#
# RACE=1 builds the suite and the manager with the race detector; it needs
# VM_BACKEND=qemu (the race runtime does not run in User-Mode Linux) and is
# what `make test-race` runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${E2E_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/e2e}
mkdir -p "$OUT"
echo "e2e: compiling the suite and the manager" >&2
if [[ ${RACE:-0} == 1 ]]; then
	[[ ${VM_BACKEND:-uml} == qemu ]] || { echo "e2e: RACE=1 needs VM_BACKEND=qemu" >&2; exit 2; }
	export KUBELVS_TIMEOUT_SCALE=${KUBELVS_TIMEOUT_SCALE:-4}
	go test -c -race -tags e2e -o "$OUT/e2e.test" ./test/e2e
	go build -race -o "$OUT/manager" ./cmd/manager
else
	go test -c -tags e2e -o "$OUT/e2e.test" ./test/e2e
	CGO_ENABLED=0 go build -o "$OUT/manager" ./cmd/manager
fi
export KUBELVS_MANAGER="$OUT/manager"
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}}
export KUBELVS_KERNEL_TESTS=1
export VM_MEM=${VM_MEM:-2048}
cd test/e2e
echo "e2e: booting the guest kernel" >&2
exec "$ROOT/hack/run-in-vm.sh" "$OUT/e2e.test" -test.v -test.timeout 20m "$@"
