package lbservice

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// service returns a Service of the class with one named TCP port and an
// address, changed by edit.
func service(edit func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{AnnotationAddresses: "192.0.2.10"}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: ptr.To(Class),
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if edit != nil {
		edit(svc)
	}
	return svc
}

// spec returns the spec generated from service(nil), changed by edit.
func spec(edit func(*lvsv1.VirtualServiceSpec)) lvsv1.VirtualServiceSpec {
	s := lvsv1.VirtualServiceSpec{
		Addresses:     []lvsv1.IPAddress{"192.0.2.10"},
		Ports:         []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))}},
		Scheduler:     lvsv1.SchedulerRoundRobin,
		Forwarding:    lvsv1.ForwardingMasquerade,
		TrafficPolicy: lvsv1.TrafficPolicyCluster,
		Backends:      lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
		Drain:         &lvsv1.Drain{TimeoutSeconds: 60},
	}
	if edit != nil {
		edit(&s)
	}
	return s
}

func annotate(kv ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		for i := 0; i < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func TestSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want lvsv1.VirtualServiceSpec
	}{
		{"named port: the EndpointSlice port of that name", service(nil), spec(nil)},
		{"named port with a named targetPort", service(func(s *corev1.Service) {
			s.Spec.Ports[0].TargetPort = intstr.FromString("web-http")
		}), spec(nil)},
		{"unnamed port with a numeric targetPort", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name = ""
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Ports[0].Name, s.Ports[0].TargetPort = "", ptr.To(intstr.FromInt32(8080))
		})},
		{"unnamed port with targetPort = port", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "", intstr.FromInt32(80)
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Name, s.Ports[0].TargetPort = "", nil })},
		{"unnamed port without targetPort (not defaulted)", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "", intstr.IntOrString{}
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.Ports[0].Name, s.Ports[0].TargetPort = "", nil })},
		{"a port name too long for a targetPort: the number", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name = "http-for-the-shop-frontend"
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Ports[0].Name, s.Ports[0].TargetPort = "http-for-the-shop-frontend", ptr.To(intstr.FromInt32(8080))
		})},
		{"TCP and UDP, protocol defaulted", service(func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{
				{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromInt32(5353)},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")},
			}
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Ports = []lvsv1.VirtualServicePort{
				{Name: "dns-tcp", Port: 53, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("dns-tcp"))},
				{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromString("dns"))},
			}
		})},
		{"session affinity ClientIP with its timeout", service(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Persistence = &lvsv1.Persistence{TimeoutSeconds: 600, IPv4PrefixLength: 32, IPv6PrefixLength: 128}
		})},
		{"session affinity ClientIP, Kubernetes' default timeout", service(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Persistence = &lvsv1.Persistence{TimeoutSeconds: 10800, IPv4PrefixLength: 32, IPv6PrefixLength: 128}
		})},
		{"session affinity None", service(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityNone }), spec(nil)},
		{"externalTrafficPolicy Local", service(func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.TrafficPolicy = lvsv1.TrafficPolicyLocal })},
		{"externalTrafficPolicy Cluster", service(func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}), spec(nil)},
		{"source ranges: canonical, once each", service(func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.1.2.3/8", "10.0.0.0/8", " 192.0.2.0/24"}
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8", "192.0.2.0/24"} })},
		{"source ranges: the legacy annotation", service(annotate(AnnotationSourceRanges, "10.0.0.0/8, 172.16.0.0/12")),
			spec(func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8", "172.16.0.0/12"} })},
		{"source ranges: the field wins over the legacy annotation", service(func(s *corev1.Service) {
			s.Annotations[AnnotationSourceRanges] = "not a CIDR"
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/8"} })},
		{"dual-stack addresses, canonical", service(annotate(AnnotationAddresses, " 192.0.2.10 , 2001:DB8::0010")),
			spec(func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"192.0.2.10", "2001:db8::10"} })},
		{"the deprecated loadBalancerIP", service(func(s *corev1.Service) {
			delete(s.Annotations, AnnotationAddresses)
			s.Spec.LoadBalancerIP = "198.51.100.7"
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"198.51.100.7"} })},
		{"loadBalancerIP and the annotation agree", service(func(s *corev1.Service) {
			s.Annotations[AnnotationAddresses] = "192.0.2.10,2001:db8::10"
			s.Spec.LoadBalancerIP = "2001:db8::10"
		}), spec(func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"192.0.2.10", "2001:db8::10"} })},
		{"scheduler", service(annotate(AnnotationScheduler, "wlc")),
			spec(func(s *lvsv1.VirtualServiceSpec) { s.Scheduler = lvsv1.SchedulerWeightedLeastConnection })},
		{"scheduler flags", service(annotate(AnnotationScheduler, "sh", AnnotationSchedulerFlags, "sh-port, sh-fallback")),
			spec(func(s *lvsv1.VirtualServiceSpec) {
				s.Scheduler = lvsv1.SchedulerSourceHashing
				s.SchedulerFlags = []lvsv1.SchedulerFlag{lvsv1.SchedulerFlagSHPort, lvsv1.SchedulerFlagSHFallback}
			})},
		{"DirectRoute with targetPort = port", service(func(s *corev1.Service) {
			s.Annotations[AnnotationForwarding] = "DirectRoute"
			s.Spec.Ports[0].TargetPort = intstr.FromInt32(80)
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Forwarding = lvsv1.ForwardingDirectRoute
			s.Ports[0].TargetPort = nil
		})},
		{"Tunnel", service(func(s *corev1.Service) {
			s.Annotations[AnnotationForwarding] = "Tunnel"
			s.Spec.Ports[0].TargetPort = intstr.FromInt32(80)
		}), spec(func(s *lvsv1.VirtualServiceSpec) {
			s.Forwarding = lvsv1.ForwardingTunnel
			s.Ports[0].TargetPort = nil
		})},
		{"health check with defaults", service(annotate(AnnotationHealthCheck, `{"protocol":"HTTP","path":"/healthz"}`)),
			spec(func(s *lvsv1.VirtualServiceSpec) {
				s.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Path: "/healthz", IntervalSeconds: 5, TimeoutSeconds: 2, Rise: 2, Fall: 3}
			})},
		{"health check, every field", service(annotate(AnnotationHealthCheck,
			`{"protocol":"TCP","port":9000,"intervalSeconds":10,"timeoutSeconds":3,"rise":1,"fall":5}`)),
			spec(func(s *lvsv1.VirtualServiceSpec) {
				s.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckTCP, Port: ptr.To[int32](9000), IntervalSeconds: 10, TimeoutSeconds: 3, Rise: 1, Fall: 5}
			})},
		{"empty scheduler and forwarding annotations: the defaults", service(annotate(AnnotationScheduler, " ", AnnotationForwarding, "")),
			spec(nil)},
		{"drain timeout", service(annotate(AnnotationDrainTimeout, "120")),
			spec(func(s *lvsv1.VirtualServiceSpec) { s.Drain.TimeoutSeconds = 120 })},
		{"drain timeout 0", service(annotate(AnnotationDrainTimeout, "0")),
			spec(func(s *lvsv1.VirtualServiceSpec) { s.Drain.TimeoutSeconds = 0 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Spec(tc.svc)
			if err != nil {
				t.Fatalf("Spec: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("spec\n got %s\nwant %s", js(got), js(tc.want))
			}
			if errs := validation.VirtualService(&lvsv1.VirtualService{Spec: got}); len(errs) > 0 {
				t.Errorf("the generated spec is refused: %v", errs)
			}
		})
	}
}

