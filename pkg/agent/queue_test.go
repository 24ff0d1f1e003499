package agent

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// A change to a VirtualService the kernel has goes ahead of a burst of
// creates and of the agent's own requeue of everything; among equals the
// queue stays first in, first out; a retry keeps its backoff.
func TestChangesGoAheadOfCreates(t *testing.T) {
	a := &Agent{lat: newEventLatency(nil, clock.RealClock{}), queue: newQueue()}
	defer a.queue.ShutDown()
	key := func(i int) types.NamespacedName {
		return types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("vs-%d", i)}
	}
	// vs-0 and vs-1 are programmed; vs-2.. are being created.
	a.programmed.Store(key(0), struct{}{})
	a.programmed.Store(key(1), struct{}{})
	a.queue.Add(key(1)) // the agent's own work on a programmed one: not urgent
	for i := 2; i < 1002; i++ {
		a.event(key(i))
	}
	a.event(key(0))
	a.event(key(1)) // now an event: urgent, behind vs-0

	want := []types.NamespacedName{key(0), key(1), key(2), key(3)}
	for _, w := range want {
		got, prio, shut := a.queue.GetWithPriority()
		if shut {
			t.Fatal("queue shut down")
		}
		if got != w {
			t.Fatalf("got %s (priority %d), want %s", got, prio, w)
		}
		if wantPrio := map[bool]int{true: urgent, false: 0}[w == key(0) || w == key(1)]; prio != wantPrio {
			t.Errorf("%s came with priority %d, want %d", got, prio, wantPrio)
		}
		a.queue.Done(got)
	}
	if n := a.queue.Len(); n != 998 {
		t.Errorf("%d left in the queue, want 998", n)
	}

	// Removed from the kernel: its next event is a create again.
	a.programmed.Delete(key(0))
	a.event(key(0))
	a.event(key(5000))
	a.programmed.Store(key(5000), struct{}{})
	a.event(key(5000))
	if got, _, _ := a.queue.GetWithPriority(); got != key(5000) {
		t.Fatalf("got %s first, want vs-5000 (programmed, urgent)", got)
	}
}
