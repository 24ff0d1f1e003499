package desired

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

type ep struct {
	addr        string
	node        string
	ready       bool
	terminating bool
}

func slice(name string, family discoveryv1.AddressType, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: family,
	}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			NodeName:   ptr.To(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.ready || e.terminating), Terminating: ptr.To(e.terminating)},
		})
	}
	return s
}

// pool returns a valid pool of these CIDRs; selector nil admits every
// namespace.
func pool(tb testing.TB, name string, selector map[string]string, cidrs ...string) *pools.Pool {
	tb.Helper()
	ap := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: lvsv1.AddressPoolSpec{NamespaceSelector: &lvsv1.LabelSelector{}}}
	for k, v := range selector {
		ap.Spec.NamespaceSelector.MatchLabels = map[string]lvsv1.LabelValue{k: lvsv1.LabelValue(v)}
	}
	for _, c := range cidrs {
		ap.Spec.CIDRs = append(ap.Spec.CIDRs, lvsv1.PoolCIDR(c))
	}
	p, err := pools.New(ap)
	if err != nil {
		tb.Fatalf("pool %s: %v", name, err)
	}
	return p
}

func baseVS() *lvsv1.VirtualService {
	return &lvsv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 3},
		Spec: lvsv1.VirtualServiceSpec{
			Addresses: []lvsv1.IPAddress{"10.96.0.10", "fd00::10"},
			Ports: []lvsv1.VirtualServicePort{
				{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))},
				{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromInt32(5353))},
			},
			Scheduler:     lvsv1.SchedulerWeightedRoundRobin,
			Forwarding:    lvsv1.ForwardingMasquerade,
			Backends:      lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
			Drain:         &lvsv1.Drain{TimeoutSeconds: 30},
			TrafficPolicy: lvsv1.TrafficPolicyCluster,
		},
	}
}

func slices4and6() []*discoveryv1.EndpointSlice {
	return []*discoveryv1.EndpointSlice{
		slice("web-v4", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
			ep{"10.1.0.1", "node-a", true, false},
			ep{"10.1.0.2", "node-b", true, false},
			ep{"10.1.0.3", "node-a", false, true},  // terminating: drains
			ep{"10.1.0.4", "node-b", false, false}, // not ready: left out
		),
		slice("web-v6", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080},
			ep{"fd01::1", "node-a", true, false},
		),
		// An FQDN slice is ignored.
		{ObjectMeta: metav1.ObjectMeta{Name: "web-fqdn"}, AddressType: discoveryv1.AddressTypeFQDN,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"example.com"}}}},
	}
}

