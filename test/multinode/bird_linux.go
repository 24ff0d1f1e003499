//go:build linux

package multinode

import (
	"fmt"
	"net/netip"
	"strings"
)

// BGPOptions shape the BIRD configurations the harness renders.
type BGPOptions struct {
	// RouterASN and NodeASN default to RouterASN and NodeASN (eBGP).
	RouterASN, NodeASN uint32
	// Nodes the router peers with (default: every node).
	Nodes []*Node
}

func (o BGPOptions) withDefaults(c *Cluster) BGPOptions {
	if o.RouterASN == 0 {
		o.RouterASN = RouterASN
	}
	if o.NodeASN == 0 {
		o.NodeASN = NodeASN
	}
	if o.Nodes == nil {
		o.Nodes = c.Nodes
	}
	return o
}

// timers are short, so that a test sees a session go down within seconds:
// BIRD 2.0.12 accepts a hold time of 9 s, keepalives every 3 s, and 1 s
// before the first connection attempt and between attempts (the defaults
// are 240, 80, 5 and 120 s).
const timers = "hold time 9; keepalive time 3; connect delay time 1; connect retry time 1; error wait time 1, 5;"

// RouterConfig renders the router's BIRD configuration: one eBGP session
// per node and family (protocols <node>_v4 and <node>_v6, to the node's
// eth0 addresses), importing everything and exporting nothing, and kernel
// protocols that write the best routes into the main table with equal
// routes merged into one multipath route (ECMP).
func (r *Router) RouterConfig(o BGPOptions) string {
	o = o.withDefaults(r.c)
	var b strings.Builder
	fmt.Fprintf(&b, `# The router of the multinode harness.
router id %s;
log stderr all;
protocol device { scan time 10; }
# ECMP: routes from several nodes that are equally good are merged into one
# multipath route of the kernel's main table.
protocol kernel kernel4 { ipv4 { import none; export all; }; merge paths on; }
protocol kernel kernel6 { ipv6 { import none; export all; }; merge paths on; }
template bgp node4 {
	local %s as %d;
	%s
	ipv4 { import all; export none; };
}
template bgp node6 {
	local %s as %d;
	%s
	# The global next hop, not the link-local one, in the FIB.
	ipv6 { import all; export none; next hop prefer global; };
}
`, RouterLAN4, RouterLAN4, o.RouterASN, timers, RouterLAN6, o.RouterASN, timers)
	for _, n := range o.Nodes {
		fmt.Fprintf(&b, "protocol bgp %s_v4 from node4 { neighbor %s as %d; }\n", n.Name, n.IP(false), o.NodeASN)
		fmt.Fprintf(&b, "protocol bgp %s_v6 from node6 { neighbor %s as %d; }\n", n.Name, n.IP(true), o.NodeASN)
	}
	return b.String()
}

// SpeakerConfig renders a BIRD configuration for a node that announces
// prefixes (as blackhole static routes, never written to its kernel) to the
// router over eBGP, one session per family. It stands in for a node's BGP
// speaker in the harness's own tests.
func (n *Node) SpeakerConfig(o BGPOptions, prefixes ...netip.Prefix) string {
	o = o.withDefaults(n.c)
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\nprotocol device { scan time 10; }\n", n.IP(false))
	var s4, s6 strings.Builder
	for _, p := range prefixes {
		s := &s4
		if p.Addr().Is6() {
			s = &s6
		}
		fmt.Fprintf(s, "\troute %s blackhole;\n", p)
	}
	fmt.Fprintf(&b, "protocol static announce4 {\n\tipv4;\n%s}\n", s4.String())
	fmt.Fprintf(&b, "protocol static announce6 {\n\tipv6;\n%s}\n", s6.String())
	for _, f := range []struct {
		name        string
		local, peer netip.Addr
		channel     string
	}{{"up4", n.IP(false), RouterLAN4, "ipv4"}, {"up6", n.IP(true), RouterLAN6, "ipv6"}} {
		fmt.Fprintf(&b, "protocol bgp %s {\n\tlocal %s as %d;\n\tneighbor %s as %d;\n\t%s\n\t%s { import none; export where source = RTS_STATIC; };\n}\n",
			f.name, f.local, o.NodeASN, f.peer, o.RouterASN, timers, f.channel)
	}
	return b.String()
}
