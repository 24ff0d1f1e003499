package envtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/lbservice"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// lbService creates a Service of type LoadBalancer of kubelvs's class
// asking for addr, changed by edit.
func lbService(t *testing.T, ns, name, addr string, edit func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{lbservice.AnnotationAddresses: addr}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: ptr.To(lbservice.Class),
			Selector:          map[string]string{"app": name},
			Ports:             []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if edit != nil {
		edit(svc)
	}
	if err := k8s.Create(context.Background(), svc); err != nil {
		t.Fatalf("create Service %s: %v", name, err)
	}
	return svc
}

// waitVS waits until the VirtualService key exists and check passes.
func waitVS(t *testing.T, key client.ObjectKey, what string, check func(*lvsv1.VirtualService) error) *lvsv1.VirtualService {
	t.Helper()
	var vs lvsv1.VirtualService
	eventually(t, 20*time.Second, what, func() error {
		if err := k8s.Get(context.Background(), key, &vs); err != nil {
			return err
		}
		return check(&vs)
	})
	return &vs
}

func waitNoVS(t *testing.T, key client.ObjectKey, what string) {
	t.Helper()
	eventually(t, 20*time.Second, what, func() error {
		var vs lvsv1.VirtualService
		err := k8s.Get(context.Background(), key, &vs)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("VirtualService %s still exists", key)
	})
}

// waitIngress waits until the Service's status.loadBalancer.ingress lists
// exactly ips, each with ipMode VIP.
func waitIngress(t *testing.T, key client.ObjectKey, ips ...string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("ingress of %s is %v", key, ips), func() error {
		var svc corev1.Service
		if err := k8s.Get(context.Background(), key, &svc); err != nil {
			return err
		}
		var got []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
				return fmt.Errorf("ingress %s has ipMode %v", in.IP, in.IPMode)
			}
			got = append(got, in.IP)
		}
		if !slices.Equal(got, ips) {
			return fmt.Errorf("ingress %v", got)
		}
		return nil
	})
}

func updateService(t *testing.T, key client.ObjectKey, edit func(*corev1.Service)) {
	t.Helper()
	eventually(t, 10*time.Second, "update Service "+key.String(), func() error {
		var svc corev1.Service
		if err := k8s.Get(context.Background(), key, &svc); err != nil {
			return err
		}
		edit(&svc)
		return k8s.Update(context.Background(), &svc)
	})
}

// A Service of the class gets its VirtualService, owned and labeled; the
// Service's ingress follows its acceptance; a hand edit is overwritten;
// turning the Service into a ClusterIP removes both.
func TestServiceOfTypeLoadBalancer(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "lbsvc")
	svc := lbService(t, ns, "web", "192.0.2.110,2001:db8::110", func(s *corev1.Service) {
		s.Annotations[lbservice.AnnotationScheduler] = "wlc"
		s.Annotations[lbservice.AnnotationHealthCheck] = `{"protocol":"HTTP","path":"/healthz"}`
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")})
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "2001:db8:c1::/48"}
	})
	key := client.ObjectKeyFromObject(svc)

	want := lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"192.0.2.110", "2001:db8::110"},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))},
			{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromString("dns"))},
		},
		Scheduler:     lvsv1.SchedulerWeightedLeastConnection,
		Forwarding:    lvsv1.ForwardingMasquerade,
		Persistence:   &lvsv1.Persistence{TimeoutSeconds: 600, IPv4PrefixLength: 32, IPv6PrefixLength: 128},
		Backends:      lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
		HealthCheck:   &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Path: "/healthz", IntervalSeconds: 5, TimeoutSeconds: 2, Rise: 2, Fall: 3},
		Drain:         &lvsv1.Drain{TimeoutSeconds: 60},
		SourceRanges:  []lvsv1.CIDR{"10.0.0.0/8", "2001:db8:c1::/48"},
		TrafficPolicy: lvsv1.TrafficPolicyLocal,
	}
	vs := waitVS(t, key, "the generated VirtualService", func(*lvsv1.VirtualService) error { return nil })
	if !equalJSON(vs.Spec, want) {
		t.Fatalf("spec\n got %s\nwant %s", js(vs.Spec), js(want))
	}
	owner := metav1.GetControllerOf(vs)
	if owner == nil || owner.Kind != "Service" || owner.APIVersion != "v1" || owner.Name != "web" || owner.UID != svc.UID {
		t.Errorf("controller owner %+v, want the Service (UID %s)", owner, svc.UID)
	}
	if vs.Labels[lbservice.LabelService] != "web" {
		t.Errorf("labels %v, want %s=web", vs.Labels, lbservice.LabelService)
	}
	waitEvent(t, ns, "web", "Generated")

	// Accepted by the controller: the addresses become the Service's ingress.
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	waitIngress(t, key, "192.0.2.110", "2001:db8::110")

	// A hand edit is overwritten.
	eventually(t, 10*time.Second, "edit the VirtualService by hand", func() error {
		var cur lvsv1.VirtualService
		if err := k8s.Get(ctx, key, &cur); err != nil {
			return err
		}
		cur.Spec.Scheduler = lvsv1.SchedulerRoundRobin
		cur.Spec.NodeSelector = map[string]lvsv1.LabelValue{"lb": "true"}
		return k8s.Update(ctx, &cur)
	})
	waitVS(t, key, "the hand edit overwritten", func(vs *lvsv1.VirtualService) error {
		if vs.Spec.Scheduler != lvsv1.SchedulerWeightedLeastConnection || vs.Spec.NodeSelector != nil {
			return fmt.Errorf("scheduler %s nodeSelector %v", vs.Spec.Scheduler, vs.Spec.NodeSelector)
		}
		return nil
	})

	// A change of the Service reaches the VirtualService.
	updateService(t, key, func(s *corev1.Service) { s.Annotations[lbservice.AnnotationScheduler] = "sh" })
	waitVS(t, key, "the new scheduler", func(vs *lvsv1.VirtualService) error {
		if vs.Spec.Scheduler != lvsv1.SchedulerSourceHashing {
			return fmt.Errorf("scheduler %s", vs.Spec.Scheduler)
		}
		return nil
	})

	// No longer a LoadBalancer (which clears its class): the VirtualService
	// goes, and with it the ingress.
	updateService(t, key, toClusterIP)
	waitNoVS(t, key, "the VirtualService deleted with the type")
	waitIngress(t, key)
}

