package vsstatus

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

func vsAt(ns, name string, created time.Time, addr string, ports ...lvsv1.VirtualServicePort) lvsv1.VirtualService {
	return lvsv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), CreationTimestamp: metav1.NewTime(created), Generation: 1},
		Spec:       lvsv1.VirtualServiceSpec{Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(addr)}, Ports: ports},
	}
}

func port(p int32, proto lvsv1.Protocol) lvsv1.VirtualServicePort {
	return lvsv1.VirtualServicePort{Port: p, Protocol: proto}
}

func TestConflictsOlderWinsThenName(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := vsAt("x", "b", t0, "10.0.0.1", port(80, "TCP"), port(53, "UDP"))
	b := vsAt("x", "a", t0.Add(time.Second), "10.0.0.1", port(80, "TCP"))
	c := vsAt("x", "c", t0, "10.0.0.1", port(53, "UDP")) // same age as a, sorts after it
	d := vsAt("y", "d", t0, "10.0.0.1", port(53, "TCP")) // other protocol: no conflict
	all := []lvsv1.VirtualService{a, b, c, d}

	if got := Conflicts(&a, all); len(got) != 0 {
		t.Fatalf("the oldest loses nothing, got %v", got)
	}
	got := Conflicts(&b, all)
	if len(got) != 1 || got[0].Key.String() != "10.0.0.1:80/TCP" || got[0].Winner.Name != "b" {
		t.Fatalf("b: %v", got)
	}
	got = Conflicts(&c, all)
	if len(got) != 1 || got[0].Key.String() != "10.0.0.1:53/UDP" || got[0].Winner.Name != "b" {
		t.Fatalf("c (tie on age, loses on name): %v", got)
	}
	if got := Conflicts(&d, all); len(got) != 0 {
		t.Fatalf("d: %v", got)
	}
}

func TestValidateTargetPorts(t *testing.T) {
	vs := vsAt("x", "a", time.Now(), "10.0.0.1",
		lvsv1.VirtualServicePort{Port: 80, TargetPort: ptr.To(intstr.FromString("http"))},
		lvsv1.VirtualServicePort{Port: 81, TargetPort: ptr.To(intstr.FromInt32(0))},
		lvsv1.VirtualServicePort{Port: 82, TargetPort: ptr.To(intstr.FromString("Bad_Name"))},
		lvsv1.VirtualServicePort{Port: 83, TargetPort: ptr.To(intstr.FromString("8080"))},
		lvsv1.VirtualServicePort{Port: 84},
	)
	got := Validate(&vs)
	want := []string{
		"spec.ports[1].targetPort: 0 is not a port number 1-65535",
		`spec.ports[2].targetPort: "Bad_Name" is not a port name (at most 15 lowercase letters, digits and single dashes, with a letter)`,
		`spec.ports[3].targetPort: "8080" is not a port name (at most 15 lowercase letters, digits and single dashes, with a letter)`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("problem %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestApplyFoldsNodeReports(t *testing.T) {
	vs := vsAt("x", "a", time.Now(), "10.0.0.1", port(80, "TCP"), port(53, "UDP"))
	vs.Generation = 4
	vs.Status.Nodes = []lvsv1.NodeStatus{
		{Node: "n1", ObservedGeneration: 4, Programmed: true, Backends: lvsv1.BackendCounts{Total: 3, Ready: 2, Draining: 1}},
		{Node: "n2", ObservedGeneration: 3, Programmed: true, Backends: lvsv1.BackendCounts{Total: 3, Ready: 3}},
	}
	Apply(&vs, nil, nil)
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed); c.Status != metav1.ConditionFalse || c.Reason != ReasonPending {
		t.Fatalf("a node behind: Programmed %s/%s", c.Status, c.Reason)
	}
	if vs.Status.ReadyBackends != "3/3" || vs.Status.Backends.Draining != 1 || vs.Status.Ports != "80/TCP,53/UDP" {
		t.Fatalf("counts: %q %+v %q", vs.Status.ReadyBackends, vs.Status.Backends, vs.Status.Ports)
	}
	vs.Status.Nodes[1].ObservedGeneration = 4
	Apply(&vs, nil, nil)
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionProgrammed) || !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionReady) {
		t.Fatalf("all nodes current: %+v", vs.Status.Conditions)
	}
	if became := Apply(&vs, nil, []Conflict{{Key: vs.ServiceKeys()[0], Winner: types.NamespacedName{Namespace: "y", Name: "old"}}}); !became {
		t.Fatal("Conflicted must report that it turned True")
	}
	if became := Apply(&vs, nil, []Conflict{{Key: vs.ServiceKeys()[0], Winner: types.NamespacedName{Namespace: "y", Name: "old"}}}); became {
		t.Fatal("Conflicted stayed True: no new transition")
	}
	if meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionAccepted) || vs.Status.Backends != nil {
		t.Fatalf("a conflicted VirtualService is not accepted and has no counts: %+v", vs.Status)
	}
}
