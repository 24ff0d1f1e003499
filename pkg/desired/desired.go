// Package desired turns one VirtualService, the EndpointSlices of its
// Service, health results and the node into the kernel state the node should
// hold for it: IPVS virtual and real servers, VIPs and ipset members. It is a
// pure function: no I/O, deterministic (sorted) output.
package desired

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// Node is the node the agent runs on.
type Node struct {
	Name   string
	Labels map[string]string
}

// HealthFunc reports whether the real server at addr, probed on port,
// passes the VirtualService's health check. Nil means all pass.
type HealthFunc func(addr netip.Addr, port uint16) bool

// Input is everything one VirtualService's kernel state depends on.
type Input struct {
	VS *lvsv1.VirtualService
	// Slices are the EndpointSlices of spec.backends.serviceRef.
	Slices []*discoveryv1.EndpointSlice
	Node   Node
	// Lost are the keys an older VirtualService wins (see vsstatus.Conflicts).
	Lost map[lvsv1.ServiceKey]bool
	// Healthy answers for real servers when spec.healthCheck is set.
	Healthy HealthFunc
	// Pools are the cluster's valid AddressPools (pools.Parse) and
	// NamespaceLabels the labels of the VirtualService's namespace: an
	// address that no pool admits to that namespace is not programmed
	// (pools.Check, the rule the controller applies too).
	Pools           []*pools.Pool
	NamespaceLabels map[string]string
}

// Real is a real server with why it has its weight.
type Real struct {
	ipvs.RealServer
	// Terminating endpoints drain: weight 0 until they are gone.
	Terminating bool
	// Unhealthy real servers failed their health check: weight 0.
	Unhealthy bool
}

// Service is one IPVS virtual server and its real servers, sorted.
type Service struct {
	ipvs.VirtualServer
	Reals []Real
}

// HealthTarget is a real server to probe.
type HealthTarget struct {
	Address netip.Addr
	Port    uint16
}

// Group is the kernel state of one VirtualService on this node.
type Group struct {
	Name types.NamespacedName
	// Selected is false when the node selector excludes this node; the
	// group is then empty.
	Selected bool
	Services []Service
	VIPs     []netip.Addr
	Members  netfilter.Members
	// DrainTimeout bounds how long removed TCP/SCTP real servers drain.
	DrainTimeout time.Duration
	// FlushTCP asks for conntrack flushes of removed TCP real servers too.
	FlushTCP bool
	// HealthTargets are the real servers to probe when the VirtualService
	// has a health check.
	HealthTargets []HealthTarget
	// Counts are the backends for the status report.
	Counts Counts
	// Problems are reasons part of the spec could not be programmed.
	Problems []string
	// NotAllowed is set when an address of the VirtualService is one no
	// AddressPool admits to its namespace: the group is then empty, so
	// nothing of it is programmed and what was is removed, and Problems
	// say which address.
	NotAllowed bool
	// Announce is how its addresses are announced, and by which nodes. It
	// is empty when the group is NotAllowed or on Hold.
	Announce Announcement
	// Hold is set when what this VirtualService should be is not known
	// (its spec is refused by validation.VirtualService, or an input failed
	// to load): the syncer then keeps whatever the kernel holds for it,
	// neither programming nor removing anything, and Problems say why.
	Hold bool
	// Read orders the syncs of one VirtualService by when their inputs
	// were read from the caches (syncer.Syncer.ReadToken, taken before the
	// reads): the syncer does not apply a group read before one of the
	// same name it has applied, which would put an older state back. 0:
	// unordered (always applied).
	Read uint64
}

// Counts are a VirtualService's backends on this node.
type Counts struct {
	Total, Ready, Draining int32
}

