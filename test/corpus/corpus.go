// Package corpus holds hostile and invalid VirtualServices: each breaks one
// rule of a valid base, and names the field a refusal must name and a part
// of its message. test/envtest sends them to a real API server (those with
// API set must be refused there, the others land and get Accepted=False),
// and pkg/validation's tests check that the agent's and controller's shared
// validation refuses every one of them, so the CRD and the Go code cannot
// drift apart unnoticed.
package corpus

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// ValidSpec is a VirtualService the API server accepts; each case breaks
// exactly one thing in it.
func ValidSpec() lvsv1.VirtualServiceSpec {
	return lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.0.10"},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(8080))},
		},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends: lvsv1.Backends{
			ServiceRef: &lvsv1.ServiceReference{Name: "web"},
			Static:     []lvsv1.StaticBackend{{Address: "192.0.2.10", Weight: ptr.To[int32](1)}},
		},
	}
}

// Case is one invalid VirtualService.
type Case struct {
	Name   string
	Mutate func(s *lvsv1.VirtualServiceSpec)
	// Field is what the refusal names (the API server's cause field, or a
	// prefix of the validation error's field path).
	Field string
	// Msg is a part of the API server's message (API cases).
	Msg string
}

func tcp(name string, port int32) lvsv1.VirtualServicePort {
	return lvsv1.VirtualServicePort{Name: name, Port: port, Protocol: lvsv1.ProtocolTCP}
}

