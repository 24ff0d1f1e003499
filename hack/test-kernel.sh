#!/usr/bin/env bash
# test-kernel.sh - run the kernel tests of kubelvs in a throw-away guest
# kernel (hack/run-in-vm.sh): real IPVS, ipset, conntrack, netfilter and
# traffic across network namespaces.
#
#   hack/test-kernel.sh [test binary flags...]
#   hack/test-kernel.sh -test.v -test.run 'Traffic'
#   hack/test-kernel.sh -test.run '^$' -test.bench . -test.benchtime 1x   # see bench-kernel.sh
#
# Every package whose tests call kerneltest.Require is compiled on the host
# (go test -c; the guest has no network and forks slowly), then all binaries
# run in ONE guest boot, each from its package directory, with
# KUBELVS_KERNEL_TESTS=1. Flags come from the arguments or KERNEL_TEST_FLAGS.
# The exit status is non-zero if any binary fails. VM_BACKEND=qemu runs them
# on a stock Debian kernel (nf_tables) instead of User-Mode Linux.
# RACE=1 compiles the test binaries and the manager with the race detector;
# it needs VM_BACKEND=qemu (the race runtime's shadow memory does not map in
# User-Mode Linux) and is what `make test-race` runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${KERNEL_TEST_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/kernel-tests}
# shellcheck disable=SC2206 # split on purpose
FLAGS=(${KERNEL_TEST_FLAGS:-} "$@")

mapfile -t PKGS < <(grep -rl --include='*_test.go' 'kerneltest.Require' pkg test | xargs -n1 dirname | sort -u | sed 's|^|./|')
((${#PKGS[@]})) || { echo "test-kernel: no kernel tests found" >&2; exit 1; }

rm -rf "$OUT" && mkdir -p "$OUT"
RACEFLAG=()
if [[ ${RACE:-0} == 1 ]]; then
	[[ ${VM_BACKEND:-uml} == qemu ]] || { echo "test-kernel: RACE=1 needs VM_BACKEND=qemu" >&2; exit 2; }
	RACEFLAG=(-race)
	export KUBELVS_TIMEOUT_SCALE=${KUBELVS_TIMEOUT_SCALE:-4}
fi
echo "test-kernel: compiling ${#PKGS[@]} test binaries and the manager ${RACEFLAG[*]}" >&2
go test -c "${RACEFLAG[@]}" -o "$OUT/" "${PKGS[@]}"
# The agent tests run the real binary against etcd and kube-apiserver
# started inside the guest (hack/install-test-bins.sh builds them).
if ((${#RACEFLAG[@]})); then
	go build -race -o "$OUT/manager" ./cmd/manager
else
	CGO_ENABLED=0 go build -o "$OUT/manager" ./cmd/manager
fi
export KUBELVS_MANAGER="$OUT/manager"
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}}
: >"$OUT/list"
for p in "${PKGS[@]}"; do
	bin="$OUT/$(basename "$p").test"
	[[ -x $bin ]] || continue # a package with no tests for this build
	printf '%s %s\n' "$bin" "$ROOT/${p#./}" >>"$OUT/list"
done

# The guest side: run every binary, remember failures, report once.
cat >"$OUT/guest.sh" <<'GUEST'
#!/bin/bash
list=$1; shift
fail=()
while read -r bin dir; do
	echo "=== kernel tests: ${dir#"$PWD"/}" >&2
	if ! (cd "$dir" && "$bin" "$@"); then fail+=("$dir"); fi
done <"$list"
if ((${#fail[@]})); then
	echo "--- kernel tests FAILED in: ${fail[*]}" >&2
	exit 1
fi
echo "--- kernel tests passed" >&2
GUEST
chmod +x "$OUT/guest.sh"
# Guest memory: run-in-vm.sh's default VM_MEM=1024 MiB suffices; the largest
# test (test/multinode: etcd, kube-apiserver and three agents) still leaves
# about 570 MiB available.
KUBELVS_KERNEL_TESTS=1 exec "$ROOT/hack/run-in-vm.sh" "$OUT/guest.sh" "$OUT/list" "${FLAGS[@]}"