// Deleting the Service deletes its VirtualService (envtest runs no garbage
// collector: the controller does it).
func TestServiceDeletedTakesItsVirtualService(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "lbsvc-del")
	svc := lbService(t, ns, "web", "192.0.2.111", nil)
	key := client.ObjectKeyFromObject(svc)
	waitVS(t, key, "the generated VirtualService", func(*lvsv1.VirtualService) error { return nil })
	if err := k8s.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitNoVS(t, key, "the VirtualService deleted with the Service")
}

// A Service of type LoadBalancer without a class is another
// implementation's, unless kubelvs is the default (a second controller
// role, with --default-load-balancer-class).
func TestServiceWithoutClass(t *testing.T) {
	ns := namespace(t, "lbsvc-noclass")
	none := lbService(t, ns, "other", "192.0.2.112", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	foreign := lbService(t, ns, "foreign", "192.0.2.113", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") })
	// A Service created after them is served: by then they were seen.
	mine := lbService(t, ns, "mine", "192.0.2.114", nil)
	waitVS(t, client.ObjectKeyFromObject(mine), "the VirtualService of the class", func(*lvsv1.VirtualService) error { return nil })
	for _, s := range []*corev1.Service{none, foreign} {
		var vs lvsv1.VirtualService
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(s), &vs); !apierrors.IsNotFound(err) {
			t.Errorf("Service %s: a VirtualService (%v), want none", s.Name, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- roles.RunController(ctx, cfg, roles.ControllerOptions{
			MetricsBindAddress: "0", HealthProbeBindAddress: "0", SecondInProcess: true, DefaultLoadBalancerClass: true,
		})
	}()
	stopped := false
	stop := func() {
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the second controller role: %v", err)
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	waitVS(t, client.ObjectKeyFromObject(none), "the VirtualService of the Service without a class, as the default", func(*lvsv1.VirtualService) error { return nil })
	waitIngress(t, client.ObjectKeyFromObject(none), "192.0.2.112")
	var vs lvsv1.VirtualService
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(foreign), &vs); !apierrors.IsNotFound(err) {
		t.Errorf("Service of another class: a VirtualService (%v), want none", err)
	}

	// The suite's controller, not the default, leaves it in place (and a
	// change of the Service reaches it): a controller that lost the flag
	// by mistake takes no load balancer down.
	stop()
	updateService(t, client.ObjectKeyFromObject(none), func(s *corev1.Service) { s.Annotations[lbservice.AnnotationScheduler] = "wlc" })
	time.Sleep(time.Second)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(none), &vs); err != nil {
		t.Fatalf("the VirtualService of the Service without a class, after the default controller stopped: %v", err)
	}
	if vs.Spec.Scheduler != lvsv1.SchedulerRoundRobin {
		t.Errorf("scheduler %s: a controller that does not serve Services without a class changed it", vs.Spec.Scheduler)
	}
	waitIngress(t, client.ObjectKeyFromObject(none), "192.0.2.112")
}

// A Service that does not translate gets a Warning Event, and its
// VirtualService stays as it was; one that asks for no address gets none.
func TestServiceBadInputLeavesItsVirtualService(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "lbsvc-bad")
	svc := lbService(t, ns, "web", "192.0.2.115", nil)
	key := client.ObjectKeyFromObject(svc)
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	waitIngress(t, key, "192.0.2.115")
	var before lvsv1.VirtualService
	if err := k8s.Get(ctx, key, &before); err != nil {
		t.Fatal(err)
	}

	updateService(t, key, func(s *corev1.Service) { s.Annotations[lbservice.AnnotationScheduler] = "fastest" })
	e := waitEvent(t, ns, "web", "InvalidLoadBalancer")
	if e.Type != corev1.EventTypeWarning || !contains(e.Note, "lvs.kubelvs.io/scheduler", `"fastest"`) {
		t.Errorf("event %s %q: want a Warning naming the annotation and the value", e.Type, e.Note)
	}
	// The Service is reconciled again on a change of its VirtualService:
	// touch the Service once more and check nothing was written.
	updateService(t, key, func(s *corev1.Service) { s.Labels = map[string]string{"touched": "yes"} })
	time.Sleep(time.Second)
	var after lvsv1.VirtualService
	if err := k8s.Get(ctx, key, &after); err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation || after.Spec.Scheduler != before.Spec.Scheduler {
		t.Errorf("the VirtualService changed on bad input: generation %d → %d, scheduler %s → %s",
			before.Generation, after.Generation, before.Spec.Scheduler, after.Spec.Scheduler)
	}
	waitIngress(t, key, "192.0.2.115")

	// Bad from the start: an Event, and no VirtualService.
	sctp := lbService(t, ns, "sctp", "192.0.2.119", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP })
	e = waitEvent(t, ns, "sctp", "InvalidLoadBalancer")
	if !contains(e.Note, "spec.ports[0].protocol", "SCTP") {
		t.Errorf("event %q does not name the protocol", e.Note)
	}
	var vs lvsv1.VirtualService
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(sctp), &vs); !apierrors.IsNotFound(err) {
		t.Errorf("a VirtualService for a Service that does not translate (%v)", err)
	}

	// No address asked for: one of the Service's family is allocated
	// from a pool (the suite's), and becomes its ingress.
	noAddr := lbService(t, ns, "noaddr", "", func(s *corev1.Service) { delete(s.Annotations, lbservice.AnnotationAddresses) })
	var allocated string
	eventually(t, 20*time.Second, "an allocated address for noaddr and its ingress", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(noAddr), &vs); err != nil {
			return err
		}
		if !slices.Equal(vs.Spec.AddressFamilies, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}) || len(vs.Spec.Addresses) != 0 {
			return fmt.Errorf("spec: addresses %v, addressFamilies %v", vs.Spec.Addresses, vs.Spec.AddressFamilies)
		}
		if len(vs.Status.Addresses) != 1 {
			return fmt.Errorf("status.addresses %v", vs.Status.Addresses)
		}
		allocated = string(vs.Status.Addresses[0])
		return nil
	})
	if !netip.MustParsePrefix("10.96.0.0/16").Contains(netip.MustParseAddr(allocated)) {
		t.Errorf("allocated %s, outside the suite's pool", allocated)
	}
	waitIngress(t, client.ObjectKeyFromObject(noAddr), allocated)
}