// VirtualServices returns the corpus: the cases the API server refuses
// (the CRD's schema and CEL rules), and those it stores, which only the
// controller (a condition) and the agents (nothing programmed) refuse.
func VirtualServices() (apiRefused, storedRefused []Case) {
	cases := []Case{
		{"address not an IP", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"10.0.0.300"} }, "spec.addresses[0]", "valid IP address"},
		{"address not canonical", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"2001:0db8:0::1"} }, "spec.addresses[0]", "canonical"},
		{"address loopback", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"127.0.0.1"} }, "spec.addresses[0]", "unicast"},
		{"two IPv4 addresses", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"10.0.0.1", "10.0.0.2"} }, "spec.addresses", "one address per IP family"},
		{"three addresses", func(s *lvsv1.VirtualServiceSpec) {
			s.Addresses = []lvsv1.IPAddress{"10.0.0.1", "2001:db8::1", "10.0.0.3"}
		}, "spec.addresses", "must have at most 2 items"},
		{"no address", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{} }, "spec.addresses", "exactly one of addresses and addressFamilies"},
		{"port zero", func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Port = 0 }, "spec.ports[0].port", "greater than or equal to 1"},
		{"port too big", func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Port = 70000 }, "spec.ports[0].port", "less than or equal to 65535"},
		{"duplicate port and protocol", func(s *lvsv1.VirtualServiceSpec) {
			s.Ports = append(s.Ports, tcp("again", 80))
		}, "spec.ports[1]", "Duplicate value"},
		{"unknown protocol", func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Protocol = "ICMP" }, "spec.ports[0].protocol", "Unsupported value"},
		{"port name not a DNS label", func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Name = "Http_1" }, "spec.ports[0].name", "should match"},
		{"unnamed port among several", func(s *lvsv1.VirtualServiceSpec) {
			s.Ports = append(s.Ports, tcp("", 443))
		}, "spec.ports", "needs a name"},
		{"duplicate port names", func(s *lvsv1.VirtualServiceSpec) {
			s.Ports = append(s.Ports, tcp("http", 443))
		}, "spec.ports", "names must be unique"},
		{"unknown scheduler", func(s *lvsv1.VirtualServiceSpec) { s.Scheduler = "random" }, "spec.scheduler", "Unsupported value"},
		{"sh flag without sh", func(s *lvsv1.VirtualServiceSpec) { s.SchedulerFlags = []lvsv1.SchedulerFlag{lvsv1.SchedulerFlagSHPort} }, "spec.schedulerFlags", "require scheduler sh"},
		{"mh flag with sh", func(s *lvsv1.VirtualServiceSpec) {
			s.Scheduler = lvsv1.SchedulerSourceHashing
			s.SchedulerFlags = []lvsv1.SchedulerFlag{lvsv1.SchedulerFlagMHFallback}
		}, "spec.schedulerFlags", "require scheduler mh"},
		{"unknown scheduler flag", func(s *lvsv1.VirtualServiceSpec) { s.SchedulerFlags = []lvsv1.SchedulerFlag{"fast"} }, "spec.schedulerFlags[0]", "Unsupported value"},
		{"persistence timeout beyond IPVS", func(s *lvsv1.VirtualServiceSpec) {
			s.Persistence = &lvsv1.Persistence{TimeoutSeconds: 3_000_000}
		}, "spec.persistence.timeoutSeconds", "less than or equal to 2678400"},
		{"persistence IPv4 prefix too long", func(s *lvsv1.VirtualServiceSpec) {
			s.Persistence = &lvsv1.Persistence{IPv4PrefixLength: 33}
		}, "spec.persistence.ipv4PrefixLength", "less than or equal to 32"},
		{"unknown forwarding", func(s *lvsv1.VirtualServiceSpec) { s.Forwarding = "NAT" }, "spec.forwarding", "Unsupported value"},
		{"DirectRoute with a different targetPort", func(s *lvsv1.VirtualServiceSpec) {
			s.Forwarding = lvsv1.ForwardingDirectRoute
		}, "spec.ports", "cannot rewrite the destination port"},
		{"Tunnel with a named targetPort", func(s *lvsv1.VirtualServiceSpec) {
			s.Forwarding = lvsv1.ForwardingTunnel
			s.Ports[0].TargetPort = ptr.To(intstr.FromString("http"))
		}, "spec.ports", "cannot rewrite the destination port"},
		{"DirectRoute static backend on another port", func(s *lvsv1.VirtualServiceSpec) {
			s.Forwarding = lvsv1.ForwardingDirectRoute
			s.Ports[0].TargetPort = nil
			s.Backends.Static[0].Port = ptr.To[int32](8080)
		}, "spec.backends.static", "equal to every port"},
		{"static backend not an IP", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Address = "backend-1" }, "spec.backends.static[0].address", "valid IP address"},
		{"static backend of a family without VIP", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Address = "2001:db8::10" }, "spec.backends.static", "IP family"},
		{"static backend weight above IPVS limit", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Weight = ptr.To[int32](70000) }, "spec.backends.static[0].weight", "less than or equal to 65535"},
		{"static backend negative weight", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Weight = ptr.To[int32](-1) }, "spec.backends.static[0].weight", "greater than or equal to 0"},
		{"duplicate static backend", func(s *lvsv1.VirtualServiceSpec) {
			s.Backends.Static = append(s.Backends.Static, s.Backends.Static[0])
		}, "spec.backends.static[1]", "Duplicate value"},
		{"static backend without port and named targetPort", func(s *lvsv1.VirtualServiceSpec) {
			s.Ports[0].TargetPort = ptr.To(intstr.FromString("http"))
		}, "spec.backends.static", "numeric targetPorts"},
		{"no backend source", func(s *lvsv1.VirtualServiceSpec) { s.Backends = lvsv1.Backends{} }, "spec.backends", "at least one backend source"},
		{"serviceRef name invalid", func(s *lvsv1.VirtualServiceSpec) { s.Backends.ServiceRef.Name = "Web" }, "spec.backends.serviceRef.name", "should match"},
		{"sourceRange prefix too long", func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/33"} }, "spec.sourceRanges[0]", "valid CIDR"},
		{"sourceRange not a CIDR", func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.1"} }, "spec.sourceRanges[0]", "valid CIDR"},
		{"HTTP health check without path", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP}
		}, "spec.healthCheck.path", "path is required"},
		{"TCP health check with path", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckTCP, Path: "/healthz"}
		}, "spec.healthCheck.path", "only to HTTP"},
		{"health check timeout not shorter than interval", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{IntervalSeconds: 2, TimeoutSeconds: 2}
		}, "spec.healthCheck.timeoutSeconds", "shorter than intervalSeconds"},
		{"negative drain timeout", func(s *lvsv1.VirtualServiceSpec) { s.Drain = &lvsv1.Drain{TimeoutSeconds: -1} }, "spec.drain.timeoutSeconds", "greater than or equal to 0"},
		{"unknown traffic policy", func(s *lvsv1.VirtualServiceSpec) { s.TrafficPolicy = "Node" }, "spec.trafficPolicy", "Unsupported value"},
		{"nodeSelector of 65 labels", func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]lvsv1.LabelValue{}
			for i := 0; i < 65; i++ {
				s.NodeSelector[fmt.Sprintf("label-%d", i)] = "x"
			}
		}, "spec.nodeSelector", "at most 64"},
		{"nodeSelector value over 63 characters", func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]lvsv1.LabelValue{"zone": lvsv1.LabelValue(strings.Repeat("a", 64))}
		}, "spec.nodeSelector.zone", "63"},
	}
	cases = append(cases, apiRefusedNew()...)
	return append(cases, automaticAddresses()...), storedButRefused()
}