func TestBuild(t *testing.T) {
	everywhere := []*pools.Pool{pool(t, "everywhere", nil, "10.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24", "fd00::/8")}
	node := Node{Name: "node-a", Labels: map[string]string{"role": "lb"}}
	cases := []struct {
		name string
		in   func() Input
	}{
		{"dual-stack-named-target-port", func() Input {
			return Input{VS: baseVS(), Slices: slices4and6(), Node: node}
		}},
		{"traffic-policy-local", func() Input {
			vs := baseVS()
			vs.Spec.TrafficPolicy = lvsv1.TrafficPolicyLocal
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"traffic-policy-local-with-static-backends-masquerades", func() Input {
			// A static backend may be on another node: its answers come
			// back only if the node masquerades.
			vs := baseVS()
			vs.Spec.TrafficPolicy = lvsv1.TrafficPolicyLocal
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			vs.Spec.Ports = vs.Spec.Ports[1:]
			vs.Spec.Backends.Static = []lvsv1.StaticBackend{{Address: "192.0.2.10"}}
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"node-selector-excludes", func() Input {
			vs := baseVS()
			vs.Spec.NodeSelector = map[string]lvsv1.LabelValue{"role": "edge"}
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"node-selector-matches", func() Input {
			vs := baseVS()
			vs.Spec.NodeSelector = map[string]lvsv1.LabelValue{"role": "lb"}
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"conflict-lost-keys", func() Input {
			vs := baseVS()
			lost := map[lvsv1.ServiceKey]bool{
				{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: lvsv1.ProtocolTCP}: true,
				{Address: netip.MustParseAddr("fd00::10"), Port: 80, Protocol: lvsv1.ProtocolTCP}:   true,
				{Address: netip.MustParseAddr("fd00::10"), Port: 53, Protocol: lvsv1.ProtocolUDP}:   true,
			}
			return Input{VS: vs, Slices: slices4and6(), Node: node, Lost: lost}
		}},
		{"static-weighted-persistent-sourceranges", func() Input {
			vs := baseVS()
			vs.Spec.Addresses = []lvsv1.IPAddress{"10.96.0.30"}
			vs.Spec.Ports = []lvsv1.VirtualServicePort{{Port: 8080, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(9090))}}
			vs.Spec.Backends = lvsv1.Backends{Static: []lvsv1.StaticBackend{
				{Address: "192.0.2.10", Weight: ptr.To[int32](3)},
				{Address: "192.0.2.11", Weight: ptr.To[int32](1), Port: ptr.To[int32](9999)},
			}}
			vs.Spec.Persistence = &lvsv1.Persistence{TimeoutSeconds: 300, IPv4PrefixLength: 24, IPv6PrefixLength: 64}
			vs.Spec.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8", "192.168.1.7/24", "fd00::/8"}
			vs.Spec.Drain = &lvsv1.Drain{TimeoutSeconds: 5, FlushTCPConntrack: true}
			return Input{VS: vs, Node: node}
		}},
		{"hostile-endpointslices", func() Input {
			// What the API server would refuse, as if a slice bypassed it:
			// nothing of it is programmed, the rest is.
			sl := slices4and6()
			sl = append(sl,
				slice("web-v6-mapped", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080},
					ep{"::ffff:10.9.9.9", "node-a", true, false}, // IPv4 in an IPv6 slice
					ep{"fe80::1", "node-a", true, false},         // link-local
					ep{"not-an-ip", "node-a", true, false},
				),
				slice("web-v4-bad-port", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 70000},
					ep{"10.1.0.9", "node-a", true, false},
				),
				&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-empty"}, AddressType: discoveryv1.AddressTypeIPv4,
					Endpoints: []discoveryv1.Endpoint{{Addresses: nil}}},
			)
			return Input{VS: baseVS(), Slices: sl, Node: node}
		}},
		{"source-ranges-admitting-all", func() Input {
			vs := baseVS()
			vs.Spec.SourceRanges = []lvsv1.CIDR{"0.0.0.0/0", "::/0"}
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"refused-target-port-holds", func() Input {
			// The controller refuses it; the agent must not program it
			// either, nor wrap 70000 into 4464.
			vs := baseVS()
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			vs.Spec.Ports = []lvsv1.VirtualServicePort{{Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(70000))}}
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"refused-source-ranges-of-one-family-holds", func() Input {
			vs := baseVS()
			vs.Spec.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8"}
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
		{"direct-route-mh-flags", func() Input {
			vs := baseVS()
			vs.Spec.Addresses = []lvsv1.IPAddress{"198.51.100.7"}
			vs.Spec.Ports = []lvsv1.VirtualServicePort{{Port: 1935, Protocol: lvsv1.ProtocolTCP}}
			vs.Spec.Scheduler = lvsv1.SchedulerMaglevHashing
			vs.Spec.SchedulerFlags = []lvsv1.SchedulerFlag{lvsv1.SchedulerFlagMHPort, lvsv1.SchedulerFlagMHFallback}
			vs.Spec.Forwarding = lvsv1.ForwardingDirectRoute
			vs.Spec.Backends = lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: "198.51.100.21"}, {Address: "198.51.100.22", Port: ptr.To[int32](1935)}}}
			return Input{VS: vs, Node: node}
		}},
		{"health-check-weight-zero", func() Input {
			vs := baseVS()
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			vs.Spec.Ports = vs.Spec.Ports[:1]
			vs.Spec.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Path: "/healthz", Port: ptr.To[int32](9000)}
			bad := netip.MustParseAddr("10.1.0.2")
			return Input{VS: vs, Slices: slices4and6(), Node: node, Healthy: func(a netip.Addr, port uint16) bool {
				return !(a == bad && port == 9000)
			}}
		}},
		{"address-not-allowed", func() Input {
			// One address in a pool of another team, the other in none:
			// nothing is programmed (Problems name both).
			return Input{VS: baseVS(), Slices: slices4and6(), Node: node, Pools: []*pools.Pool{
				pool(t, "team-b", map[string]string{"team": "b"}, "10.96.0.0/16"),
				pool(t, "v6", nil, "fd00:1::/64"),
			}, NamespaceLabels: map[string]string{"team": "a"}}
		}},
		{"address-allowed-by-namespace-labels", func() Input {
			vs := baseVS()
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			return Input{VS: vs, Slices: slices4and6(), Node: node, Pools: []*pools.Pool{
				pool(t, "team-a", map[string]string{"team": "a"}, "10.96.0.0/16"),
			}, NamespaceLabels: map[string]string{"team": "a"}}
		}},
		{"unresolved-target-port", func() Input {
			vs := baseVS()
			vs.Spec.Addresses = vs.Spec.Addresses[:1]
			vs.Spec.Ports[0].TargetPort = ptr.To(intstr.FromString("https"))
			return Input{VS: vs, Slices: slices4and6(), Node: node}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := tc.in()
			if in.Pools == nil {
				in.Pools = everywhere
			}
			golden.Assert(t, tc.name+".golden", Build(in).Dump())
		})
	}
}

