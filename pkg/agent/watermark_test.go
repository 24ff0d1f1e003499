package agent

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestWatermark(t *testing.T) {
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	w := newWatermark()
	if w.value() != 0 {
		t.Fatalf("empty: %d", w.value())
	}
	w.saw(a, "10")
	w.saw(b, "12")
	if got := w.value(); got != 9 {
		t.Fatalf("two pending: %d, want 9 (below a's event)", got)
	}
	ta := w.start(a)
	w.handled(a, ta)
	if got := w.value(); got != 11 {
		t.Fatalf("a handled: %d, want 11 (below b's event)", got)
	}
	// b changes again while its sync runs: the newer event stays pending.
	tb := w.start(b)
	w.saw(b, "15")
	w.handled(b, tb)
	if got := w.value(); got != 12 {
		t.Fatalf("b's second event unhandled: %d, want 12", got)
	}
	tb = w.start(b)
	w.handled(b, tb)
	if got := w.value(); got != 15 {
		t.Fatalf("all handled: %d, want 15", got)
	}
	// A resourceVersion that is not a number is not counted.
	w.saw(a, "x")
	if got := w.value(); got != 15 {
		t.Fatalf("after a non-numeric resourceVersion: %d", got)
	}
	// Handling a key with nothing pending changes nothing.
	w.handled(a, 0)
	if got := w.value(); got != 15 {
		t.Fatalf("%d", got)
	}
}
