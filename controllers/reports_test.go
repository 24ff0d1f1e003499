package controllers

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// The resourceVersion a generation is first seen at is what the nodes'
// watermarks must pass; a generation the status already says is
// programmed (seen by an earlier controller) asks nothing of them.
func TestGenerationsRecordWhereTheyWereFirstSeen(t *testing.T) {
	var g generations
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 2, ResourceVersion: "40"}}
	if rv, ok := g.rvOf(vs); !ok || rv != 40 {
		t.Fatalf("new generation: %d %v, want 40", rv, ok)
	}
	vs.ResourceVersion = "45" // a status write: the same generation
	if rv, _ := g.rvOf(vs); rv != 40 {
		t.Fatalf("same generation later: %d, want 40", rv)
	}
	vs.Generation, vs.ResourceVersion = 3, "50"
	if rv, _ := g.rvOf(vs); rv != 50 {
		t.Fatalf("next generation: %d, want 50", rv)
	}

	// A restarted controller (a new record) sees generation 3 already
	// Programmed: 0. Programmed at an older generation does not count.
	var restarted generations
	vs.ResourceVersion = "60"
	vs.Status.Conditions = []metav1.Condition{{Type: lvsv1.ConditionProgrammed, Status: metav1.ConditionTrue, ObservedGeneration: 3, Reason: "Programmed"}}
	if rv, _ := restarted.rvOf(vs); rv != 0 {
		t.Fatalf("programmed before the restart: %d, want 0", rv)
	}
	var other generations
	vs.Status.Conditions[0].ObservedGeneration = 2
	if rv, _ := other.rvOf(vs); rv != 60 {
		t.Fatalf("programmed at an older generation: %d, want 60", rv)
	}
	vs.Status.Conditions[0].ObservedGeneration, vs.Status.Conditions[0].Status = 3, metav1.ConditionFalse
	var pending generations
	if rv, _ := pending.rvOf(vs); rv != 60 {
		t.Fatalf("pending before the restart: %d, want 60", rv)
	}
}

// A NodeReport's change queues the VirtualServices still waiting for nodes
// and those it lists as failed, and no other (the list is taken through
// the waiting index, not of every VirtualService).
func TestReportEventQueuesOnlyTheWaiting(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := lvsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	vs := func(name string, programmed bool) *lvsv1.VirtualService {
		v := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 1}}
		st := metav1.ConditionFalse
		if programmed {
			st = metav1.ConditionTrue
		}
		v.Status.Conditions = []metav1.Condition{{Type: lvsv1.ConditionProgrammed, Status: st, ObservedGeneration: 1, Reason: "X"}}
		return v
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithIndex(&lvsv1.VirtualService{}, waitingIndex, indexWaiting).
		WithObjects(vs("done", true), vs("pending", false), vs("failed-here", true), vs("other", true)).Build()
	r := &VirtualServiceReconciler{Client: c}
	rep := &lvsv1.NodeReport{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	rep.Status.Failed = []lvsv1.NodeReportFailure{{Namespace: "shop", Name: "failed-here", Generation: 1, Message: "boom"}}
	var got []string
	for _, req := range r.waiting(context.Background(), rep) {
		got = append(got, req.Name)
	}
	slices.Sort(got)
	if want := []string{"failed-here", "pending"}; !slices.Equal(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}