// Build computes the group of one VirtualService.
func Build(in Input) Group {
	vs := in.VS
	g := Group{
		Name:     types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name},
		Selected: selects(vs.Spec.NodeSelector, in.Node.Labels),
	}
	if errs := validation.VirtualService(vs); len(errs) > 0 {
		// Refused: nothing of it reaches the kernel. What an earlier,
		// valid generation programmed stays until the spec is fixed or
		// the VirtualService is deleted.
		g.Hold = true
		for _, e := range errs {
			g.Problems = append(g.Problems, e.Error())
		}
		return g
	}
	if probs := pools.Check(in.Pools, vs.Namespace, in.NamespaceLabels, vs.EffectiveAddresses()); len(probs) > 0 {
		// Not this namespace's to bind: nothing of it on any node, even if
		// its status (forged or stale) says Accepted.
		g.NotAllowed = true
		g.Problems = probs
		return g
	}
	g.Announce = announcement(in)
	if !g.Selected {
		return g
	}
	if d := vs.Spec.Drain; d != nil {
		g.DrainTimeout = time.Duration(d.TimeoutSeconds) * time.Second
		g.FlushTCP = d.FlushTCPConntrack
	} else {
		g.DrainTimeout = lvsv1.DefaultDrainTimeoutSeconds * time.Second
	}

	fwd, err := ipvs.ParseForwarding(string(orDefault(vs.Spec.Forwarding, lvsv1.DefaultForwarding)))
	if err != nil {
		g.Problems = append(g.Problems, err.Error())
		return g
	}
	var flags ipvs.Flags
	for _, f := range vs.Spec.SchedulerFlags {
		fl, err := ipvs.ParseSchedulerFlag(string(f))
		if err != nil {
			g.Problems = append(g.Problems, err.Error())
			continue
		}
		flags |= fl
	}
	sched := string(orDefault(vs.Spec.Scheduler, lvsv1.DefaultScheduler))

	reals := map[netip.Addr]Real{} // distinct backend addresses, for the counts
	probes := map[HealthTarget]bool{}
	vips := map[netip.Addr]bool{}
	for _, a := range vs.EffectiveAddresses() {
		addr, err := netip.ParseAddr(string(a))
		if err != nil {
			g.Problems = append(g.Problems, fmt.Sprintf("address %q: %v", a, err))
			continue
		}
		addr = addr.Unmap()
		for _, p := range vs.Spec.Ports {
			proto := orDefault(p.Protocol, lvsv1.DefaultProtocol)
			if in.Lost[lvsv1.ServiceKey{Address: addr, Port: p.Port, Protocol: proto}] {
				continue
			}
			ip, err := ipvs.ParseProtocol(string(proto))
			if err != nil {
				g.Problems = append(g.Problems, err.Error())
				continue
			}
			svc := Service{VirtualServer: ipvs.VirtualServer{
				Address: addr, Protocol: ip, Port: uint16(p.Port), Scheduler: sched, Flags: flags,
			}}
			if per := vs.Spec.Persistence; per != nil {
				svc.Timeout = uint32(per.TimeoutSeconds)
				svc.NetmaskBits = int(per.IPv4PrefixLength)
				if addr.Is6() {
					svc.NetmaskBits = int(per.IPv6PrefixLength)
				}
			}
			rs, problems := realServers(in, addr, p, proto, fwd)
			g.Problems = append(g.Problems, problems...)
			for _, r := range rs {
				if vs.Spec.HealthCheck != nil && !r.Terminating {
					probes[probeTarget(vs.Spec.HealthCheck, r)] = true
				}
				if old, ok := reals[r.Address]; !ok || (old.Weight == 0 && r.Weight > 0) {
					reals[r.Address] = r
				}
			}
			svc.Reals = rs
			g.Services = append(g.Services, svc)
			vips[addr] = true
			g.Members = addMembers(g.Members, vs, svc, fwd)
		}
	}
	for _, r := range reals {
		g.Counts.Total++
		switch {
		case r.Terminating:
			g.Counts.Draining++
		case r.Weight > 0:
			g.Counts.Ready++
		}
	}
	for a := range vips {
		g.VIPs = append(g.VIPs, a)
	}
	slices.SortFunc(g.VIPs, netip.Addr.Compare)
	for t := range probes {
		g.HealthTargets = append(g.HealthTargets, t)
	}
	slices.SortFunc(g.HealthTargets, func(a, b HealthTarget) int {
		return netip.AddrPortFrom(a.Address, a.Port).Compare(netip.AddrPortFrom(b.Address, b.Port))
	})
	slices.SortFunc(g.Services, func(a, b Service) int { return a.Key().Compare(b.Key()) })
	g.Problems = dedupe(g.Problems)
	return g
}

