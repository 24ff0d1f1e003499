//go:build e2e

package e2e

// iptablesScript is the iptables half of Cluster.NodeKernel, for sh as root
// in the node's network namespace with the iptables tools of both backends
// (the kubelvs image has them): $1 is dump, add-foreign or delete-foreign,
// $2 the foreign chain. IPVS and ipsets are e2e-echo's half (package echo).
const iptablesScript = `
c=$2
rules() { { iptables-$1-save; ip6tables-$1-save; } 2>/dev/null | grep -c '^-A'; }
case $1 in
dump)
	for m in legacy nft; do
		for p in iptables ip6tables; do
			if out=$($p-$m-save 2>&1); then
				printf '%s\n' "$out" | sed "s/^/$p-$m: /"
			else
				echo "# $p-$m-save failed: $out"
			fi
		done
	done ;;
add-foreign)
	# The backend with more rules, as the agent picks it (pkg/iptables.DetectMode).
	m=legacy
	[ "$(rules nft)" -gt "$(rules legacy)" ] && m=nft
	# 100 rules, as a node with kube-proxy or a firewall has many.
	{ printf '*filter\n:%s - [0:0]\n' "$c"
	  i=1; while [ $i -le 100 ]; do printf -- '-A %s -s 192.0.2.%d/32 -j RETURN\n' "$c" $i; i=$((i+1)); done
	  printf -- '-A INPUT -j %s\nCOMMIT\n' "$c"; } |
		iptables-$m-restore -w --noflush || exit 1
	echo "# foreign chain $c added with iptables-$m" ;;
delete-foreign)
	for m in legacy nft; do
		iptables-$m -w -D INPUT -j "$c" 2>/dev/null
		iptables-$m -w -F "$c" 2>/dev/null && iptables-$m -w -X "$c"
	done
	true ;;
*)
	echo "usage: dump|add-foreign|delete-foreign CHAIN" >&2
	exit 2 ;;
esac
`
