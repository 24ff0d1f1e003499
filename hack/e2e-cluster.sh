#!/usr/bin/env bash
# e2e-cluster.sh - the end-to-end suite's cluster driver against a real
# single-node Kubernetes cluster (kubelet, containerd, runc, CNI) in a
# throw-away guest kernel: the kubelvs image and the Helm chart as pods.
#
#   hack/e2e-cluster.sh [test binary flags, e.g. -test.run 'TestE2E/wrr']
#
# Host side: builds the binaries (hack/install-test-bins.sh: Kubernetes,
# containerd, helm; cached), the images (hack/build-images.sh: kubelvs,
# e2e-echo, pause; cached), the suite, and takes the previous release from
# git ($PREVIOUS_CHART_REF): its chart, and its image built from its source
# with this tree's hack/build-images.sh (cached in $KUBELVS_IMAGE_DIR/previous);
# then boots the guest (hack/run-in-vm.sh), where hack/guest-cluster.sh
# brings the cluster up and runs the suite with -install: it installs the
# previous chart with the previous image, upgrades to charts/kubelvs and
# this image, and ends with helm uninstall. Logs of every component:
# $E2E_OUT/logs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${E2E_OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/e2e-cluster}
BINS=${K8S_TEST_BINS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-test-bins}
export KUBELVS_IMAGE_DIR=${KUBELVS_IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/images}
# The release before AddressPools existed (and before the CRD gained bounds
# on integer targetPorts): `helm upgrade` from it must bring the new CRDs,
# and the upgrade must keep traffic flowing once pools are enforced.
PREVIOUS_CHART_REF=${PREVIOUS_CHART_REF:-e5bb4a7c8ff3293371090771d1b67c19f4615e6c}
start=$EPOCHREALTIME
stamp() { awk -v a="$start" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN {printf "e2e-cluster: %s (+%.0fs)\n", m, b - a}' >&2; }

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
	need=()
	for p in runc containernetworking-plugins openssl iptables iproute2 ipvsadm; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
	done
	if ((${#need[@]})); then
		stamp "installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
			{ apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
	fi
fi

stamp "binaries (Kubernetes, containerd, helm; cached in $BINS)"
TOOLS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl helm containerd containerd-shim-runc-v2 ctr" \
	hack/install-test-bins.sh "$BINS" >/dev/null
stamp "images (cached in $KUBELVS_IMAGE_DIR)"
hack/build-images.sh >&2
IMG=$(awk '$1 == "kubelvs.tar" {print $2}' "$KUBELVS_IMAGE_DIR/images.txt")
ECHO_IMG=$(awk '$1 == "e2e-echo.tar" {print $2}' "$KUBELVS_IMAGE_DIR/images.txt")

stamp "the suite and the previous chart ($PREVIOUS_CHART_REF)"
mkdir -p "$OUT"
rm -rf "$OUT/logs" "$OUT/previous"
mkdir -p "$OUT/logs" "$OUT/previous"
go test -c -tags e2e -o "$OUT/e2e.test" ./test/e2e
git cat-file -e "$PREVIOUS_CHART_REF^{commit}" 2>/dev/null ||
	{ echo "e2e-cluster: commit $PREVIOUS_CHART_REF (the previous chart) is not in this clone; fetch the full history" >&2; exit 1; }
git archive "$PREVIOUS_CHART_REF" | tar -x -C "$OUT/previous"
# Its image, from its source: the Dockerfile of then, the build script of
# now (which older trees lack). Cached by the hash of those inputs.
mkdir -p "$OUT/previous/hack"
cp hack/build-images.sh "$OUT/previous/hack/build-images.sh"
PREV_IMAGE_DIR=$KUBELVS_IMAGE_DIR/previous
stamp "the previous release's image (cached in $PREV_IMAGE_DIR)"
KUBELVS_IMAGE_DIR=$PREV_IMAGE_DIR KUBELVS_IMAGES=kubelvs VERSION="previous-${PREVIOUS_CHART_REF:0:12}" \
	IMG="localhost/kubelvs/kubelvs:previous-${PREVIOUS_CHART_REF:0:12}" "$OUT/previous/hack/build-images.sh" >&2
PREV_IMG=$(awk '$1 == "kubelvs.tar" {print $2}' "$PREV_IMAGE_DIR/images.txt")
export KUBELVS_EXTRA_IMAGES=$PREV_IMAGE_DIR/kubelvs.tar

rm -rf "$OUT/pki"
hack/guest-cluster.sh --pki "$OUT/pki"

stamp "booting the guest kernel"
export K8S_TEST_BINS_DIR=$BINS CLUSTER_LOGS=$OUT/logs CLUSTER_PKI=$OUT/pki
export VM_MEM=${VM_MEM:-4096} VM_TIMEOUT=${VM_TIMEOUT:-4200}
export VM_RW_PATHS=$OUT
rc=0
hack/run-in-vm.sh hack/guest-cluster.sh -- \
	"$OUT/e2e.test" -test.v -test.timeout 65m \
	-kubeconfig /var/lib/kubelvs-cluster/admin.kubeconfig -install \
	-chart "$ROOT/charts/kubelvs" -previous-chart "$OUT/previous/charts/kubelvs" \
	-image "$IMG" -previous-image "$PREV_IMG" -echo-image "$ECHO_IMG" "$@" || rc=$?
stamp "done (exit $rc); component logs in $OUT/logs"
exit "$rc"