// apiRefusedNew are the cases of issue 11: what the API server let through
// before the CRD bounded it.
func apiRefusedNew() []Case {
	addr := func(a string) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{lvsv1.IPAddress(a)} }
	}
	target := func(tp intstr.IntOrString) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) {
			s.Ports[0].TargetPort = &tp
			s.Backends.Static[0].Port = ptr.To[int32](80)
		}
	}
	path := func(p string) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Path: p, IntervalSeconds: 5, TimeoutSeconds: 2}
		}
	}
	selector := func(k, v string) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]lvsv1.LabelValue{k: lvsv1.LabelValue(v)}
		}
	}
	return []Case{
		{"targetPort above 65535 (wrapped to 4464 before)", target(intstr.FromInt32(70000)), "spec.ports[0].targetPort", "1-65535"},
		{"negative targetPort (wrapped to 65531 before)", target(intstr.FromInt32(-5)), "spec.ports[0].targetPort", "1-65535"},
		{"targetPort zero", target(intstr.FromInt32(0)), "spec.ports[0].targetPort", "1-65535"},
		{"targetPort name of 40 KB", target(intstr.FromString(strings.Repeat("a", 40_000))), "spec.ports[0].targetPort", "1-15 characters"},
		{"targetPort empty name", target(intstr.FromString("")), "spec.ports[0].targetPort", "1-15 characters"},
		{"address in class E", addr("240.0.0.1"), "spec.addresses[0]", "reserved"},
		{"address in this-network", addr("0.1.2.3"), "spec.addresses[0]", "reserved"},
		{"address IPv4-mapped", addr("::ffff:192.0.2.1"), "spec.addresses[0]", "IPv4-mapped"},
		{"address IPv4-mapped in hex", addr("::ffff:c000:201"), "spec.addresses[0]", "IPv4-mapped"},
		{"address broadcast", addr("255.255.255.255"), "spec.addresses[0]", "unicast"},
		{"address multicast", addr("224.0.0.1"), "spec.addresses[0]", "unicast"},
		{"address IPv6 link-local", addr("fe80::1"), "spec.addresses[0]", "unicast"},
		{"address unspecified IPv6", addr("::"), "spec.addresses[0]", "unicast"},
		{"address with a zone", addr("fe80::1%eth0"), "spec.addresses[0]", "valid IP address"},
		{"address of 46 characters", addr(strings.Repeat("1", 46)), "spec.addresses[0]", "45"},
		{"static backend in class E", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Address = "250.1.2.3" }, "spec.backends.static[0].address", "reserved"},
		{"static backend IPv4-mapped", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Address = "::ffff:192.0.2.10" }, "spec.backends.static[0].address", "IPv4-mapped"},
		{"health path with a bad escape", path("/%zz"), "spec.healthCheck.path", "should match"},
		{"health path with a space", path("/a b"), "spec.healthCheck.path", "should match"},
		{"health path with a fragment", path("/ready#now"), "spec.healthCheck.path", "should match"},
		{"health path with a control character", path("/ready\x01"), "spec.healthCheck.path", "should match"},
		{"health path of 1025 characters", path("/" + strings.Repeat("a", 1024)), "spec.healthCheck.path", "1024"},
		{"health path not absolute", path("healthz"), "spec.healthCheck.path", "should match"},

		{"nodeSelector key of 318 characters", selector(strings.Repeat("a", 318), "x"), "spec.nodeSelector", "at most 317"},
		{"nodeSelector value with a space", selector("zone", "a b"), "spec.nodeSelector.zone", "should match"},
		{"nodeSelector value ending in a dot", selector("zone", "a."), "spec.nodeSelector.zone", "should match"},
		{"nodeSelector value of 1 MiB", selector("zone", strings.Repeat("a", 1<<20)), "spec.nodeSelector.zone", "63"},
		{"101 ports", func(s *lvsv1.VirtualServiceSpec) {
			s.Ports = nil
			for i := range 101 {
				s.Ports = append(s.Ports, tcp(fmt.Sprintf("p%d", i), int32(1000+i)))
			}
		}, "spec.ports", "at most 100"},
		{"257 static backends", func(s *lvsv1.VirtualServiceSpec) {
			s.Backends.Static = nil
			for i := range 257 {
				s.Backends.Static = append(s.Backends.Static, lvsv1.StaticBackend{Address: lvsv1.IPAddress(fmt.Sprintf("192.0.%d.%d", 2+i/250, 1+i%250))})
			}
		}, "spec.backends.static", "at most 256"},
		{"65 source ranges", func(s *lvsv1.VirtualServiceSpec) {
			for i := range 65 {
				s.SourceRanges = append(s.SourceRanges, lvsv1.CIDR(fmt.Sprintf("10.%d.0.0/16", i)))
			}
		}, "spec.sourceRanges", "at most 64"},
		{"three scheduler flags", func(s *lvsv1.VirtualServiceSpec) {
			s.Scheduler = lvsv1.SchedulerSourceHashing
			s.SchedulerFlags = []lvsv1.SchedulerFlag{lvsv1.SchedulerFlagSHFallback, lvsv1.SchedulerFlagSHPort, lvsv1.SchedulerFlagMHPort}
		}, "spec.schedulerFlags", "at most 2"},
		{"serviceRef name of 64 characters", func(s *lvsv1.VirtualServiceSpec) { s.Backends.ServiceRef.Name = "a" + strings.Repeat("b", 63) }, "spec.backends.serviceRef.name", "63"},
		{"port name of 64 characters", func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Name = strings.Repeat("p", 64) }, "spec.ports[0].name", "63"},
		{"drain longer than a day", func(s *lvsv1.VirtualServiceSpec) { s.Drain = &lvsv1.Drain{TimeoutSeconds: 86401} }, "spec.drain.timeoutSeconds", "86400"},
		{"health interval above 300", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{IntervalSeconds: 301, TimeoutSeconds: 2}
		}, "spec.healthCheck.intervalSeconds", "300"},
		{"health rise above 10", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{IntervalSeconds: 5, TimeoutSeconds: 2, Rise: 11}
		}, "spec.healthCheck.rise", "10"},
		{"persistence IPv6 prefix 129", func(s *lvsv1.VirtualServiceSpec) {
			s.Persistence = &lvsv1.Persistence{TimeoutSeconds: 300, IPv6PrefixLength: 129}
		}, "spec.persistence.ipv6PrefixLength", "128"},
		{"health check port 0", func(s *lvsv1.VirtualServiceSpec) {
			s.HealthCheck = &lvsv1.HealthCheck{IntervalSeconds: 5, TimeoutSeconds: 2, Port: ptr.To[int32](70000)}
		}, "spec.healthCheck.port", "65535"},
		{"static backend port 0", func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Port = ptr.To[int32](0) }, "spec.backends.static[0].port", "greater than or equal to 1"},
	}
}

