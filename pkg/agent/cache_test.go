package agent

import (
	"slices"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

func TestTransformVirtualServiceKeepsSpecAndOwnEntry(t *testing.T) {
	vs := &lvsv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Generation: 3,
			Labels:        map[string]string{"app": "web"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: lvsv1.VirtualServiceSpec{Addresses: []lvsv1.IPAddress{"10.0.0.1"}, Scheduler: lvsv1.SchedulerRoundRobin},
		Status: lvsv1.VirtualServiceStatus{
			Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}},
			Ports:      "80/TCP",
			Addresses:  []lvsv1.IPAddress{"10.0.0.2"},
			Nodes: []lvsv1.NodeStatus{
				{Node: "a", Programmed: true},
				{Node: "b", Programmed: true, ObservedGeneration: 3, Message: "mine"},
				{Node: "c"},
			},
		},
	}
	out, err := TransformVirtualService("b")(vs)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*lvsv1.VirtualService)
	if got.Name != "web" || got.Namespace != "ns" || got.Generation != 3 || got.Labels["app"] != "web" ||
		len(got.Spec.Addresses) != 1 || got.Spec.Scheduler != lvsv1.SchedulerRoundRobin {
		t.Errorf("identity or spec changed: %+v", got)
	}
	if got.ManagedFields != nil || got.Annotations != nil || got.Status.Conditions != nil || got.Status.Ports != "" {
		t.Errorf("kept what the agent never reads: managedFields %v, annotations %v, status %+v", got.ManagedFields, got.Annotations, got.Status)
	}
	if len(got.Status.Nodes) != 1 || got.Status.Nodes[0].Node != "b" || got.Status.Nodes[0].Message != "mine" {
		t.Errorf("status.nodes = %+v, want only node b's entry", got.Status.Nodes)
	}
	if len(got.Status.Addresses) != 1 || got.Status.Addresses[0] != "10.0.0.2" {
		t.Errorf("status.addresses = %q: the allocated addresses are VIPs, keep them", got.Status.Addresses)
	}

	// A node without an entry keeps none; other types pass through.
	out, _ = TransformVirtualService("z")(&lvsv1.VirtualService{Status: lvsv1.VirtualServiceStatus{Nodes: []lvsv1.NodeStatus{{Node: "a"}}}})
	if n := out.(*lvsv1.VirtualService).Status.Nodes; len(n) != 0 {
		t.Errorf("node z keeps %+v", n)
	}
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s"}}
	if out, _ := TransformVirtualService("b")(s); out != s {
		t.Errorf("an EndpointSlice went through the VirtualService transform changed")
	}
}

func TestTransformEndpointSlice(t *testing.T) {
	ready := true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
			Annotations:   map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-25T00:00:00Z"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "endpointslice-controller"}}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName: ptr.To("n1"), Zone: ptr.To("z"), Hostname: ptr.To("h"), Hints: &discoveryv1.EndpointHints{},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-0"}, DeprecatedTopology: map[string]string{"a": "b"}}},
	}
	out, err := TransformEndpointSlice(s)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*discoveryv1.EndpointSlice)
	if got.ManagedFields != nil || got.Annotations != nil {
		t.Errorf("managed fields or annotations kept")
	}
	e := got.Endpoints[0]
	if got.Labels[discoveryv1.LabelServiceName] != "web" || e.Addresses[0] != "10.1.0.1" || !*e.Conditions.Ready || *e.NodeName != "n1" {
		t.Errorf("labels, addresses, conditions or node changed: %+v", got)
	}
	if e.TargetRef != nil || e.Zone != nil || e.Hostname != nil || e.Hints != nil || e.DeprecatedTopology != nil {
		t.Errorf("endpoint kept what the agent never reads: %+v", e)
	}
}

func TestTransformEndpointSliceShares(t *testing.T) {
	t1, f1, t2 := true, false, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", GenerateName: "web-",
			OwnerReferences: []metav1.OwnerReference{{Kind: "Service", Name: "web"}}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &t1, Terminating: &f1}, NodeName: ptr.To("n1")},
			{Addresses: []string{"10.1.0.2", "fd00::2"}, Conditions: discoveryv1.EndpointConditions{Ready: &t2}, NodeName: ptr.To("n1")},
			{Addresses: []string{"10.1.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: &f1}, NodeName: ptr.To("n2")},
		},
	}
	out, _ := TransformEndpointSlice(s)
	got := out.(*discoveryv1.EndpointSlice)
	if got.OwnerReferences != nil || got.GenerateName != "" {
		t.Errorf("owner references or generated name kept: %+v", got.ObjectMeta)
	}
	e := got.Endpoints
	if e[0].NodeName != e[1].NodeName || *e[0].NodeName != "n1" || *e[2].NodeName != "n2" {
		t.Errorf("node names: %v %v %v", *e[0].NodeName, *e[1].NodeName, *e[2].NodeName)
	}
	if e[0].Conditions.Ready != e[1].Conditions.Ready || !*e[0].Conditions.Ready || *e[2].Conditions.Ready ||
		*e[0].Conditions.Terminating || e[1].Conditions.Terminating != nil || e[0].Conditions.Serving != nil {
		t.Errorf("conditions changed: %+v", e)
	}
	want := [][]string{{"10.1.0.1"}, {"10.1.0.2", "fd00::2"}, {"10.1.0.3"}}
	for i := range e {
		if !slices.Equal(e[i].Addresses, want[i]) || cap(e[i].Addresses) != len(want[i]) {
			t.Errorf("endpoint %d addresses %v (cap %d), want %v", i, e[i].Addresses, cap(e[i].Addresses), want[i])
		}
	}
	// The addresses sit in one array, in endpoint order.
	step := unsafe.Sizeof("")
	if p0, p1, p2 := uintptr(unsafe.Pointer(&e[0].Addresses[0])), uintptr(unsafe.Pointer(&e[1].Addresses[0])), uintptr(unsafe.Pointer(&e[2].Addresses[0])); p1-p0 != step || p2-p1 != 2*step {
		t.Errorf("addresses are not packed in one array")
	}
}
