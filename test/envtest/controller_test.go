package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func condition(t *testing.T, key client.ObjectKey, typ string) (*metav1.Condition, *lvsv1.VirtualService, error) {
	t.Helper()
	var vs lvsv1.VirtualService
	if err := k8s.Get(context.Background(), key, &vs); err != nil {
		return nil, nil, err
	}
	c := meta.FindStatusCondition(vs.Status.Conditions, typ)
	if c == nil {
		return nil, &vs, fmt.Errorf("no %s condition yet", typ)
	}
	return c, &vs, nil
}

func waitCondition(t *testing.T, key client.ObjectKey, typ string, status metav1.ConditionStatus, reason string) *lvsv1.VirtualService {
	t.Helper()
	var got *lvsv1.VirtualService
	eventually(t, 20*time.Second, fmt.Sprintf("%s %s=%s/%s", key, typ, status, reason), func() error {
		c, vs, err := condition(t, key, typ)
		if err != nil {
			return err
		}
		if c.Status != status || c.Reason != reason || c.ObservedGeneration != vs.Generation || vs.Status.ObservedGeneration != vs.Generation {
			return fmt.Errorf("have %s=%s/%s (generation %d, condition observed %d, status observed %d): %s",
				typ, c.Status, c.Reason, vs.Generation, c.ObservedGeneration, vs.Status.ObservedGeneration, c.Message)
		}
		got = vs
		return nil
	})
	return got
}

func waitEvent(t *testing.T, ns, name, reason string) *eventsv1.Event {
	t.Helper()
	var got *eventsv1.Event
	eventually(t, 20*time.Second, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func() error {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for i := range list.Items {
			e := &list.Items[i]
			if e.Regarding.Name == name && e.Reason == reason {
				got = e
				return nil
			}
		}
		return fmt.Errorf("%d events, none matches", len(list.Items))
	})
	return got
}

// nextSecond sleeps until the wall clock enters a new second, so that two
// objects created on either side get different creationTimestamps (which
// have a resolution of one second).
func nextSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond).Sub(now))
}

func TestControllerAcceptsAndDetectsConflicts(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl")

	// "zz-older" sorts after "aa-newer", so only creation time makes it win.
	older := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "zz-older", Namespace: ns}, Spec: validSpec()}
	if err := k8s.Create(ctx, older, client.FieldOwner("test")); err != nil {
		t.Fatal(err)
	}
	vs := waitCondition(t, client.ObjectKeyFromObject(older), lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	waitCondition(t, client.ObjectKeyFromObject(older), lvsv1.ConditionConflicted, metav1.ConditionFalse, "NoConflict")
	waitCondition(t, client.ObjectKeyFromObject(older), lvsv1.ConditionProgrammed, metav1.ConditionUnknown, "Pending")
	if vs.Status.ObservedGeneration != 1 {
		t.Fatalf("observedGeneration %d, want 1", vs.Status.ObservedGeneration)
	}

	// A spec change bumps the generation; the controller follows.
	// The controller writes status meanwhile: retry on conflicts.
	eventually(t, 10*time.Second, "update the scheduler", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(older), vs); err != nil {
			return err
		}
		vs.Spec.Scheduler = lvsv1.SchedulerWeightedRoundRobin
		return k8s.Update(ctx, vs)
	})
	vs = waitCondition(t, client.ObjectKeyFromObject(older), lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	if vs.Generation != 2 || vs.Status.ObservedGeneration != 2 {
		t.Fatalf("generation %d observed %d, want 2 and 2", vs.Generation, vs.Status.ObservedGeneration)
	}

	// A newer VirtualService in another namespace claims 10.96.0.10:80/TCP too.
	nextSecond()
	ns2 := namespace(t, "ctrl-rival")
	newerSpec := validSpec()
	newerSpec.Ports = append(newerSpec.Ports, lvsv1.VirtualServicePort{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP})
	newer := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "aa-newer", Namespace: ns2}, Spec: newerSpec}
	if err := k8s.Create(ctx, newer); err != nil {
		t.Fatal(err)
	}
	nv := waitCondition(t, client.ObjectKeyFromObject(newer), lvsv1.ConditionConflicted, metav1.ConditionTrue, "Conflicted")
	c := meta.FindStatusCondition(nv.Status.Conditions, lvsv1.ConditionConflicted)
	want := fmt.Sprintf("10.96.0.10:80/TCP is claimed by the older VirtualService %s/zz-older", ns)
	if c.Message != want {
		t.Fatalf("Conflicted message %q, want %q", c.Message, want)
	}
	waitCondition(t, client.ObjectKeyFromObject(newer), lvsv1.ConditionAccepted, metav1.ConditionFalse, "Conflicted")
	ev := waitEvent(t, ns2, "aa-newer", "Conflicted")
	if ev.Type != "Warning" {
		t.Fatalf("event type %q, want Warning", ev.Type)
	}
	t.Logf("event: %s %s: %s", ev.Type, ev.Reason, ev.Note)
	// The winner is untouched.
	waitCondition(t, client.ObjectKeyFromObject(older), lvsv1.ConditionConflicted, metav1.ConditionFalse, "NoConflict")

	// When the winner goes away, the loser is accepted.
	if err := k8s.Delete(ctx, older); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, client.ObjectKeyFromObject(newer), lvsv1.ConditionConflicted, metav1.ConditionFalse, "NoConflict")
	waitCondition(t, client.ObjectKeyFromObject(newer), lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
}

