package vsstatus

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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
		lvsv1.VirtualServicePort{Name: "a", Port: 80, TargetPort: ptr.To(intstr.FromString("http"))},
		lvsv1.VirtualServicePort{Name: "b", Port: 81, TargetPort: ptr.To(intstr.FromInt32(0))},
		lvsv1.VirtualServicePort{Name: "c", Port: 82, TargetPort: ptr.To(intstr.FromString("Bad_Name"))},
		lvsv1.VirtualServicePort{Name: "d", Port: 83, TargetPort: ptr.To(intstr.FromString("8080"))},
		lvsv1.VirtualServicePort{Name: "e", Port: 84, TargetPort: ptr.To(intstr.FromInt32(70000))},
		lvsv1.VirtualServicePort{Name: "f", Port: 85},
	)
	vs.Spec.Backends.ServiceRef = &lvsv1.ServiceReference{Name: "web"}
	got := Validate(&vs)
	want := []string{
		"spec.ports[1].targetPort: Invalid value: 0: must be a port number 1-65535",
		`spec.ports[2].targetPort: Invalid value: "Bad_Name": must be a port name (at most 15 lowercase letters, digits and single dashes, with a letter)`,
		`spec.ports[3].targetPort: Invalid value: "8080": must be a port name (at most 15 lowercase letters, digits and single dashes, with a letter)`,
		"spec.ports[4].targetPort: Invalid value: 70000: must be a port number 1-65535",
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

func TestBoundedMessages(t *testing.T) {
	long := strings.Repeat("x", 40_000)
	if got := Bounded([]string{long}); len(got) > MaxMessage || !strings.HasSuffix(got, "...") {
		t.Fatalf("one long message: %d bytes, ends %q", len(got), got[len(got)-10:])
	}
	var many []string
	for i := range 500 {
		many = append(many, fmt.Sprintf("problem number %d of many", i))
	}
	got := Bounded(many)
	if len(got) > MaxMessage || !strings.Contains(got, "more") || !strings.HasPrefix(got, "problem number 0 of many; problem number 1") {
		t.Fatalf("many messages: %d bytes: %q", len(got), got)
	}
	if got := Bounded([]string{"a", "b"}); got != "a; b" {
		t.Fatalf("short: %q", got)
	}
	// A 40 KB targetPort still gets a condition of bounded size.
	vs := vsAt("x", "a", time.Now(), "10.0.0.1", lvsv1.VirtualServicePort{Port: 80, TargetPort: ptr.To(intstr.FromString(long))})
	vs.Spec.Backends.ServiceRef = &lvsv1.ServiceReference{Name: "web"}
	Apply(&vs, Validate(&vs), nil, nil)
	for _, c := range vs.Status.Conditions {
		if len(c.Message) > MaxMessage+len("not programmed: ") {
			t.Fatalf("%s message of %d bytes", c.Type, len(c.Message))
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
	Apply(&vs, nil, nil, nil)
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed); c.Status != metav1.ConditionFalse || c.Reason != ReasonPending {
		t.Fatalf("a node behind: Programmed %s/%s", c.Status, c.Reason)
	}
	if vs.Status.ReadyBackends != "3/3" || vs.Status.Backends.Draining != 1 || vs.Status.Ports != "80/TCP,53/UDP" {
		t.Fatalf("counts: %q %+v %q", vs.Status.ReadyBackends, vs.Status.Backends, vs.Status.Ports)
	}
	vs.Status.Nodes[1].ObservedGeneration = 4
	Apply(&vs, nil, nil, nil)
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionProgrammed) || !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionReady) {
		t.Fatalf("all nodes current: %+v", vs.Status.Conditions)
	}
	if became := Apply(&vs, nil, nil, []Conflict{{Key: vs.ServiceKeys()[0], Winner: types.NamespacedName{Namespace: "y", Name: "old"}}}); !became {
		t.Fatal("Conflicted must report that it turned True")
	}
	if became := Apply(&vs, nil, nil, []Conflict{{Key: vs.ServiceKeys()[0], Winner: types.NamespacedName{Namespace: "y", Name: "old"}}}); became {
		t.Fatal("Conflicted stayed True: no new transition")
	}
	if meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionAccepted) || vs.Status.Backends != nil {
		t.Fatalf("a conflicted VirtualService is not accepted and has no counts: %+v", vs.Status)
	}
}

