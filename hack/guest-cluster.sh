#!/usr/bin/env bash
# guest-cluster.sh - runs INSIDE a run-in-vm.sh guest kernel: brings up a real
# single-node Kubernetes cluster there, then runs a command against it.
#
#   run-in-vm.sh hack/guest-cluster.sh [--] <command> [args...]
#
# The node: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
# as processes; containerd (with runc and Debian's CNI plugins: a bridge
# cni0 with host-local addresses) and a kubelet that registers the guest as
# node "vmtest" and runs pods. The images from $KUBELVS_IMAGE_DIR (archives
# made by `make image`, listed in images.txt) are imported into containerd's
# k8s.io namespace first; the pause image is ours (test/cluster/pause).
#
# Addresses (all inside the guest, which has no network device):
#   node      192.0.2.10/24 on dummy node0 (TEST-NET-1; a default route via
#             it gives the kubelet its node IP)
#   pods      10.244.0.0/24 on bridge cni0
#   services  10.96.0.0/16; 10.96.0.1:443 reaches the API server through
#             two iptables DNAT rules (this node runs no kube-proxy)
#
# The command runs with KUBECONFIG (cluster admin), PATH holding kubectl,
# helm, ctr and the other binaries; its exit status is the script's. The
# components' logs go to $CLUSTER_LOGS (shared with the host).
#
# Env: K8S_TEST_BINS_DIR (etcd kube-apiserver kube-controller-manager
# kube-scheduler kubelet kubectl helm containerd containerd-shim-runc-v2 ctr),
# KUBELVS_IMAGE_DIR, KUBELVS_EXTRA_IMAGES (more archives to import,
# colon-separated paths), CLUSTER_LOGS, CLUSTER_PKI (made by --pki DIR on the host;
# otherwise made in the guest), CLUSTER_POD_SECURITY (the cluster-wide
# Pod Security level enforced on namespaces without a label; baseline).
set -euo pipefail

