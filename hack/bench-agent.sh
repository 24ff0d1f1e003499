#!/usr/bin/env bash
# bench-agent.sh - EndpointSlice -> kernel latency of the agent binary with
# 1,000 VirtualServices (issue 4): etcd, kube-apiserver and the agent run
# inside one User-Mode-Linux guest (hack/test-kernel.sh), which programs real
# IPVS. Reports the initial programming time of the 1,000 VirtualServices
# (s-initial) and the p50/p90/p99/max latency (ms-*) of 100 EndpointSlice
# updates, measured end to end from issuing the API write until the new real
# server is seen through netlink, for three agent configurations:
#   status=on                  default flags, $KUBECONFIG (in-cluster-like client)
#   status=on,kubeconfig-flag  default flags, --kubeconfig (client-go's 5 QPS limit)
#   status=off                 --report-status=false
#
#   hack/bench-agent.sh [extra test binary flags]
#   hack/bench-agent.sh -test.bench 'EndpointSliceToKernel/status=off'
#   KUBELVS_BENCH_AGENT_FLAGS=--health-checks=false hack/bench-agent.sh
#
# The guest has ONE CPU shared by etcd, kube-apiserver, the agent and the
# poller, and UML system calls are slow: figures are far slower than on a
# real node; compare them with each other, not with production targets.
# etcd + kube-apiserver + the agent + 1,000 objects need more than the
# default 1024 MiB of guest memory: VM_MEM=2048.
#
# KERNEL_TEST_OUT defaults to a directory of its own: test-kernel.sh wipes
# and rewrites its output directory, and a concurrent run of it elsewhere in
# the same checkout would otherwise swap the binaries under this one.
set -euo pipefail
export KERNEL_TEST_OUT=${KERNEL_TEST_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/bench-agent}
exec env VM_MEM="${VM_MEM:-2048}" "$(dirname "$0")/test-kernel.sh" \
	-test.run '^$' -test.bench EndpointSliceToKernel -test.benchtime 1x -test.v "$@"
