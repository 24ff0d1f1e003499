#!/usr/bin/env bash
# bench.sh - the scale benchmarks of issue 6 (what `make bench` runs):
# kubelvs's syncer against `ipvsadm -R` and the kube-proxy IPVS pattern on
# the identical rule set at each size, the conntrack, ipset, resync,
# single-change and memory scenarios, and the agent binary's API-to-kernel
# latency and memory, in guest kernels (hack/run-in-vm.sh). Writes
# bench/results.json and renders bench/results.svg.
#
#   hack/bench.sh                                  # 1,000 and 10,000 virtual servers
#   KUBELVS_BENCH_SIZES=1000,10000,30000 VM_MEM=4096 hack/bench.sh
#   VM_BACKEND=qemu VM_CPUS=2 hack/bench.sh        # stock Debian kernel under QEMU
#   hack/bench.sh -test.cpuprofile=/abs/dir/cpu.out   # extra test binary flags
#   KUBELVS_BENCH_PHASES=agent hack/bench.sh       # only the agent binary's figures
#   KUBELVS_BENCH_AGENT_ARGS=--resync-period=15s   # extra agent flags
#   KUBELVS_BENCH_AGENT_SAMPLES=200                # single changes per scenario
#   KUBELVS_BENCH_BURST=1000                       # creates before the after-burst
#                                                  # samples (0: no burst scenario)
#   KUBELVS_BENCH_TRACE_SECONDS=30                 # an execution trace of the agent over
#                                                  # the burst's first 30 s (profiles/)
#   KUBELVS_BENCH_AGENT_NICE=-10                   # renice the agent before the burst: does
#                                                  # its tail wait for the guest's CPU?
#
# Two guest boots: the syncer-level scenarios and baselines (test/bench,
# writes the results file), then the agent binary against etcd and
# kube-apiserver in the guest (test/kernel BenchmarkAgentScale: API event
# and API write to kernel latency, agent memory; merged into the file).
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
PHASES=${KUBELVS_BENCH_PHASES:-syncer,agent}
go test -c -o "$OUT/bench.test" ./test/bench
go test -c -o "$OUT/kernel.test" ./test/kernel
CGO_ENABLED=0 go build -o "$OUT/manager" ./cmd/manager

host_cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
export KUBELVS_BENCH_GUEST=${VM_BACKEND:-uml}
export KUBELVS_BENCH_HOST="$(nproc) x ${host_cpu:-unknown CPU}"
export KUBELVS_BENCH_OUT=$RESULTS
export KUBELVS_KERNEL_TESTS=1
export KUBELVS_MANAGER=$OUT/manager
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}}
# Write into the results directory from the guest.
export VM_RW_PATHS=$(dirname "$RESULTS")${VM_RW_PATHS:+:$VM_RW_PATHS}
start=$SECONDS
if [[ ,$PHASES, == *,syncer,* ]]; then
	# Scenarios 1-6 at the syncer level and both baselines: writes a new
	# results file.
	(cd "$ROOT/test/bench" && env VM_MEM="${VM_MEM:-3072}" "$ROOT/hack/run-in-vm.sh" "$OUT/bench.test" \
		-test.run '^$' -test.bench 'BenchmarkScale' -test.benchtime 1x -test.v -test.timeout 2h "$@")
	echo "bench: syncer scenarios took $((SECONDS - start)) s in the guest" >&2
fi
if [[ ,$PHASES, == *,agent,* ]]; then
	# Scenarios 3 and 6 through the agent binary, etcd and kube-apiserver
	# in a second guest boot: adds an "agent" member to each size.
	[[ -x $KUBEBUILDER_ASSETS/kube-apiserver ]] || { echo "bench: no kube-apiserver in $KUBEBUILDER_ASSETS; run hack/install-test-bins.sh" >&2; exit 1; }
	t=$SECONDS
	# The agent's heap profile at each size (go tool pprof), beside the binaries.
	export KUBELVS_BENCH_PROFILE_DIR=$OUT/profiles
	mkdir -p "$KUBELVS_BENCH_PROFILE_DIR"
	(cd "$ROOT/test/kernel" && export VM_RW_PATHS=$VM_RW_PATHS:$KUBELVS_BENCH_PROFILE_DIR && env VM_MEM="${VM_MEM:-6144}" "$ROOT/hack/run-in-vm.sh" "$OUT/kernel.test" \
		-test.run '^$' -test.bench 'BenchmarkAgentScale' -test.benchtime 1x -test.v -test.timeout 3h "$@")
	echo "bench: agent scenarios took $((SECONDS - t)) s in the guest" >&2
fi
echo "bench: guest runs took $((SECONDS - start)) s" >&2
go run ./bench/plot -in "$RESULTS" -out "${RESULTS%.json}.svg"
echo "bench: wrote $RESULTS and ${RESULTS%.json}.svg" >&2
