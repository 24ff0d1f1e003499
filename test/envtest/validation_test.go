package envtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// validSpec is a VirtualService the API server accepts; each invalid case
// breaks exactly one thing in it.
func validSpec() lvsv1.VirtualServiceSpec {
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

func TestValidSpecIsAccepted(t *testing.T) {
	ns := namespace(t, "valid")
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "ok", Namespace: ns}, Spec: validSpec()}
	if err := k8s.Create(context.Background(), vs, client.DryRunAll); err != nil {
		t.Fatalf("the base of the invalid cases must be valid: %v", err)
	}
}

func TestInvalidVirtualServicesAreRejected(t *testing.T) {
	ns := namespace(t, "invalid")
	tcp := func(name string, port int32) lvsv1.VirtualServicePort {
		return lvsv1.VirtualServicePort{Name: name, Port: port, Protocol: lvsv1.ProtocolTCP}
	}
	cases := []struct {
		name   string
		mutate func(s *lvsv1.VirtualServiceSpec)
		field  string // the field the API server's message must name
		msg    string // a part of the message
	}{
		{"address not an IP", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"10.0.0.300"} }, "spec.addresses[0]", "valid IP address"},
		{"address not canonical", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"2001:0db8:0::1"} }, "spec.addresses[0]", "canonical"},
		{"address loopback", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"127.0.0.1"} }, "spec.addresses[0]", "unicast"},
		{"two IPv4 addresses", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"10.0.0.1", "10.0.0.2"} }, "spec.addresses", "one address per IP family"},
		{"three addresses", func(s *lvsv1.VirtualServiceSpec) {
			s.Addresses = []lvsv1.IPAddress{"10.0.0.1", "2001:db8::1", "10.0.0.3"}
		}, "spec.addresses", "must have at most 2 items"},
		{"no address", func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{} }, "spec.addresses", "at least 1"},
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
			s.NodeSelector = map[string]string{}
			for i := 0; i < 65; i++ {
				s.NodeSelector[fmt.Sprintf("label-%d", i)] = "x"
			}
		}, "spec.nodeSelector", "at most 64"},
		{"nodeSelector value over 63 characters", func(s *lvsv1.VirtualServiceSpec) {
			s.NodeSelector = map[string]string{"zone": strings.Repeat("a", 64)}
		}, "spec.nodeSelector", "values at most 63"},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d invalid cases; the issue asks for at least 25", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tc.mutate(&spec)
			vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: spec}
			err := k8s.Create(context.Background(), vs, client.DryRunAll)
			if err == nil {
				t.Fatalf("the API server accepted an invalid VirtualService")
			}
			var se *apierrors.StatusError
			if !errors.As(err, &se) || !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, c := range se.ErrStatus.Details.Causes {
				if c.Field == tc.field && strings.Contains(c.Message, tc.msg) {
					return
				}
			}
			t.Fatalf("no cause names %s with %q; the API server said: %v", tc.field, tc.msg, err)
		})
	}
}
