package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// selectedLabel is the label the tests' --endpointslice-selector asks for.
const (
	selectedLabel = "lvs.kubelvs.io/backend"
	testSelector  = selectedLabel + "=true"
)

// watchEvents reads kubelvs_watch_events_total{resource,event}.
func watchEvents(t *testing.T, reg *prometheus.Registry, resource, event string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kubelvs_watch_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["resource"] == resource && l["event"] == event {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("kubelvs_watch_events_total{resource=%q,event=%q} not registered", resource, event)
	return 0
}

// sliceOf is an EndpointSlice of Service svc (no service-name label when
// svc is ""), with extra labels, of endpoints on port 8080.
func sliceOf(ns, name, svc string, extra map[string]string, addrs ...string) *discoveryv1.EndpointSlice {
	l := map[string]string{}
	if svc != "" {
		l[discoveryv1.LabelServiceName] = svc
	}
	for k, v := range extra {
		l[k] = v
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   endpoints(addrs...),
	}
}

// vsFor is a VirtualService on addr:80 that takes its backends from svc.
func vsFor(ns, name, addr, svc string) *lvsv1.VirtualService {
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(addr)},
		Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))}},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: svc}},
	}}
}

func updateSlice(t *testing.T, key client.ObjectKey, edit func(*discoveryv1.EndpointSlice)) {
	t.Helper()
	eventually(t, 10*time.Second, "update EndpointSlice "+key.String(), func() error {
		var s discoveryv1.EndpointSlice
		if err := k8s.Get(context.Background(), key, &s); err != nil {
			return err
		}
		edit(&s)
		return k8s.Update(context.Background(), &s)
	})
}

// An agent with --endpointslice-selector receives no event of a slice the
// selector leaves out, nor of one without the kubernetes.io/service-name
// label, and programs no backend of them; it programs those of a selected
// slice, and follows a slice that comes into and goes out of the selector.
func TestAgentWatchesOnlySelectedEndpointSlices(t *testing.T) {
	ctx := context.Background()
	fn := newFakeNode(t)
	const nodeName = "node-selector"
	node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
	reg := prometheus.NewRegistry()
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- roles.RunAgent(actx, cfg, roles.AgentOptions{
			Options:            agent.Options{NodeName: nodeName, ResyncPeriod: time.Hour, DrainInterval: 50 * time.Millisecond},
			MetricsBindAddress: "0", HealthProbeBindAddress: "0", Kernel: fn.k, MetricsRegistry: reg,
			EndpointSliceSelector: testSelector,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent role: %v", err)
		}
	})

	ns := namespace(t, "selector")
	yes := map[string]string{selectedLabel: "true"}
	for _, s := range []*discoveryv1.EndpointSlice{
		sliceOf(ns, "web-1", "web", yes, "10.2.0.1"),
		sliceOf(ns, "other-1", "other", nil, "10.2.0.2"),
		sliceOf(ns, "other-2", "other", map[string]string{selectedLabel: "false"}, "10.2.0.3"),
		// Selected, but of no Service: never used, never watched.
		sliceOf(ns, "stray", "", yes, "10.2.0.4"),
	} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, vs := range []*lvsv1.VirtualService{vsFor(ns, "web", "10.96.61.1", "web"), vsFor(ns, "other", "10.96.61.2", "other")} {
		if err := k8s.Create(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	kernelIs := func(what, want string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			if got := fn.ipvs.Dump(); got != want {
				return fmt.Errorf("kernel:\n%s\nwant:\n%s", got, want)
			}
			return nil
		})
	}
	kernelIs("the selected slice's backends, none of the others'", `TCP/10.96.61.1:80 rr
  -> 10.2.0.1:8080 w=1 Masquerade
TCP/10.96.61.2:80 rr
`)
	// Churn on the slices left out reaches the agent not at all.
	for i := range 5 {
		for _, name := range []string{"other-1", "other-2", "stray"} {
			updateSlice(t, client.ObjectKey{Namespace: ns, Name: name}, func(s *discoveryv1.EndpointSlice) {
				s.Endpoints = endpoints(fmt.Sprintf("10.2.1.%d", i+1))
			})
		}
	}
	updateSlice(t, client.ObjectKey{Namespace: ns, Name: "web-1"}, func(s *discoveryv1.EndpointSlice) {
		s.Endpoints = endpoints("10.2.0.1", "10.2.0.5")
	})
	kernelIs("the selected slice's update", `TCP/10.96.61.1:80 rr
  -> 10.2.0.1:8080 w=1 Masquerade
  -> 10.2.0.5:8080 w=1 Masquerade
TCP/10.96.61.2:80 rr
`)
	// Other tests' slices are deleted with their namespaces; the API
	// server's own (default/kubernetes) has no selected label either.
	if add, upd, del := watchEvents(t, reg, "endpointslices", "add"), watchEvents(t, reg, "endpointslices", "update"), watchEvents(t, reg, "endpointslices", "delete"); add != 1 || upd != 1 || del != 0 {
		t.Errorf("EndpointSlice events add=%v update=%v delete=%v, want 1, 1, 0: the agent received slices its selector leaves out", add, upd, del)
	}
	if vsAdds := watchEvents(t, reg, "virtualservices", "add"); vsAdds < 2 {
		t.Errorf("VirtualService adds %v, want at least 2", vsAdds)
	}

	// Labeled, a slice comes into the agent's watch (an add); unlabeled,
	// it leaves it (a delete), and its backends with it.
	updateSlice(t, client.ObjectKey{Namespace: ns, Name: "other-2"}, func(s *discoveryv1.EndpointSlice) { s.Labels[selectedLabel] = "true" })
	kernelIs("a slice labeled into the selector", `TCP/10.96.61.1:80 rr
  -> 10.2.0.1:8080 w=1 Masquerade
  -> 10.2.0.5:8080 w=1 Masquerade
TCP/10.96.61.2:80 rr
  -> 10.2.1.5:8080 w=1 Masquerade
`)
	updateSlice(t, client.ObjectKey{Namespace: ns, Name: "other-2"}, func(s *discoveryv1.EndpointSlice) { delete(s.Labels, selectedLabel) })
	kernelIs("a slice labeled out of the selector", `TCP/10.96.61.1:80 rr
  -> 10.2.0.1:8080 w=1 Masquerade
  -> 10.2.0.5:8080 w=1 Masquerade
TCP/10.96.61.2:80 rr
`)
	if add, del := watchEvents(t, reg, "endpointslices", "add"), watchEvents(t, reg, "endpointslices", "delete"); add != 2 || del != 1 {
		t.Errorf("EndpointSlice events add=%v delete=%v, want 2 and 1", add, del)
	}
}