// FuzzBuild: whatever the spec and the EndpointSlices say, Build programs
// nothing that validation refuses, never wraps a port (each real server's
// port is the one asked for, 1-65535) and never mixes families.
func FuzzBuild(f *testing.F) {
	f.Add("10.96.0.10", "10.0.0.0/8", "http", int32(80), int32(8080), false, int32(9090), "10.1.0.1")
	f.Add("fd00::1", "fd00::/8", "", int32(53), int32(70000), false, int32(0), "fd01::1")
	f.Add("10.96.0.10", "10.0.0.0/8", "", int32(80), int32(-5), false, int32(65536), "10.1.0.1")
	f.Add("10.96.0.10", "10.0.0.0/8", "http", int32(80), int32(1), true, int32(70000), "10.1.0.1")
	f.Fuzz(func(t *testing.T, addr, cidr, target string, port, intTarget int32, named bool, slicePort int32, backend string) {
		vs := baseVS()
		vs.Spec.Addresses = []lvsv1.IPAddress{lvsv1.IPAddress(addr)}
		vs.Spec.SourceRanges = []lvsv1.CIDR{lvsv1.CIDR(cidr)}
		vs.Spec.Ports = vs.Spec.Ports[:1]
		vs.Spec.Ports[0].Port = port
		vs.Spec.Ports[0].TargetPort = ptr.To(intstr.FromInt32(intTarget))
		if named {
			vs.Spec.Ports[0].TargetPort = ptr.To(intstr.FromString(target))
		}
		vs.Spec.Backends.Static = []lvsv1.StaticBackend{{Address: lvsv1.IPAddress(backend), Port: ptr.To(port)}}
		sl := slices4and6()
		for _, s := range sl {
			for i := range s.Ports {
				s.Ports[i].Port = ptr.To(slicePort)
			}
		}
		in := Input{VS: vs, Slices: sl, Node: Node{Name: "node-a"}}
		if a, err := netip.ParseAddr(addr); err == nil {
			if p, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "fuzz"}, Spec: lvsv1.AddressPoolSpec{
				CIDRs: []lvsv1.PoolCIDR{lvsv1.PoolCIDR(netip.PrefixFrom(a, a.BitLen()).String())}, NamespaceSelector: &lvsv1.LabelSelector{},
			}}); err == nil {
				in.Pools = []*pools.Pool{p}
			}
		}
		g := Build(in)
		refused := len(validation.VirtualService(vs)) > 0
		if refused != g.Hold || (g.Hold && (len(g.Services) > 0 || len(g.VIPs) > 0)) {
			t.Fatalf("refused=%t but:\n%s", refused, g.Dump())
		}
		for _, s := range g.Services {
			if !s.Address.IsValid() || int32(s.Port) != port {
				t.Fatalf("virtual server %s for port %d", s.VirtualServer, port)
			}
			for _, r := range s.Reals {
				if r.Address.Is4() != s.Address.Is4() {
					t.Fatalf("real server family differs from its VIP: %s", g.Dump())
				}
				ok := int32(r.Port) == port || (!named && int32(r.Port) == intTarget) || (named && int32(r.Port) == slicePort)
				if r.Port == 0 || !ok {
					t.Fatalf("real server %s: port %d is none of port %d, targetPort %d, slice port %d", r.RealServer, r.Port, port, intTarget, slicePort)
				}
			}
		}
	})
}
