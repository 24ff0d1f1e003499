package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