// Every refusal names the Service's field or annotation at fault.
func TestSpecRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want []string // substrings of the error
	}{
		{"SCTP", service(func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP }),
			[]string{"spec.ports[0].protocol", `"SCTP"`, "TCP", "UDP"}},
		{"no port", service(func(s *corev1.Service) { s.Spec.Ports = nil }), []string{"spec.ports: Required"}},
		{"unnamed port with a named targetPort", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "", intstr.FromString("web")
		}), []string{"spec.ports[0].targetPort", "name the port"}},
		{"a port name too long for a targetPort, with a named targetPort", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "http-for-the-shop-frontend", intstr.FromString("web")
		}), []string{"spec.ports[0].name", "at most 15"}},
		{"a port name without a letter, with a named targetPort", service(func(s *corev1.Service) {
			s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "8080", intstr.FromString("web")
		}), []string{"spec.ports[0].name", "with a letter"}},
		{"DirectRoute with another targetPort", service(annotate(AnnotationForwarding, "DirectRoute")),
			[]string{"spec.ports[0].targetPort", "must equal the port (80) with forwarding DirectRoute"}},
		{"Tunnel with a named targetPort", service(func(s *corev1.Service) {
			s.Annotations[AnnotationForwarding] = "Tunnel"
			s.Spec.Ports[0].TargetPort = intstr.FromString("http")
		}), []string{"spec.ports[0].targetPort", "with forwarding Tunnel"}},
		{"unknown forwarding", service(annotate(AnnotationForwarding, "NAT")),
			[]string{"annotation lvs.kubelvs.io/forwarding", "spec.forwarding", `"NAT"`}},
		{"unknown scheduler", service(annotate(AnnotationScheduler, "fastest")),
			[]string{"annotation lvs.kubelvs.io/scheduler", `"fastest"`, "wlc"}},
		{"a scheduler flag without its scheduler", service(annotate(AnnotationSchedulerFlags, "sh-port")),
			[]string{"annotation lvs.kubelvs.io/scheduler-flags", "require scheduler sh"}},
		{"an unknown scheduler flag", service(annotate(AnnotationScheduler, "sh", AnnotationSchedulerFlags, "sh-fast")),
			[]string{"annotation lvs.kubelvs.io/scheduler-flags", `"sh-fast"`}},
		{"a bad address", service(annotate(AnnotationAddresses, "192.0.2.300")),
			[]string{"metadata.annotations[lvs.kubelvs.io/addresses]", `"192.0.2.300" is not an IP address`}},
		{"an empty address list", service(annotate(AnnotationAddresses, " , ")),
			[]string{"metadata.annotations[lvs.kubelvs.io/addresses]", "at least one"}},
		{"two IPv4 addresses", service(annotate(AnnotationAddresses, "192.0.2.10,192.0.2.11")),
			[]string{"annotation lvs.kubelvs.io/addresses", "at most one address per IP family"}},
		{"a loopback address", service(annotate(AnnotationAddresses, "127.0.0.1")),
			[]string{"annotation lvs.kubelvs.io/addresses", "unicast"}},
		{"an IPv4-mapped address", service(annotate(AnnotationAddresses, "::ffff:192.0.2.1")),
			[]string{"annotation lvs.kubelvs.io/addresses", "IPv4-mapped"}},
		{"a bad loadBalancerIP", service(func(s *corev1.Service) {
			delete(s.Annotations, AnnotationAddresses)
			s.Spec.LoadBalancerIP = "web"
		}), []string{"spec.loadBalancerIP", "must be an IP address"}},
		{"a multicast loadBalancerIP", service(func(s *corev1.Service) {
			delete(s.Annotations, AnnotationAddresses)
			s.Spec.LoadBalancerIP = "224.0.0.1"
		}), []string{"spec.loadBalancerIP (spec.addresses[0]", "unicast"}},
		{"loadBalancerIP and the annotation disagree", service(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.99" }),
			[]string{"spec.loadBalancerIP", "differs from the annotation lvs.kubelvs.io/addresses"}},
		{"a bad source range", service(func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/33"} }),
			[]string{"spec.loadBalancerSourceRanges[0]", "must be a CIDR"}},
		{"a bad legacy source range", service(annotate(AnnotationSourceRanges, "10.0.0.0/8,everyone")),
			[]string{"metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges][1]", "must be a CIDR"}},
		{"source ranges without the VIP's family", service(func(s *corev1.Service) {
			s.Annotations[AnnotationAddresses] = "192.0.2.10,2001:db8::10"
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		}), []string{"spec.loadBalancerSourceRanges (spec.sourceRanges", "no IPv6 range"}},
		{"a persistence timeout out of range", service(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](-1)}}
		}), []string{"spec.sessionAffinityConfig", "spec.persistence.timeoutSeconds"}},
		{"health check: not JSON", service(annotate(AnnotationHealthCheck, "http /healthz")),
			[]string{"metadata.annotations[lvs.kubelvs.io/health-check]", "must be a JSON health check"}},
		{"health check: an unknown key", service(annotate(AnnotationHealthCheck, `{"protocol":"HTTP","path":"/","interval":5}`)),
			[]string{"metadata.annotations[lvs.kubelvs.io/health-check]", `unknown field "interval"`}},
		{"health check: two objects", service(annotate(AnnotationHealthCheck, `{} {}`)),
			[]string{"metadata.annotations[lvs.kubelvs.io/health-check]", "one JSON object"}},
		{"health check: HTTP without a path", service(annotate(AnnotationHealthCheck, `{"protocol":"HTTP"}`)),
			[]string{"annotation lvs.kubelvs.io/health-check (spec.healthCheck.path", "required"}},
		{"health check: timeout not below the interval", service(annotate(AnnotationHealthCheck, `{"intervalSeconds":2,"timeoutSeconds":2}`)),
			[]string{"annotation lvs.kubelvs.io/health-check (spec.healthCheck.timeoutSeconds"}},
		{"drain timeout: not a number", service(annotate(AnnotationDrainTimeout, "2m")),
			[]string{"metadata.annotations[lvs.kubelvs.io/drain-timeout]", "whole number of seconds"}},
		{"drain timeout: too long", service(annotate(AnnotationDrainTimeout, "100000")),
			[]string{"annotation lvs.kubelvs.io/drain-timeout (spec.drain.timeoutSeconds", "86400"}},
		{"address pool named with addresses", service(annotate(AnnotationAddressPool, "shop")),
			[]string{"annotation lvs.kubelvs.io/address-pool (spec.addressPool"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Spec(tc.svc)
			if err == nil {
				t.Fatalf("Spec accepted it: %+v", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A Service that asks for no address gets one of each of its IP families
// allocated, from the pool its annotation names if any.
func TestSpecWithoutAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		edit     func(*corev1.Service)
		families []lvsv1.AddressFamily
		pool     string
	}{
		{"families unset (not stored yet)", nil, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}, ""},
		{"IPv6", func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol} }, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv6}, ""},
		{"dual-stack, IPv6 first", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		}, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv6, lvsv1.AddressFamilyIPv4}, ""},
		{"a pool named", func(s *corev1.Service) {
			s.Annotations[AnnotationAddressPool] = " shop "
		}, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}, "shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc := service(func(s *corev1.Service) {
				delete(s.Annotations, AnnotationAddresses)
				if tc.edit != nil {
					tc.edit(s)
				}
			})
			got, err := Spec(svc)
			if err != nil {
				t.Fatal(err)
			}
			want := spec(func(s *lvsv1.VirtualServiceSpec) {
				s.Addresses = nil
				s.AddressFamilies = tc.families
				s.AddressPool = tc.pool
			})
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Spec:\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestServes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		svc                 *corev1.Service
		want, wantAsDefault bool
		disowned            bool
	}{
		{"the class", service(nil), true, true, false},
		{"another class", service(func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") }), false, false, true},
		{"no class", service(func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil }), false, true, false},
		{"ClusterIP", service(func(s *corev1.Service) {
			s.Spec.Type, s.Spec.LoadBalancerClass = corev1.ServiceTypeClusterIP, nil
		}), false, false, true},
		{"NodePort", service(func(s *corev1.Service) {
			s.Spec.Type, s.Spec.LoadBalancerClass = corev1.ServiceTypeNodePort, nil
		}), false, false, true},
	} {
		if got := Disowned(tc.svc); got != tc.disowned {
			t.Errorf("%s: Disowned = %v, want %v", tc.name, got, tc.disowned)
		}
		if got := Serves(tc.svc, false); got != tc.want {
			t.Errorf("%s: Serves(false) = %v, want %v", tc.name, got, tc.want)
		}
		if got := Serves(tc.svc, true); got != tc.wantAsDefault {
			t.Errorf("%s: Serves(true) = %v, want %v", tc.name, got, tc.wantAsDefault)
		}
	}
}