BIN=${K8S_TEST_BINS_DIR:-$HOME/.cache/k8s-test-bins}
IMAGES=${KUBELVS_IMAGE_DIR:-}
LOGS=${CLUSTER_LOGS:-/tmp/cluster-logs}
NODE=vmtest
NODE_IP=192.0.2.10
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
S=/var/lib/kubelvs-cluster
PKI=$S/pki
export PATH=$BIN:/usr/sbin:/usr/bin:/sbin:/bin
t0=$EPOCHREALTIME
say() { awk -v a="$t0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN {printf "cluster: %s (+%.1fs)\n", m, b - a}' >&2; }
die() { echo "cluster: $*" >&2; for f in "$LOGS"/*.log; do echo "--- tail $f" >&2; tail -n 25 "$f" >&2; done; exit 1; }
wait_for() { # SECONDS WHAT CMD...
	local n=$1 what=$2 deadline=$((SECONDS + $1))
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what: not after ${n}s"
		sleep 0.5
	done
}
# make_pki DIR: a CA, the serving and client certificates of every
# component, the service-account key pair (DIR/pki) and the kubeconfigs
# (DIR/NAME.kubeconfig). Slow in the guest (openssl and kubectl fork a lot
# under UML), so hack/e2e-cluster.sh makes them on the host with --pki.
make_pki() {
	local dir=$1 n
	mkdir -p "$dir/pki"
	(
		cd "$dir/pki"
		key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
		cert() { # NAME SUBJECT [SANS]
			key "$1"
			openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
			printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' \
				"${3:+subjectAltName=$3}" >"$1.ext"
			openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
		}
		key ca
		openssl req -x509 -new -key ca.key -subj /CN=kubelvs-test-ca -days 2 -out ca.crt 2>/dev/null
		cert apiserver /CN=kube-apiserver \
			"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
		cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
		cert admin "/O=system:masters/CN=kubernetes-admin"
		cert controller-manager /CN=system:kube-controller-manager
		cert scheduler /CN=system:kube-scheduler
		cert kubelet "/O=system:nodes/CN=system:node:$NODE" "DNS:$NODE,IP:$NODE_IP"
		key sa
		openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
	)
	for n in admin controller-manager scheduler kubelet; do
		local f=$dir/$n.kubeconfig
		kubectl config --kubeconfig "$f" set-cluster local --server "https://$NODE_IP:6443" --certificate-authority "$dir/pki/ca.crt" --embed-certs >/dev/null
		kubectl config --kubeconfig "$f" set-credentials "$n" --client-certificate "$dir/pki/$n.crt" --client-key "$dir/pki/$n.key" --embed-certs >/dev/null
		kubectl config --kubeconfig "$f" set-context local --cluster local --user "$n" >/dev/null
		kubectl config --kubeconfig "$f" use-context local >/dev/null
	done
}

if [[ ${1:-} == --pki ]]; then # on the host: make_pki DIR, and nothing else
	make_pki "${2:?usage: guest-cluster.sh --pki DIR}"
	exit 0
fi
[[ ${1:-} == -- ]] && shift
(($#)) || { echo "usage: guest-cluster.sh [--] <command> [args...] | --pki DIR" >&2; exit 2; }
[[ $(hostname) == vmtest ]] || { echo "guest-cluster.sh: run me inside run-in-vm.sh" >&2; exit 2; }
mkdir -p "$LOGS" "$S"

# ---------------------------------------------------------------- storage
# containerd's overlayfs snapshotter cannot sit on the guest's root, itself
# an overlay: its state, the kubelet's and etcd's live on tmpfs.
for d in /var/lib/containerd /var/lib/kubelet /var/lib/etcd /var/log/pods "$S"; do
	mkdir -p "$d"
	mount -t tmpfs -o mode=0755 tmpfs "$d"
done
mkdir -p /etc/cni/net.d /run/containerd
# The agent's init container runs modprobe on the node's /lib/modules (a
# hostPath): the guest's module directory must be a directory there, not
# run-in-vm's symlink to a path the container cannot see.
m=/usr/lib/modules/$(uname -r)
if [[ -L $m ]]; then
	t=$(readlink -f "$m")
	rm "$m" && mkdir "$m" && mount --bind "$t" "$m"
fi

# The kubelet's cAdvisor wants the CPU's clock speed, which UML's
# /proc/cpuinfo does not give: the guest's root sees a copy that does.
if [[ $(awk -F': ' '$1 ~ /^vendor_id/ {print $2; exit}' /proc/cpuinfo) == "User Mode Linux" ]] &&
	! grep -q '^cpu MHz' /proc/cpuinfo; then
	awk '{print} /^model name/ {print "cpu MHz\t\t: 1000.000"}' /proc/cpuinfo >"$S/cpuinfo"
	mount --bind "$S/cpuinfo" /proc/cpuinfo
fi

# ---------------------------------------------------------------- network
ip link add node0 type dummy
ip addr add "$NODE_IP/24" dev node0
ip link set node0 up
ip route add default via 192.0.2.1 dev node0
sysctl -qw net.ipv4.ip_forward=1
# The guest has only iptables-legacy (no nf_tables): the commands that
# kubelet, CNI plugins and tests call as "iptables" must be the legacy ones.
for t in iptables ip6tables; do
	for s in "" -save -restore; do ln -sf "/usr/sbin/$t-legacy$s" "/usr/local/sbin/$t$s"; done
done
export PATH=/usr/local/sbin:$PATH
for c in PREROUTING OUTPUT; do
	iptables -t nat -A "$c" -d "$API_SERVICE_IP/32" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"
done
cat >/etc/cni/net.d/10-bridge.conflist <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# ---------------------------------------------------------------- PKI
if [[ -n ${CLUSTER_PKI:-} ]]; then
	cp -r "$CLUSTER_PKI"/. "$S"/
else
	say "certificates"
	make_pki "$S"
fi
export KUBECONFIG=$S/admin.kubeconfig

# ---------------------------------------------------------------- control plane
# start NAME CMD...: runs CMD in the background, output to $LOGS/NAME.log,
# and starts it again whenever it exits, as a kubelet does with a static
# pod. On a slow host a component can give up at start-up (the controller
# manager exits when kube-apiserver's /healthz fails for 10 s while etcd
# is slow); left dead, nothing would create or schedule a pod again. Every
# exit is appended to $LOGS/restarts.txt, which the summary at the end
# prints.
start() {
	local name=$1
	shift
	(
		n=0
		while :; do
			rc=0
			"$@" >>"$LOGS/$name.log" 2>&1 || rc=$?
			n=$((n + 1))
			echo "$(date -u +%T) $name exited $rc (restart $n)" >>"$LOGS/restarts.txt"
			sleep $((n < 10 ? n : 10))
		done
	) &
}
say "etcd and kube-apiserver"
start etcd etcd --data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:2379 \
	--advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --unsafe-no-fsync
cat >"$S/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: "${CLUSTER_POD_SECURITY:-baseline}", enforce-version: latest}
EOF
start kube-apiserver kube-apiserver --etcd-servers http://127.0.0.1:2379 \
	--advertise-address "$NODE_IP" --secure-port 6443 --service-cluster-ip-range "$SERVICE_CIDR" \
	--client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
	--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types InternalIP \
	--service-account-issuer https://kubernetes.default.svc.cluster.local --service-account-key-file "$PKI/sa.pub" \
	--service-account-signing-key-file "$PKI/sa.key" --api-audiences https://kubernetes.default.svc.cluster.local \
	--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --admission-control-config-file "$S/admission.yaml" \
	--allow-privileged
wait_for 180 "kube-apiserver ready" kubectl get --raw /readyz
say "kube-apiserver ready"
start kube-controller-manager kube-controller-manager --kubeconfig "$S/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$S/controller-manager.kubeconfig" --authorization-kubeconfig "$S/controller-manager.kubeconfig" \
	--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" --use-service-account-credentials \
	--leader-elect=false --bind-address 127.0.0.1
start kube-scheduler kube-scheduler --kubeconfig "$S/scheduler.kubeconfig" \
	--authentication-kubeconfig "$S/scheduler.kubeconfig" --authorization-kubeconfig "$S/scheduler.kubeconfig" \
	--leader-elect=false --bind-address 127.0.0.1

# ---------------------------------------------------------------- containerd
say "containerd"
PAUSE_IMG=$(awk '$1 == "pause.tar" {print $2}' "$IMAGES/images.txt")
[[ -n $PAUSE_IMG ]] || die "no pause.tar in $IMAGES/images.txt (make image)"
cat >"$S/containerd.toml" <<EOF
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMG"
[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/net.d"
EOF
start containerd containerd --config "$S/containerd.toml"
wait_for 60 "containerd up" ctr version
while read -r file ref _; do
	ctr -n k8s.io images import "$IMAGES/$file" >/dev/null || die "ctr images import $file"
	say "imported $ref"
done <"$IMAGES/images.txt"
# More archives (colon-separated paths), e.g. the previous release's image.
IFS=: read -r -a extra_images <<<"${KUBELVS_EXTRA_IMAGES:-}"
for file in "${extra_images[@]}"; do
	[[ -n $file ]] || continue
	ctr -n k8s.io images import "$file" >/dev/null || die "ctr images import $file"
	say "imported $file"
done

# ---------------------------------------------------------------- kubelet
say "kubelet"
cat >"$S/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
failSwapOn: false
resolvConf: /etc/resolv.conf
# Everything lives on tmpfs: evict only when really full, and never
# collect the imported images (nothing could pull them back).
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
start kubelet kubelet --config "$S/kubelet.yaml" --kubeconfig "$S/kubelet.kubeconfig" \
	--node-ip "$NODE_IP" --hostname-override "$NODE" --root-dir /var/lib/kubelet
wait_for 180 "node $NODE Ready" kubectl wait --for=condition=Ready "node/$NODE" --timeout=1s
say "node $NODE Ready"
# The controller manager is up and running its controllers once the
# ServiceAccount controller has made namespace default's account; without
# it no Deployment or DaemonSet gets a pod.
wait_for 180 "kube-controller-manager running (ServiceAccount default/default)" kubectl get serviceaccount default -n default

# ---------------------------------------------------------------- the command
rc=0
"$@" || rc=$?
say "command exited $rc"
{
	echo "\$ kubectl get nodes,pods -A -o wide"
	kubectl get nodes,pods -A -o wide 2>&1 || true
	echo "\$ kubectl get lvs -A"
	kubectl get lvs -A 2>&1 || true
	echo "\$ ipvsadm -Ln"
	ipvsadm -Ln 2>&1 || true
	echo "\$ cat restarts.txt (components that exited and were started again)"
	cat "$LOGS/restarts.txt" 2>/dev/null || echo "(none)"
} | tee "$LOGS/after.txt" >&2
exit "$rc"