// automaticAddresses are the cases of spec.addressFamilies and
// spec.addressPool (issue 13).
func automaticAddresses() []Case {
	families := func(fs ...lvsv1.AddressFamily) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) { s.Addresses, s.AddressFamilies = nil, fs }
	}
	withPool := func(pool string) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) {
			s.Addresses, s.AddressFamilies, s.AddressPool = nil, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}, pool
		}
	}
	return []Case{
		{"addresses and addressFamilies", func(s *lvsv1.VirtualServiceSpec) {
			s.AddressFamilies = []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}
		}, "spec.addresses", "exactly one of addresses and addressFamilies"},
		{"address family unknown", families("IPv5"), "spec.addressFamilies[0]", "Unsupported value"},
		{"address family lowercase", families("ipv4"), "spec.addressFamilies[0]", "Unsupported value"},
		{"address family twice", families(lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv4), "spec.addressFamilies[1]", "Duplicate value"},
		{"three address families", families(lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv6, lvsv1.AddressFamilyIPv4), "spec.addressFamilies", "at most 2 items"},
		{"addressPool with addresses", func(s *lvsv1.VirtualServiceSpec) { s.AddressPool = "shop" }, "spec.addressPool", "only with addressFamilies"},
		{"addressPool not a DNS name", withPool("Shop_Pool"), "spec.addressPool", "should match"},
		{"addressPool of 254 characters", withPool(strings.Repeat("p", 254)), "spec.addressPool", "253"},
		{"static backend of a family not asked for", families(lvsv1.AddressFamilyIPv6), "spec.backends.static", "IP family"},
	}
}