// A controller with --endpointslice-selector flags a VirtualService whose
// Service the selector leaves out (Ready=False, ServiceNotSelected, and a
// Warning Event), and clears it once the Service is labeled; a Service of
// type LoadBalancer whose generated VirtualService is flagged gets the
// Event too.
func TestControllerFlagsUnselectedService(t *testing.T) {
	ctx := context.Background()
	replaceSuiteController(t, roles.ControllerOptions{EndpointSliceSelector: testSelector})
	ns := namespace(t, "notselected")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	vs := vsFor(ns, "web", "10.96.61.10", "web")
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	// A VirtualService whose Service does not exist is not flagged for it.
	missing := vsFor(ns, "missing", "10.96.61.11", "nothing")
	if err := k8s.Create(ctx, missing); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)
	got := waitCondition(t, key, lvsv1.ConditionReady, metav1.ConditionFalse, vsstatus.ReasonServiceNotSelected)
	c := meta.FindStatusCondition(got.Status.Conditions, lvsv1.ConditionReady)
	for _, w := range []string{ns + "/web", testSelector} {
		if !strings.Contains(c.Message, w) {
			t.Errorf("Ready message %q does not name %q", c.Message, w)
		}
	}
	if !meta.IsStatusConditionTrue(got.Status.Conditions, lvsv1.ConditionAccepted) {
		t.Errorf("Accepted is not True: %+v", got.Status.Conditions)
	}
	e := waitEvent(t, ns, "web", vsstatus.ReasonServiceNotSelected)
	if e.Type != corev1.EventTypeWarning || e.Regarding.Kind != "VirtualService" || !strings.Contains(e.Note, testSelector) {
		t.Errorf("event %s on %s %q: want a Warning on the VirtualService naming the selector", e.Type, e.Regarding.Kind, e.Note)
	}
	waitCondition(t, client.ObjectKeyFromObject(missing), lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)
	if c := meta.FindStatusCondition(waitVS(t, client.ObjectKeyFromObject(missing), "missing", func(*lvsv1.VirtualService) error { return nil }).Status.Conditions, lvsv1.ConditionReady); c != nil && c.Reason == vsstatus.ReasonServiceNotSelected {
		t.Errorf("a VirtualService whose Service does not exist is flagged: %+v", c)
	}

	// Labeled: no longer flagged.
	updateService(t, client.ObjectKeyFromObject(svc), func(s *corev1.Service) { s.Labels = map[string]string{selectedLabel: "true"} })
	eventually(t, 20*time.Second, "the flag cleared", func() error {
		c, _, err := condition(t, key, lvsv1.ConditionReady)
		if err != nil {
			return err
		}
		if c.Reason == vsstatus.ReasonServiceNotSelected {
			return fmt.Errorf("Ready %s/%s: %s", c.Status, c.Reason, c.Message)
		}
		return nil
	})
	// And again when the label goes.
	updateService(t, client.ObjectKeyFromObject(svc), func(s *corev1.Service) { s.Labels = nil })
	waitCondition(t, key, lvsv1.ConditionReady, metav1.ConditionFalse, vsstatus.ReasonServiceNotSelected)

	// A Service of type LoadBalancer: its generated VirtualService is
	// flagged, and the Service, where its user looks, gets the Event.
	lb := lbService(t, ns, "shop", "192.0.2.150", nil)
	lbKey := client.ObjectKeyFromObject(lb)
	waitCondition(t, lbKey, lvsv1.ConditionReady, metav1.ConditionFalse, vsstatus.ReasonServiceNotSelected)
	eventually(t, 20*time.Second, "the Warning on the Service", func() error {
		var list eventsv1.EventList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Kind == "Service" && e.Regarding.Name == "shop" && e.Reason == vsstatus.ReasonServiceNotSelected && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no ServiceNotSelected Warning on Service shop among %d events", len(list.Items))
	})
	updateService(t, lbKey, func(s *corev1.Service) { s.Labels = map[string]string{selectedLabel: "true"} })
	eventually(t, 20*time.Second, "the LoadBalancer Service's flag cleared", func() error {
		c, _, err := condition(t, lbKey, lvsv1.ConditionReady)
		if err != nil {
			return err
		}
		if c.Reason == vsstatus.ReasonServiceNotSelected {
			return fmt.Errorf("Ready %s/%s: %s", c.Status, c.Reason, c.Message)
		}
		return nil
	})
}