// The controller lists NodeReports in no fixed order: the same results in
// another order are the same status (no write).
func TestApplyNodesIgnoresTheirOrder(t *testing.T) {
	failing := []lvsv1.NodeStatus{
		{Node: "n3", ObservedGeneration: 1},
		{Node: "n1", ObservedGeneration: 1},
		{Node: "n4", ObservedGeneration: 2, Message: "no route"},
		{Node: "n2", ObservedGeneration: 2, Programmed: true},
		{Node: "n5", ObservedGeneration: 2, Message: "no memory"},
	}
	behind := slices.Clone(failing)
	behind[2].Message, behind[4].Message = "", ""
	programmed := func(nodes []lvsv1.NodeStatus) metav1.Condition {
		vs := vsAt("x", "a", time.Unix(0, 0), "10.0.0.1", port(80, "TCP"))
		vs.Generation = 2
		ApplyNodes(&vs, nil, nil, nil, nodes)
		c := *meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
		c.LastTransitionTime = metav1.Time{}
		return c
	}
	for _, tc := range []struct {
		nodes []lvsv1.NodeStatus
		want  string
	}{
		{failing, "n4: no route; n5: no memory"},
		{behind, "4 of 5 nodes have not programmed generation 2 yet: n1, n3, n4, n5"},
	} {
		want := programmed(tc.nodes)
		if want.Message != tc.want {
			t.Fatalf("message %q, want %q", want.Message, tc.want)
		}
		for i := range 10 {
			nodes := slices.Clone(tc.nodes)
			for j := range nodes {
				k := (j*7 + i*3) % len(nodes)
				nodes[j], nodes[k] = nodes[k], nodes[j]
			}
			if got := programmed(nodes); got != want {
				t.Fatalf("in another order:\n got %+v\nwant %+v", got, want)
			}
		}
	}
}

func TestApplyAddressNotAllowed(t *testing.T) {
	vs := vsAt("x", "a", time.Now(), "10.0.0.1", port(80, "TCP"))
	vs.Status.Nodes = []lvsv1.NodeStatus{{Node: "n1", ObservedGeneration: vs.Generation, Programmed: true, Backends: lvsv1.BackendCounts{Total: 1, Ready: 1}}}
	// Even with a conflict and a node that had programmed it: not allowed
	// comes first, and it conflicts with nobody.
	Apply(&vs, nil, []string{"address 10.0.0.1: no AddressPool holds it"},
		[]Conflict{{Key: vs.ServiceKeys()[0], Winner: types.NamespacedName{Namespace: "y", Name: "old"}}})
	for _, ct := range []string{lvsv1.ConditionAccepted, lvsv1.ConditionProgrammed, lvsv1.ConditionReady} {
		c := meta.FindStatusCondition(vs.Status.Conditions, ct)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonAddressNotAllowed || !strings.Contains(c.Message, "no AddressPool holds it") {
			t.Fatalf("%s: %+v", ct, c)
		}
	}
	if meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionConflicted) || vs.Status.Backends != nil {
		t.Fatalf("not allowed: no conflict, no counts: %+v", vs.Status)
	}
	// Invalid wins over not allowed: fix the spec first.
	Apply(&vs, []string{"spec.ports[0]: bad"}, []string{"address 10.0.0.1: no AddressPool holds it"}, nil)
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted); c.Reason != ReasonInvalid {
		t.Fatalf("invalid and not allowed: %s", c.Reason)
	}
	Apply(&vs, nil, nil, nil)
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionAccepted) {
		t.Fatal("allowed again: Accepted")
	}
}