// A VirtualService of the Service's name that it does not own is left
// alone, with a Warning Event on the Service.
func TestServiceNameTakenByAForeignVirtualService(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "lbsvc-foreign")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"192.0.2.116"}
	foreign := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	svc := lbService(t, ns, "web", "192.0.2.117", nil)
	e := waitEvent(t, ns, "web", "NameConflict")
	if e.Regarding.Kind != "Service" || e.Type != corev1.EventTypeWarning {
		t.Errorf("event on %s, type %s: want a Warning on the Service", e.Regarding.Kind, e.Type)
	}
	var got lvsv1.VirtualService
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(foreign), &got); err != nil {
		t.Fatal(err)
	}
	if got.Generation != 1 || len(got.OwnerReferences) != 0 || got.Labels[lbservice.LabelService] != "" ||
		!slices.Equal(got.Spec.Addresses, spec.Addresses) {
		t.Errorf("the foreign VirtualService was changed: generation %d, owners %v, labels %v, addresses %v",
			got.Generation, got.OwnerReferences, got.Labels, got.Spec.Addresses)
	}
	waitCondition(t, client.ObjectKeyFromObject(foreign), lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	waitIngress(t, client.ObjectKeyFromObject(svc)) // the foreign addresses are not the Service's
	// Nor is it deleted when the Service goes.
	if err := k8s.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(foreign), &got); err != nil {
		t.Errorf("the foreign VirtualService after its namesake Service was deleted: %v", err)
	}
}

// equalJSON compares a and b as the API serializes them (so an empty list
// and none are the same).
func equalJSON(a, b any) bool { return js(a) == js(b) }

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// toClusterIP makes a Service of type LoadBalancer a ClusterIP one, clearing
// what only a LoadBalancer may have.
func toClusterIP(s *corev1.Service) {
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.LoadBalancerClass = nil
	s.Spec.LoadBalancerSourceRanges = nil
	s.Spec.ExternalTrafficPolicy = ""
	s.Spec.AllocateLoadBalancerNodePorts = nil
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = 0
	}
}

// A Service asking for an address no AddressPool admits to its namespace
// gets a VirtualService that the controller refuses, and no ingress.
func TestServiceAddressNoPoolAdmits(t *testing.T) {
	ns := namespace(t, "lbsvc-nopool")
	svc := lbService(t, ns, "web", "203.0.113.120", nil)
	key := client.ObjectKeyFromObject(svc)
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	waitIngress(t, key)
}
