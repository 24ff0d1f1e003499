#!/usr/bin/env bash
# demo.sh - `make demo`: on a fresh machine, install what is needed, boot a
# guest kernel, start etcd, kube-apiserver, the controller and the agent,
# apply examples/, send TCP and UDP traffic and show what happened.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/demo
mkdir -p "$OUT"
echo "demo: building etcd, kube-apiserver, kubectl and helm if missing (first time: 7-10 minutes)" >&2
bins=$(hack/install-test-bins.sh | sed -n 's/^export KUBEBUILDER_ASSETS=//p')
export KUBEBUILDER_ASSETS=${bins:-$HOME/.cache/k8s-test-bins}
echo "demo: compiling kubelvs" >&2
go test -c -tags demo -o "$OUT/demo.test" ./test/demo
CGO_ENABLED=0 go build -o "$OUT/manager" ./cmd/manager
export KUBELVS_MANAGER="$OUT/manager" KUBELVS_KERNEL_TESTS=1 VM_MEM=${VM_MEM:-2048}
echo "demo: booting a guest kernel with IPVS (installs user-mode-linux, ipvsadm, ipset, iptables if missing)" >&2
cd test/demo
exec "$ROOT/hack/run-in-vm.sh" "$OUT/demo.test" -test.run TestDemo
