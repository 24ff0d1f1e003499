package agent

import (
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// watermark is the newest VirtualService resourceVersion up to which this
// agent has handled every event: every VirtualService change with that
// resourceVersion or an older one has been synced (programmed, or found to
// fail, which the agent reports apart). It is the compact form of "what
// this node has programmed" in its per-node report: the controller knows
// at which resourceVersion each VirtualService reached its generation, and
// compares. resourceVersions are compared as the integers etcd makes them
// (the etcd revision of the write; Kubernetes has since made comparing
// them part of the API, KEP-5504).
//
// Events are counted from the handlers: saw when an event is delivered,
// handled when the sync of that VirtualService finished. An event that
// arrives while its VirtualService is being synced stays pending.
type watermark struct {
	mu sync.Mutex
	// seen is the newest resourceVersion of any event.
	seen uint64
	// oldest and newest unhandled event per VirtualService.
	pending map[types.NamespacedName]span
}

type span struct{ oldest, newest uint64 }

func newWatermark() *watermark {
	return &watermark{pending: map[types.NamespacedName]span{}}
}

// parseRV returns a resourceVersion as a number; false for one that is
// not (then it is not counted, and the watermark does not move past it).
func parseRV(rv string) (uint64, bool) {
	n, err := strconv.ParseUint(rv, 10, 64)
	return n, err == nil && n > 0
}

// saw records an event of key at resourceVersion rv.
func (w *watermark) saw(key types.NamespacedName, rv string) {
	n, ok := parseRV(rv)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = max(w.seen, n)
	s, had := w.pending[key]
	if !had {
		w.pending[key] = span{oldest: n, newest: n}
		return
	}
	s.oldest, s.newest = min(s.oldest, n), max(s.newest, n)
	w.pending[key] = s
}

// start returns a token for a sync of key that is about to read it.
func (w *watermark) start(key types.NamespacedName) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending[key].newest
}

// handled records that the sync of key that began with token finished:
// the events it could see are handled; one delivered since stays pending.
func (w *watermark) handled(key types.NamespacedName, token uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, had := w.pending[key]
	switch {
	case !had:
	case s.newest <= token:
		delete(w.pending, key)
	default:
		// A newer event came during the sync: it is not handled, and
		// nothing between token and it was an event of key.
		w.pending[key] = span{oldest: token + 1, newest: s.newest}
	}
}

// value is the watermark: just below the oldest unhandled event, or the
// newest event seen when none is pending.
func (w *watermark) value() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := w.seen
	for _, s := range w.pending {
		v = min(v, s.oldest-1)
	}
	return v
}