// A VirtualService that asks for automatic addresses is Accepted only once
// it has them: Unknown while the allocator has not answered, False with the
// allocator's reason when it found none.
func TestApplyWaitsForAllocation(t *testing.T) {
	vs := vsAt("x", "a", time.Now(), "10.0.0.1", port(80, "TCP"))
	vs.Spec.Addresses, vs.Spec.AddressFamilies = nil, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}
	vs.Spec.Backends.ServiceRef = &lvsv1.ServiceReference{Name: "web"}
	Apply(&vs, Validate(&vs), nil, nil)
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted); c.Status != metav1.ConditionUnknown || c.Reason != ReasonPending {
		t.Fatalf("before allocation: Accepted %s/%s", c.Status, c.Reason)
	}
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{Type: lvsv1.ConditionAddressesAllocated,
		Status: metav1.ConditionFalse, Reason: ReasonNoAddressAvailable, Message: "pool full"})
	Apply(&vs, Validate(&vs), nil, nil)
	for _, typ := range []string{lvsv1.ConditionAccepted, lvsv1.ConditionProgrammed, lvsv1.ConditionReady} {
		if c := meta.FindStatusCondition(vs.Status.Conditions, typ); c.Status != metav1.ConditionFalse || c.Reason != ReasonNoAddressAvailable {
			t.Fatalf("none available: %s %s/%s", typ, c.Status, c.Reason)
		}
	}
	vs.Status.Addresses = []lvsv1.IPAddress{"10.0.0.7"}
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{Type: lvsv1.ConditionAddressesAllocated,
		Status: metav1.ConditionTrue, Reason: ReasonAllocated, Message: "allocated 10.0.0.7"})
	Apply(&vs, Validate(&vs), nil, nil)
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionAccepted) {
		t.Fatalf("allocated: %+v", vs.Status.Conditions)
	}
	if keys := vs.ServiceKeys(); len(keys) != 1 || keys[0].String() != "10.0.0.7:80/TCP" {
		t.Fatalf("the allocated address is what it claims: %v", keys)
	}
}

func TestAdmittedLeavesOutRefusedRivals(t *testing.T) {
	now := time.Now()
	rivals := []lvsv1.VirtualService{
		vsAt("a", "one", now, "10.0.0.1", port(80, "TCP")),
		vsAt("b", "two", now, "10.0.0.1", port(80, "TCP")),
		vsAt("c", "three", now, "10.0.0.1", port(80, "TCP")),
	}
	got, err := Admitted(rivals, func(v *lvsv1.VirtualService) ([]string, error) {
		if v.Namespace == "b" {
			return []string{"address 10.0.0.1: no AddressPool holds it"}, nil
		}
		return nil, nil
	})
	if err != nil || len(got) != 2 || got[0].Namespace != "a" || got[1].Namespace != "c" {
		t.Fatalf("Admitted = %v, %v: want a and c", got, err)
	}
	if _, err := Admitted(rivals, func(*lvsv1.VirtualService) ([]string, error) {
		return nil, errors.New("get namespace a: forbidden")
	}); err == nil {
		t.Fatal("an unreadable namespace must be an error, not an admission")
	}
}

// NotSelected turns Ready False on an accepted VirtualService, and leaves
// a refused one's reasons alone.
func TestNotSelected(t *testing.T) {
	vs := vsAt("x", "a", time.Now(), "10.0.0.1", port(80, "TCP"))
	ApplyNodes(&vs, nil, nil, nil, []lvsv1.NodeStatus{{Node: "n1", ObservedGeneration: 1, Programmed: true}})
	if !NotSelected(&vs, "Service x/web is not selected") {
		t.Fatal("an accepted VirtualService was not flagged")
	}
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionReady)
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonServiceNotSelected || c.Message != "Service x/web is not selected" {
		t.Errorf("Ready %+v", c)
	}
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionProgrammed) {
		t.Error("Programmed changed")
	}

	bad := vsAt("x", "b", time.Now(), "10.0.0.1")
	ApplyNodes(&bad, []string{"spec.ports: none"}, nil, nil, nil)
	if NotSelected(&bad, "not selected") {
		t.Error("a refused VirtualService was flagged")
	}
	if c := meta.FindStatusCondition(bad.Status.Conditions, lvsv1.ConditionReady); c.Reason != ReasonInvalid {
		t.Errorf("Ready %+v, want the reason it was refused for", c)
	}
}