// realServers lists the real servers of one virtual port of one family:
// static backends first, then EndpointSlice endpoints, deduplicated.
func realServers(in Input, vip netip.Addr, p lvsv1.VirtualServicePort, proto lvsv1.Protocol, fwd ipvs.Forwarding) ([]Real, []string) {
	vs := in.VS
	var problems []string
	seen := map[ipvs.RealKey]int{}
	var out []Real
	add := func(r Real) {
		if fwd != ipvs.Masquerade {
			// DirectRoute and Tunnel cannot rewrite the port: IPVS uses the
			// virtual port whatever the real server's port says.
			r.Port = uint16(p.Port)
		}
		if vs.Spec.HealthCheck != nil && in.Healthy != nil && r.Weight > 0 {
			t := probeTarget(vs.Spec.HealthCheck, r)
			if !in.Healthy(t.Address, t.Port) {
				r.Weight, r.Unhealthy = 0, true
			}
		}
		if i, ok := seen[r.Key()]; ok {
			if out[i].Weight == 0 && r.Weight > 0 && !out[i].Unhealthy {
				out[i] = r
			}
			return
		}
		seen[r.Key()] = len(out)
		out = append(out, r)
	}

	for _, b := range vs.Spec.Backends.Static {
		addr, err := netip.ParseAddr(string(b.Address))
		if err != nil || addr.Unmap().Is4() != vip.Is4() {
			continue
		}
		port := p.Port
		switch {
		case b.Port != nil:
			port = *b.Port
		case p.TargetPort != nil && p.TargetPort.Type == intstr.Int:
			port = p.TargetPort.IntVal
		}
		w := int32(lvsv1.DefaultStaticWeight)
		if b.Weight != nil {
			w = *b.Weight
		}
		add(Real{RealServer: ipvs.RealServer{Address: addr.Unmap(), Port: uint16(port), Weight: int(w), Forwarding: fwd}})
	}

	want := discoveryv1.AddressTypeIPv4
	if vip.Is6() {
		want = discoveryv1.AddressTypeIPv6
	}
	resolved, sawEndpoints := false, false
	local := vs.Spec.TrafficPolicy == lvsv1.TrafficPolicyLocal
	for _, s := range in.Slices {
		if s.AddressType != want {
			continue
		}
		port, ok := slicePort(s, p, proto)
		if len(s.Endpoints) > 0 {
			sawEndpoints = true
		}
		if !ok {
			continue
		}
		resolved = true
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 || (local && (e.NodeName == nil || *e.NodeName != in.Node.Name)) {
				continue
			}
			addr, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || addr.Unmap().Is4() != vip.Is4() || !addr.Unmap().IsGlobalUnicast() {
				continue // the API server refuses these; a slice that bypassed it is not trusted
			}
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			switch {
			case ready && !terminating:
				add(Real{RealServer: ipvs.RealServer{Address: addr.Unmap(), Port: port, Weight: 1, Forwarding: fwd}})
			case terminating:
				add(Real{RealServer: ipvs.RealServer{Address: addr.Unmap(), Port: port, Weight: 0, Forwarding: fwd}, Terminating: true})
			}
		}
	}
	if sawEndpoints && !resolved && p.TargetPort != nil && p.TargetPort.Type == intstr.String {
		problems = append(problems, fmt.Sprintf("targetPort %q of port %d/%s matches no port of the EndpointSlices of Service %s",
			p.TargetPort.StrVal, p.Port, proto, vs.Spec.Backends.ServiceRef.Name))
	}
	slices.SortFunc(out, func(a, b Real) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out, problems
}

// slicePort finds the backend port of a virtual port in one EndpointSlice.
func slicePort(s *discoveryv1.EndpointSlice, p lvsv1.VirtualServicePort, proto lvsv1.Protocol) (uint16, bool) {
	tp := p.TargetPort
	if tp == nil {
		return uint16(p.Port), true
	}
	if tp.Type == intstr.Int {
		return uint16(tp.IntVal), true
	}
	for _, sp := range s.Ports {
		spProto := lvsv1.ProtocolTCP
		if sp.Protocol != nil {
			spProto = lvsv1.Protocol(*sp.Protocol)
		}
		// A port out of range (the API server refuses it; a slice that
		// bypassed it must not wrap) resolves nothing.
		if sp.Name != nil && *sp.Name == tp.StrVal && spProto == proto && sp.Port != nil && *sp.Port >= 1 && *sp.Port <= 65535 {
			return uint16(*sp.Port), true
		}
	}
	return 0, false
}

func probeTarget(hc *lvsv1.HealthCheck, r Real) HealthTarget {
	port := r.Port
	if hc.Port != nil {
		port = uint16(*hc.Port)
	}
	return HealthTarget{Address: r.Address, Port: port}
}

