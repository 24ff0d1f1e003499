package bench

import (
	"fmt"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// realsPerVS is the number of real servers of every virtual server.
const realsPerVS = 10

// ruleSet is n TCP virtual servers, each with realsPerVS masqueraded real
// servers: the rule set every contender programs.
func ruleSet(n int) []ipvs.Service { return kerneltest.RuleSet(n, realsPerVS) }

// groups turns the rule set into one desired.Group per virtual server, as
// one VirtualService with one port would build it. With node set, each
// group also carries its VIP (kubelvs0) and its masquerade ipset member,
// which is what the agent programs; without, only the IPVS rule set that
// the baselines program too.
func groups(svcs []ipvs.Service, node bool) []desired.Group {
	out := make([]desired.Group, len(svcs))
	for i, s := range svcs {
		g := desired.Group{
			Name:     types.NamespacedName{Namespace: "bench", Name: fmt.Sprintf("vs-%05d", i)},
			Selected: true, DrainTimeout: 30 * time.Second,
			Services: []desired.Service{{VirtualServer: s.VirtualServer, Reals: make([]desired.Real, len(s.RealServers))}},
		}
		for r, rs := range s.RealServers {
			g.Services[0].Reals[r] = desired.Real{RealServer: rs}
		}
		if node {
			g.VIPs = []netip.Addr{s.Address}
			g.Members.Masquerade = []ipset.Entry{{IP: s.Address, Protocol: uint8(s.Protocol), Port: s.Port}}
		}
		out[i] = g
	}
	return out
}

// The UDP service of the conntrack scenario: a DNS-like virtual server
// whose flows are flushed when one of its real servers leaves.
var dnsVIP = netip.MustParseAddrPort("10.202.0.1:53")

func dnsReal(r int) ipvs.RealServer {
	return ipvs.RealServer{Address: netip.AddrFrom4([4]byte{10, 202, 1, byte(r + 1)}), Port: 5353, Weight: 1, Forwarding: ipvs.Masquerade}
}

// dnsGroup is the UDP group with its real servers except those in skip.
func dnsGroup(skip ...int) desired.Group {
	vs := ipvs.VirtualServer{Address: dnsVIP.Addr(), Protocol: ipvs.UDP, Port: dnsVIP.Port(), Scheduler: "rr"}
	g := desired.Group{
		Name: types.NamespacedName{Namespace: "bench", Name: "dns"}, Selected: true, DrainTimeout: 30 * time.Second,
		Services: []desired.Service{{VirtualServer: vs}},
		VIPs:     []netip.Addr{dnsVIP.Addr()},
		Members:  desiredMembers(vs),
	}
next:
	for r := 0; r < realsPerVS; r++ {
		for _, s := range skip {
			if s == r {
				continue next
			}
		}
		g.Services[0].Reals = append(g.Services[0].Reals, desired.Real{RealServer: dnsReal(r)})
	}
	return g
}

func desiredMembers(vs ipvs.VirtualServer) netfilter.Members {
	return netfilter.Members{Masquerade: []ipset.Entry{{IP: vs.Address, Protocol: uint8(vs.Protocol), Port: vs.Port}}}
}
