package desired

import (
	"net/netip"
	"slices"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

// Announcement is how a VirtualService's addresses are made reachable from
// outside the nodes (the spec.announce of the AddressPools that admit
// them), and which nodes may announce them: the nodes that can serve it.
// Every agent computes it alike from the same objects, for every node, so
// that all agree on which node answers for an address in layer-2 mode.
type Announcement struct {
	// BGP and Layer2 are the addresses announced each way, sorted.
	BGP, Layer2 []netip.Addr

	selector map[string]lvsv1.LabelValue
	// layer2Nodes says, per Layer2 address, which nodes its pools let
	// answer for it (pools.Announce).
	layer2Nodes map[netip.Addr]func(map[string]string) bool
	// local: trafficPolicy Local with no static backend; only the nodes
	// of localNodes can serve it.
	local      bool
	localNodes map[string]bool
}

// Empty reports whether nothing is announced.
func (a Announcement) Empty() bool { return len(a.BGP) == 0 && len(a.Layer2) == 0 }

// Eligible reports whether the node, by its name and labels, can serve the
// VirtualService: its nodeSelector selects the node and, with
// trafficPolicy Local, one of its EndpointSlices has a ready endpoint
// there. Health checks do not count: other nodes cannot see them, and all
// agents must decide alike.
func (a Announcement) Eligible(node string, labels map[string]string) bool {
	return selects(a.selector, labels) && (!a.local || a.localNodes[node])
}

// EligibleLayer2 reports whether the node may answer ARP/NDP for addr: it
// is Eligible, and addr's pools let it (announce.layer2.nodeSelector).
func (a Announcement) EligibleLayer2(addr netip.Addr, node string, labels map[string]string) bool {
	ok := a.layer2Nodes[addr]
	return ok != nil && ok(labels) && a.Eligible(node, labels)
}

// announcement computes a VirtualService's Announcement; its addresses
// have passed pools.Check.
func announcement(in Input) Announcement {
	vs := in.VS
	var an Announcement
	for _, s := range vs.EffectiveAddresses() {
		addr, err := netip.ParseAddr(string(s))
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		bgp, l2 := pools.Announce(in.Pools, vs.Namespace, in.NamespaceLabels, addr)
		if bgp {
			an.BGP = append(an.BGP, addr)
		}
		if l2 != nil {
			an.Layer2 = append(an.Layer2, addr)
			if an.layer2Nodes == nil {
				an.layer2Nodes = map[netip.Addr]func(map[string]string) bool{}
			}
			an.layer2Nodes[addr] = l2
		}
	}
	if an.Empty() {
		return an
	}
	slices.SortFunc(an.BGP, netip.Addr.Compare)
	slices.SortFunc(an.Layer2, netip.Addr.Compare)
	an.selector = vs.Spec.NodeSelector
	if vs.Spec.TrafficPolicy == lvsv1.TrafficPolicyLocal && len(vs.Spec.Backends.Static) == 0 {
		an.local = true
		an.localNodes = map[string]bool{}
		for _, s := range in.Slices {
			for _, e := range s.Endpoints {
				ready := e.Conditions.Ready == nil || *e.Conditions.Ready
				terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
				if e.NodeName != nil && len(e.Addresses) > 0 && ready && !terminating {
					an.localNodes[*e.NodeName] = true
				}
			}
		}
	}
	return an
}