func TestControllerRejectsWhatTheCRDCannot(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-invalid")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.11"}
	spec.Backends.Static = nil
	spec.Ports[0].TargetPort = ptr.To(intstr.FromString("Bad_Name"))
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "bad-target", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	got := waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionAccepted, metav1.ConditionFalse, "Invalid")
	want := `spec.ports[0].targetPort: Invalid value: "Bad_Name": must be a port name (at most 15 lowercase letters, digits and single dashes, with a letter)`
	if c := meta.FindStatusCondition(got.Status.Conditions, lvsv1.ConditionAccepted); c.Message != want {
		t.Fatalf("message %q", c.Message)
	}
	waitEvent(t, ns, "bad-target", "Invalid")
}

// Every VirtualService the API server stores but validation refuses gets
// Accepted=False naming its field.
func TestControllerRefusesWhatTheAPIStores(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-stored")
	_, stored := corpus.VirtualServices()
	for i, tc := range stored {
		spec := validSpec()
		tc.Mutate(&spec)
		// Each its own VIP, so that none is Conflicted with another.
		own := lvsv1.IPAddress(fmt.Sprintf("10.96.1.%d", 10+i))
		if len(spec.Addresses) > 0 { // with addressFamilies, the suite pool gives it a free address
			if spec.Backends.Static[0].Address == spec.Addresses[0] {
				spec.Backends.Static[0].Address = own
			}
			spec.Addresses[0] = own
		}
		vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("stored-%d", i), Namespace: ns}, Spec: spec}
		if err := k8s.Create(ctx, vs); err != nil {
			t.Fatalf("%s: %v", tc.Name, err)
		}
		got := waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionAccepted, metav1.ConditionFalse, "Invalid")
		if c := meta.FindStatusCondition(got.Status.Conditions, lvsv1.ConditionAccepted); !strings.Contains(c.Message, tc.Field) {
			t.Errorf("%s: message %q does not name %s", tc.Name, c.Message, tc.Field)
		}
	}
}

func TestControllerFoldsNodeReports(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-nodes")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.12"}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	report := func(node string, gen int64, ready int32, msg string) {
		t.Helper()
		eventually(t, 10*time.Second, "write node report", func() error {
			var cur lvsv1.VirtualService
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
				return err
			}
			orig := cur.DeepCopy()
			ns := lvsv1.NodeStatus{Node: node, ObservedGeneration: gen, Programmed: msg == "", Message: msg,
				Backends: lvsv1.BackendCounts{Total: 3, Ready: ready}}
			found := false
			for i := range cur.Status.Nodes {
				if cur.Status.Nodes[i].Node == node {
					cur.Status.Nodes[i], found = ns, true
				}
			}
			if !found {
				cur.Status.Nodes = append(cur.Status.Nodes, ns)
			}
			return k8s.Status().Patch(ctx, &cur, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		})
	}
	for _, n := range []string{"node-a", "node-b"} {
		node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	// A report from a node that does not exist (any more) is dropped.
	report("node-gone", 1, 0, "kernel on fire")
	eventually(t, 10*time.Second, "report of a missing node pruned", func() error {
		var cur lvsv1.VirtualService
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
			return err
		}
		if len(cur.Status.Nodes) != 0 {
			return fmt.Errorf("nodes %+v", cur.Status.Nodes)
		}
		return nil
	})
	report("node-a", 1, 2, "")
	got := waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionReady, metav1.ConditionTrue, "BackendsReady")
	eventually(t, 10*time.Second, "readyBackends 2/3", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(vs), got); err != nil {
			return err
		}
		if got.Status.ReadyBackends != "2/3" {
			return fmt.Errorf("readyBackends %q", got.Status.ReadyBackends)
		}
		return nil
	})
	report("node-b", 1, 0, "add real server 192.0.2.10:8080: file exists")
	waitCondition(t, client.ObjectKeyFromObject(vs), lvsv1.ConditionProgrammed, metav1.ConditionFalse, "ProgrammingFailed")
	ev := waitEvent(t, ns, "web", "ProgrammingFailed")
	if !strings.Contains(ev.Note, "node-b: add real server 192.0.2.10:8080: file exists") {
		t.Fatalf("event note %q", ev.Note)
	}
}