// storedButRefused pass the API server (the CRD cannot express them within
// its CEL cost budget, or they depend on several fields at once in ways the
// CRD does not check) and are refused by validation.VirtualService: the
// controller sets Accepted=False and no agent programs them.
func storedButRefused() []Case {
	target := func(name string) func(s *lvsv1.VirtualServiceSpec) {
		return func(s *lvsv1.VirtualServiceSpec) {
			s.Ports[0].TargetPort = ptr.To(intstr.FromString(name))
			s.Backends.Static[0].Port = ptr.To[int32](80)
		}
	}
	return []Case{
		{Name: "targetPort name with capitals", Mutate: target("Bad_Name"), Field: "spec.ports[0].targetPort"},
		{Name: "targetPort name of digits only", Mutate: target("8080"), Field: "spec.ports[0].targetPort"},
		{Name: "targetPort name with a double dash", Mutate: target("a--b"), Field: "spec.ports[0].targetPort"},
		{Name: "static backend equal to the VIP", Mutate: func(s *lvsv1.VirtualServiceSpec) { s.Backends.Static[0].Address = "10.96.0.10" }, Field: "spec.backends.static[0].address"},
		{Name: "source ranges of the other family only", Mutate: func(s *lvsv1.VirtualServiceSpec) {
			s.SourceRanges = []lvsv1.CIDR{"2001:db8::/32"}
		}, Field: "spec.sourceRanges"},
		{Name: "dual-stack VIP with IPv4 source ranges only", Mutate: func(s *lvsv1.VirtualServiceSpec) {
			s.Addresses = []lvsv1.IPAddress{"10.96.0.10", "fd00::10"}
			s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8"}
		}, Field: "spec.sourceRanges"},
		{Name: "dual-stack addressFamilies with IPv4 source ranges only", Mutate: func(s *lvsv1.VirtualServiceSpec) {
			s.Addresses, s.AddressFamilies = nil, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv6}
			s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8"}
		}, Field: "spec.sourceRanges"},
		{Name: "nodeSelector key with a space", Mutate: func(s *lvsv1.VirtualServiceSpec) { s.NodeSelector = map[string]lvsv1.LabelValue{"bad key": "x"} }, Field: "spec.nodeSelector"},
		{Name: "nodeSelector key starting with a dash", Mutate: func(s *lvsv1.VirtualServiceSpec) { s.NodeSelector = map[string]lvsv1.LabelValue{"-zone": "x"} }, Field: "spec.nodeSelector"},
		{Name: "nodeSelector key with two slashes", Mutate: func(s *lvsv1.VirtualServiceSpec) { s.NodeSelector = map[string]lvsv1.LabelValue{"a/b/c": "x"} }, Field: "spec.nodeSelector"},
		{Name: "nodeSelector key name longer than 63", Mutate: func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]lvsv1.LabelValue{"example.com/" + strings.Repeat("n", 64): "x"}
		}, Field: "spec.nodeSelector"},
		{Name: "nodeSelector key prefix not a DNS subdomain", Mutate: func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]lvsv1.LabelValue{strings.Repeat("d", 254) + "/zone": "x"}
		}, Field: "spec.nodeSelector"},
	}
}
