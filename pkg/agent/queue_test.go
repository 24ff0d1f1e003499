package agent

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// An event of a VirtualService the kernel has goes to the changes lane,
// one of a VirtualService new to it (a create) and the agent's own work to
// the other; the creates let one sync at a time into the syncer, the
// changes are not held by them.
func TestChangesHaveTheirOwnLane(t *testing.T) {
	a := &Agent{lat: newEventLatency(nil, clock.RealClock{}), queue: newLane("q"), changes: newLane("c"),
		creating: make(chan struct{}, 1)}
	defer a.queue.ShutDown()
	defer a.changes.ShutDown()
	key := func(i int) types.NamespacedName {
		return types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("vs-%d", i)}
	}
	a.programmed.Store(key(0), struct{}{})
	for i := 1; i <= 1000; i++ {
		a.event(key(i))
	}
	a.event(key(0))
	if a.queue.Len() != 1000 || a.changes.Len() != 1 {
		t.Fatalf("creates lane %d, changes lane %d; want 1000 and 1", a.queue.Len(), a.changes.Len())
	}
	if got, _ := a.changes.Get(); got != key(0) {
		t.Fatalf("changes lane gave %s", got)
	}
	a.changes.Done(key(0))

	// A create inside the syncer holds the create lane's admission: a
	// second create waits, a change does not.
	out := a.admit(key(1), false)
	second := make(chan struct{})
	go func() { a.admit(key(2), false)(); close(second) }()
	select {
	case <-a.admitted(key(3), true):
	case <-time.After(10 * time.Second):
		t.Fatal("a change waited for a create's admission")
	}
	// The agent's own work on a VirtualService the kernel has (a requeue,
	// a drain pass) holds its key lock: it does not wait for the creates
	// either, or the VirtualService's changes would wait behind them.
	select {
	case <-a.admitted(key(0), false):
	case <-time.After(10 * time.Second):
		t.Fatal("a requeue of a programmed VirtualService waited for a create's admission")
	}
	select {
	case <-second:
		t.Fatal("two creates admitted at once")
	case <-time.After(50 * time.Millisecond):
	}
	out()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("the second create was never admitted")
	}

	// The same VirtualService is never synced from both lanes at once.
	unlock := a.lockKey(key(7))
	locked := make(chan struct{})
	go func() { a.lockKey(key(7))(); close(locked) }()
	select {
	case <-locked:
		t.Fatal("vs-7 locked twice")
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	<-locked
}

// admitted admits a sync and lets it out at once, closing the channel
// when it was admitted.
func (a *Agent) admitted(key types.NamespacedName, change bool) <-chan struct{} {
	done := make(chan struct{})
	go func() { a.admit(key, change)(); close(done) }()
	return done
}
