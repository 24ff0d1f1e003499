package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// eventLatency times how long a change takes from the watch event that
// announced it to the kernel's acknowledgement of the resulting sync: the
// network programming latency of this node, as an operator would want to
// alert on it. It is kept per VirtualService: the first event not yet
// programmed starts the clock (later events for the same VirtualService
// ride along, as the workqueue merges them), a successful sync stops it, a
// failed one keeps it running for the retry.
type eventLatency struct {
	hist  prometheus.Histogram
	clock clock.PassiveClock

	mu      sync.Mutex
	pending map[types.NamespacedName]time.Time
}

func newEventLatency(reg prometheus.Registerer, clk clock.PassiveClock) *eventLatency {
	e := &eventLatency{
		clock: clk,
		hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubelvs", Name: "event_to_kernel_seconds",
			Help: "Time from a watch event (VirtualService, EndpointSlice, Node, health check) reaching the agent " +
				"until the kernel acknowledged the VirtualService's sync.",
			// 0.5 ms to 32 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17),
		}),
		pending: map[types.NamespacedName]time.Time{},
	}
	if reg != nil {
		reg.MustRegister(e.hist)
	}
	return e
}

// seen records an event for key now, unless an earlier one is pending.
func (e *eventLatency) seen(key types.NamespacedName) {
	now := e.clock.Now()
	e.mu.Lock()
	if _, ok := e.pending[key]; !ok {
		e.pending[key] = now
	}
	e.mu.Unlock()
}

// take removes and returns key's pending event time, before a sync starts:
// an event that arrives during the sync starts a new clock.
func (e *eventLatency) take(key types.NamespacedName) (time.Time, bool) {
	e.mu.Lock()
	t, ok := e.pending[key]
	delete(e.pending, key)
	e.mu.Unlock()
	return t, ok
}

// done ends the clock taken for key: observed after a successful sync, put
// back after a failed one (it is earlier than any event seen meanwhile).
func (e *eventLatency) done(key types.NamespacedName, t time.Time, ok bool) {
	if ok {
		e.hist.Observe(e.clock.Since(t).Seconds())
		return
	}
	e.mu.Lock()
	e.pending[key] = t
	e.mu.Unlock()
}
