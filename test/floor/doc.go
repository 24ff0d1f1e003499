// Package floor installs the CRDs that the Helm chart ships on the oldest
// kube-apiserver that charts/kubelvs/Chart.yaml claims to support (its
// kubeVersion), so that the claim is tested rather than assumed. The
// AddressPool's rules, which lean on string functions and on IP and CIDR
// functions whose behavior changed after 1.31 (containsCIDR), also get
// their whole corpus and parity sweep (test/corpus) there.
//
// Creating a CRD compiles its CEL rules against the API server's environment
// for new expressions, which offers a library only from the minor version
// after the one that introduced it: the IP and CIDR libraries that the
// VirtualService rules call (isIP, ip, ip.isCanonical, isGlobalUnicast,
// family, isCIDR) arrived in 1.30, so a 1.30 kube-apiserver refuses the CRD
// and 1.31 is the floor.
//
// KUBELVS_FLOOR_ASSETS names a directory holding that kube-apiserver and an
// etcd (`make test-bins-floor` builds it); without it the test skips, unless
// KUBELVS_REQUIRE_ENVTEST is set.
package floor
