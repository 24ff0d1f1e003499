#!/usr/bin/env bash
# bench.sh - the scale benchmarks of issue 6 (what `make bench` runs): in
# ONE guest kernel boot (hack/run-in-vm.sh), kubelvs's syncer against
# `ipvsadm -R` and the kube-proxy IPVS pattern on the identical rule set at
# each size, then the conntrack, ipset, resync, single-change and memory
# scenarios. Writes bench/results.json and renders bench/results.svg.
#
#   hack/bench.sh                                  # 1,000 and 10,000 virtual servers
#   KUBELVS_BENCH_SIZES=1000,10000,30000 VM_MEM=4096 hack/bench.sh
#   VM_BACKEND=qemu VM_CPUS=2 hack/bench.sh        # stock Debian kernel under QEMU
#   hack/bench.sh -test.cpuprofile=/abs/dir/cpu.out   # extra test binary flags
#
# See BENCHMARKS.md for what each figure measures.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# A directory of its own: test-kernel.sh wipes its output directory, and
# other engineers may run it concurrently in the same checkout.
OUT=${KERNEL_TEST_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/bench}
RESULTS=${KUBELVS_BENCH_OUT:-$ROOT/bench/results.json}
mkdir -p "$OUT" "$(dirname "$RESULTS")"
go test -c -o "$OUT/bench.test" ./test/bench

host_cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
export KUBELVS_BENCH_GUEST=${VM_BACKEND:-uml}
export KUBELVS_BENCH_HOST="$(nproc) x ${host_cpu:-unknown CPU}"
export KUBELVS_BENCH_OUT=$RESULTS
export KUBELVS_KERNEL_TESTS=1
# Write into the results directory from the guest.
export VM_RW_PATHS=$(dirname "$RESULTS")${VM_RW_PATHS:+:$VM_RW_PATHS}
start=$SECONDS
(cd "$ROOT/test/bench" && env VM_MEM="${VM_MEM:-3072}" "$ROOT/hack/run-in-vm.sh" "$OUT/bench.test" \
	-test.run '^$' -test.bench 'BenchmarkScale' -test.benchtime 1x -test.v -test.timeout 2h "$@")
echo "bench: guest run took $((SECONDS - start)) s" >&2
go run ./bench/plot -in "$RESULTS" -out "${RESULTS%.json}.svg"
echo "bench: wrote $RESULTS and ${RESULTS%.json}.svg" >&2