// addMembers adds the ipset members of one virtual server: masquerade or
// hairpin for NAT forwarding, and the source allow-list.
//
// NAT forwarding rewrites only the destination; the masquerade also
// rewrites the source to this node, so that a real server on another node
// answers through it. With trafficPolicy Local every real server is an
// endpoint on this node, which is their gateway: their answers come back
// through it anyway, and without the masquerade they see the client's own
// address, as kube-proxy does for externalTrafficPolicy Local. Only a real
// server calling its own VIP is still masqueraded (the hairpin members):
// scheduled to itself, it would drop a packet from its own address. Static
// backends may be anywhere, so a VirtualService that has some keeps the
// masquerade whatever its policy.
func addMembers(m netfilter.Members, vs *lvsv1.VirtualService, svc Service, fwd ipvs.Forwarding) netfilter.Members {
	v := svc.VirtualServer
	e := ipset.Entry{IP: v.Address, Protocol: uint8(v.Protocol), Port: v.Port}
	switch {
	case fwd != ipvs.Masquerade:
	case vs.Spec.TrafficPolicy == lvsv1.TrafficPolicyLocal && len(vs.Spec.Backends.Static) == 0:
		for _, r := range svc.Reals {
			h := e
			h.Net = netip.PrefixFrom(r.Address, r.Address.BitLen())
			m.Hairpin = append(m.Hairpin, h)
		}
	default:
		m.Masquerade = append(m.Masquerade, e)
	}
	if len(vs.Spec.SourceRanges) == 0 {
		return m
	}
	m.Restricted = append(m.Restricted, e)
	for _, c := range vs.Spec.SourceRanges {
		pfx, err := netip.ParsePrefix(string(c))
		if err != nil || pfx.Addr().Is4() != v.Address.Is4() {
			continue
		}
		for _, n := range ipsetNets(pfx.Masked()) {
			a := e
			a.Net = n
			m.Allowed = append(m.Allowed, a)
		}
	}
	return m
}

// selects reports whether a node with labels matches the selector.
func selects(sel map[string]lvsv1.LabelValue, labels map[string]string) bool {
	for k, v := range sel {
		if l, ok := labels[k]; !ok || l != string(v) {
			return false
		}
	}
	return true
}

// ipsetNets returns p as hash:net entries hold it: the kernel refuses a
// zero prefix length, so 0.0.0.0/0 (::/0) becomes its two halves.
func ipsetNets(p netip.Prefix) []netip.Prefix {
	if p.Bits() != 0 {
		return []netip.Prefix{p}
	}
	lo := netip.PrefixFrom(p.Addr(), 1)
	hi := p.Addr().AsSlice()
	hi[0] = 0x80
	hiAddr, _ := netip.AddrFromSlice(hi)
	return []netip.Prefix{lo, netip.PrefixFrom(hiAddr, 1)}
}

func orDefault[T ~string](v, d T) T {
	if v == "" {
		return d
	}
	return v
}

func dedupe(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}

// Dump renders a group for golden tests, one line per object.
func (g Group) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "group %s selected=%t drain=%s flushTCP=%t", g.Name, g.Selected, g.DrainTimeout, g.FlushTCP)
	if g.Hold {
		b.WriteString(" hold")
	}
	if g.NotAllowed {
		b.WriteString(" not-allowed")
	}
	b.WriteString("\n")
	for _, s := range g.Services {
		fmt.Fprintf(&b, "  vs %s\n", s.VirtualServer)
		for _, r := range s.Reals {
			extra := ""
			if r.Terminating {
				extra += " terminating"
			}
			if r.Unhealthy {
				extra += " unhealthy"
			}
			fmt.Fprintf(&b, "    rs %s%s\n", r.RealServer, extra)
		}
	}
	for _, v := range g.VIPs {
		fmt.Fprintf(&b, "  vip %s\n", v)
	}
	for _, e := range g.Members.Masquerade {
		fmt.Fprintf(&b, "  masq %s\n", e)
	}
	for _, e := range g.Members.Hairpin {
		fmt.Fprintf(&b, "  hairpin %s\n", e)
	}
	for _, e := range g.Members.Restricted {
		fmt.Fprintf(&b, "  restricted %s\n", e)
	}
	for _, e := range g.Members.Allowed {
		fmt.Fprintf(&b, "  allowed %s\n", e)
	}
	for _, t := range g.HealthTargets {
		fmt.Fprintf(&b, "  probe %s\n", netip.AddrPortFrom(t.Address, t.Port))
	}
	fmt.Fprintf(&b, "  counts total=%d ready=%d draining=%d\n", g.Counts.Total, g.Counts.Ready, g.Counts.Draining)
	for _, p := range g.Problems {
		fmt.Fprintf(&b, "  problem %s\n", p)
	}
	return b.String()
}
