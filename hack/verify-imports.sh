#!/usr/bin/env bash
# verify-imports.sh - the import rules of ARCHITECTURE.md, checked with
# `go list -deps` (what a package links, directly or through others):
#
#   - the data flow's pure packages (desired state, validation, the syncer,
#     address pools, ownership, the Service translation, the kernel
#     model + interfaces and the announcement model) link no
#     netlink library, moby/ipvs, ipset-go, raw-socket library (mdlayher)
#     or os/exec: they run the same on
#     any host, and their tests need no kernel;
#   - only the agent's wiring (pkg/roles), cmd/ and kernel-test helpers
#     (pkg/kerneltest, the multi-node harness test/multinode)
#     import the implementations (the *nl packages, netfilter/iptables and
#     announce/layer2);
#   - the API types (api/v1alpha1) link nothing of this module and no
#     client library beyond apimachinery.
#
# Exit status 1 names every package that breaks a rule and what it links.
set -euo pipefail
cd "$(dirname "$0")/.."

PURE=(
	./pkg/desired ./pkg/syncer ./pkg/validation ./pkg/pools ./pkg/ownership ./pkg/lbservice
	./pkg/ipvs ./pkg/ipset ./pkg/conntrack ./pkg/netif ./pkg/netfilter ./pkg/announce
	./pkg/ipvs/ipvstest ./pkg/ipset/ipsettest ./pkg/conntrack/conntracktest
	./pkg/netif/netiftest ./pkg/netfilter/netfiltertest
)
FORBIDDEN='^(github\.com/vishvananda/netlink(/.*)?|github\.com/moby/ipvs|github\.com/lrh3321/ipset-go|github\.com/mdlayher/.*|os/exec|github\.com/kubelvs/kubelvs/pkg/.*/(ipvsnl|ipsetnl|conntracknl|netifnl|iptables|layer2))$'
IMPLS='github\.com/kubelvs/kubelvs/pkg/[a-z]+/(ipvsnl|ipsetnl|conntracknl|netifnl|iptables|layer2)$'
# Who may import an implementation (non-test code).
WIRING='^github\.com/kubelvs/kubelvs/(pkg/roles|cmd/.*|pkg/kerneltest(/.*)?|test/multinode|pkg/(ipvs|ipset|conntrack|netif|netfilter)/[a-z]+)$'

fail=0 n=0
for p in "${PURE[@]}"; do
	[[ -d $p ]] || continue
	n=$((n + 1))
	bad=$(go list -deps "$p" | grep -E "$FORBIDDEN" || true)
	if [[ -n $bad ]]; then
		echo "verify-imports: $p links what the pure packages must not:" $bad >&2
		fail=1
	fi
done
while read -r pkg imports; do
	for i in $imports; do
		if [[ $i =~ $IMPLS ]] && ! [[ $pkg =~ $WIRING ]]; then
			echo "verify-imports: $pkg imports the implementation $i; only pkg/roles, cmd/ and kernel-test helpers may" >&2
			fail=1
		fi
	done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
bad=$(go list -deps ./api/v1alpha1 | grep -E '^(sigs\.k8s\.io/controller-runtime|k8s\.io/client-go|github\.com/kubelvs/kubelvs/pkg)(/|$)' || true)
if [[ -n $bad ]]; then
	echo "verify-imports: api/v1alpha1 links more than apimachinery:" $bad >&2
	fail=1
fi
if ((fail)); then
	exit 1
fi
echo "verify-imports: $n pure packages link no netlink, moby/ipvs, ipset-go, mdlayher or os/exec; implementations are imported only by the wiring"
