package agent

import (
	"hash/fnv"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

// The agent's work goes through two lanes, so that a single change never
// waits behind a burst of creates, the first sync, or the requeue of every
// VirtualService:
//
//   - changes: watch events (and health changes) of a VirtualService the
//     kernel already has; changeWorkers workers, which are never taken by
//     creates.
//   - queue: VirtualServices new to the kernel and the agent's own work
//     (full syncs' requeues, drains, announcements, retries); Workers
//     workers, of which one create at a time is admitted into the syncer
//     (creating), where each create costs O(VirtualServices) and holds the
//     syncer's lock: a change waits for at most one of them. The agent's
//     own work on a VirtualService the kernel has is admitted at once, as
//     a change is (admit).
//
// A VirtualService may be in both lanes; its key lock keeps two workers
// from syncing it at once (the later sync reads the newer state).

// changeWorkers is how many workers the changes lane has: the kernel
// writes are serialized by the syncer; two overlap one change's status
// write (with --node-reports=false) with the next change.
const changeWorkers = 2

// newLane is one lane: de-duplicating, one worker per key at a time,
// rate-limited retries like any controller's.
func newLane(name string) workqueue.TypedRateLimitingInterface[types.NamespacedName] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: name})
}

// isProgrammed reports whether the syncer has a group for key.
func (a *Agent) isProgrammed(key types.NamespacedName) bool {
	_, ok := a.programmed.Load(key)
	return ok
}

// event queues a VirtualService because of a watch event (or a health
// change), starting its event-to-kernel clock: in the changes lane if the
// kernel has it already. Work the agent makes for itself (full syncs,
// drains, retries) uses the queue lane directly.
func (a *Agent) event(key types.NamespacedName) {
	a.eventIn(key, a.isProgrammed(key))
}

// eventIn is event in a given lane (changes: true).
func (a *Agent) eventIn(key types.NamespacedName, change bool) {
	a.lat.seen(key, !a.isProgrammed(key))
	if change {
		a.changes.Add(key)
		return
	}
	a.queue.Add(key)
}

// lockKey locks key against a sync from the other lane; the returned
// function unlocks it.
func (a *Agent) lockKey(key types.NamespacedName) func() {
	h := fnv.New32a()
	h.Write([]byte(key.Namespace))
	h.Write([]byte{0})
	h.Write([]byte(key.Name))
	m := &a.keyLocks[h.Sum32()%uint32(len(a.keyLocks))]
	m.Lock()
	return m.Unlock
}

// admit lets a sync of key into the syncer: creates (of VirtualServices
// the kernel does not have, from the queue lane) one at a time, anything
// else at once: a change, and the agent's own work on a VirtualService the
// kernel has (a requeue, a drain pass, a retry). That work holds the
// VirtualService's key lock; waiting for admission behind a burst of
// creates, it held the VirtualService's changes too (make bench at 10,000
// VirtualServices: a change waited 3.4 s for its key). The returned
// function lets it out.
func (a *Agent) admit(key types.NamespacedName, change bool) func() {
	if change || a.creating == nil || a.isProgrammed(key) {
		return func() {}
	}
	a.creating <- struct{}{}
	return func() { <-a.creating }
}