func TestIngress(t *testing.T) {
	t.Parallel()
	vs := func(status metav1.ConditionStatus, observed int64) *lvsv1.VirtualService {
		return &lvsv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Generation: 2},
			Spec:       spec(func(s *lvsv1.VirtualServiceSpec) { s.Addresses = []lvsv1.IPAddress{"192.0.2.10", "2001:db8::10"} }),
			Status: lvsv1.VirtualServiceStatus{Conditions: []metav1.Condition{
				{Type: lvsv1.ConditionAccepted, Status: status, ObservedGeneration: observed},
			}},
		}
	}
	vip := ptr.To(corev1.LoadBalancerIPModeVIP)
	for _, tc := range []struct {
		name string
		vs   *lvsv1.VirtualService
		want []corev1.LoadBalancerIngress
	}{
		{"accepted", vs(metav1.ConditionTrue, 2), []corev1.LoadBalancerIngress{{IP: "192.0.2.10", IPMode: vip}, {IP: "2001:db8::10", IPMode: vip}}},
		{"accepted, an older generation", vs(metav1.ConditionTrue, 1), nil},
		{"not accepted", vs(metav1.ConditionFalse, 2), nil},
		{"no condition yet", &lvsv1.VirtualService{Spec: spec(nil)}, nil},
		{"no VirtualService", nil, nil},
	} {
		if got := Ingress(tc.vs); !reflect.DeepEqual(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
			t.Errorf("%s: ingress\n got %s\nwant %s", tc.name, js(got), js(tc.want))
		}
	}
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
