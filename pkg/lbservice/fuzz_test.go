package lbservice

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// FuzzSpec: whatever a Service's annotations and ports say, Spec does not
// panic, and a spec it returns passes the validation every agent applies.
func FuzzSpec(f *testing.F) {
	f.Add("192.0.2.10,2001:db8::10", "wlc", "", "Masquerade", `{"protocol":"HTTP","path":"/healthz"}`, "120", "10.0.0.0/8", "http", int32(80), "8080", "TCP", "ClientIP")
	f.Add("198.51.100.1", "sh", "sh-port", "DirectRoute", "", "", "", "", int32(53), "53", "UDP", "")
	f.Add("::ffff:1.2.3.4", "mh", "mh-port,mh-fallback", "Tunnel", `{"port":70000}`, "-1", "::/0", "x", int32(0), "web", "SCTP", "None")
	f.Fuzz(func(t *testing.T, addrs, sched, flags, fwd, hc, drain, ranges, portName string, port int32, target, proto, affinity string) {
		tp := intstr.Parse(target)
		svc := service(func(s *corev1.Service) {
			s.Annotations = map[string]string{
				AnnotationAddresses: addrs, AnnotationScheduler: sched, AnnotationSchedulerFlags: flags,
				AnnotationForwarding: fwd, AnnotationHealthCheck: hc, AnnotationDrainTimeout: drain,
			}
			if ranges != "" {
				s.Spec.LoadBalancerSourceRanges = strings.Split(ranges, ",")
			}
			s.Spec.Ports = []corev1.ServicePort{{Name: portName, Port: port, Protocol: corev1.Protocol(proto), TargetPort: tp}}
			s.Spec.SessionAffinity = corev1.ServiceAffinity(affinity)
		})
		spec, err := Spec(svc)
		if err != nil {
			return
		}
		if (len(spec.Addresses) == 0) == (len(spec.AddressFamilies) == 0) {
			t.Fatalf("addresses %v and addressFamilies %v: want exactly one", spec.Addresses, spec.AddressFamilies)
		}
		if errs := validation.VirtualService(&lvsv1.VirtualService{Spec: spec}); len(errs) > 0 {
			t.Fatalf("Spec returned a spec that validation refuses: %v", errs)
		}
		// Every default filled in, so that it compares equal to what the
		// API server stores (no update on every reconcile).
		if spec.Scheduler == "" || spec.Forwarding == "" || spec.TrafficPolicy == "" || spec.Drain == nil {
			t.Fatalf("a default left unset: %+v", spec)
		}
		for _, p := range spec.Ports {
			if p.Protocol == "" {
				t.Fatalf("port %d without a protocol", p.Port)
			}
		}
	})
}
