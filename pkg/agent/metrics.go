package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
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
	hist  *prometheus.HistogramVec
	clock clock.PassiveClock

	mu      sync.Mutex
	pending map[types.NamespacedName]pendingEvent
}

// pendingEvent is when the first event not yet programmed came, and
// whether it came for a VirtualService the kernel did not have yet.
type pendingEvent struct {
	at     time.Time
	create bool
}

// kind is the histogram's label: a create is a VirtualService new to the
// kernel; a change, one it has (what operators alert on: a burst of
// creates queues behind itself, a change goes ahead of it).
func (p pendingEvent) kind() string {
	if p.create {
		return "create"
	}
	return "change"
}

func newEventLatency(reg prometheus.Registerer, clk clock.PassiveClock) *eventLatency {
	e := &eventLatency{
		clock: clk,
		hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubelvs", Name: "event_to_kernel_seconds",
			Help: "Time from a watch event (VirtualService, EndpointSlice, Node, health check) reaching the agent " +
				"until the kernel acknowledged the VirtualService's sync; kind: create (a VirtualService new to the kernel) or change.",
			// 0.5 ms to 32 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17),
		}, []string{"kind"}),
		pending: map[types.NamespacedName]pendingEvent{},
	}
	// Both series exist from the start, at zero.
	e.hist.WithLabelValues("create")
	e.hist.WithLabelValues("change")
	if reg != nil {
		reg.MustRegister(e.hist)
	}
	return e
}

// seen records an event for key now, unless an earlier one is pending;
// create: the kernel does not have key yet.
func (e *eventLatency) seen(key types.NamespacedName, create bool) {
	now := e.clock.Now()
	e.mu.Lock()
	if _, ok := e.pending[key]; !ok {
		e.pending[key] = pendingEvent{at: now, create: create}
	}
	e.mu.Unlock()
}

// take removes and returns key's pending event, before a sync starts: an
// event that arrives during the sync starts a new clock.
func (e *eventLatency) take(key types.NamespacedName) (pendingEvent, bool) {
	e.mu.Lock()
	p, ok := e.pending[key]
	delete(e.pending, key)
	e.mu.Unlock()
	return p, ok
}

// done ends the clock taken for key: observed after a successful sync, put
// back after a failed one (it is earlier than any event seen meanwhile).
func (e *eventLatency) done(key types.NamespacedName, p pendingEvent, ok bool) {
	if ok {
		e.hist.WithLabelValues(p.kind()).Observe(e.clock.Since(p.at).Seconds())
		return
	}
	e.mu.Lock()
	e.pending[key] = p
	e.mu.Unlock()
}

// watchEvents counts the watch events the agent's handlers receive, per
// resource and kind of event: the load the API server's watches put on
// this agent, whatever the handlers do with them (most EndpointSlice
// events of a large cluster concern no VirtualService). Each series is
// bound once, so an event costs one atomic add.
type watchEvents struct {
	vec *prometheus.CounterVec
}

// Resources whose events watchEvents counts (the label's values).
const (
	resourceVirtualServices = "virtualservices"
	resourceEndpointSlices  = "endpointslices"
	resourceAddressPools    = "addresspools"
	resourceNamespaces      = "namespaces"
	resourceNodes           = "nodes"
)

func newWatchEvents(reg prometheus.Registerer) *watchEvents {
	w := &watchEvents{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "kubelvs", Name: "watch_events_total",
		Help: "Watch events (add, update, delete) the agent's handlers received, per resource: " +
			"the informers' initial lists count as adds.",
	}, []string{"resource", "event"})}
	for _, r := range []string{resourceVirtualServices, resourceEndpointSlices, resourceAddressPools, resourceNamespaces, resourceNodes} {
		for _, e := range []string{"add", "update", "delete"} {
			w.vec.WithLabelValues(r, e)
		}
	}
	if reg != nil {
		reg.MustRegister(w.vec)
	}
	return w
}

// counted wraps h so that every event is counted under resource first.
func (w *watchEvents) counted(resource string, h toolscache.ResourceEventHandlerFuncs) toolscache.ResourceEventHandlerFuncs {
	add, upd, del := w.vec.WithLabelValues(resource, "add"), w.vec.WithLabelValues(resource, "update"), w.vec.WithLabelValues(resource, "delete")
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			add.Inc()
			if h.AddFunc != nil {
				h.AddFunc(obj)
			}
		},
		UpdateFunc: func(old, cur any) {
			upd.Inc()
			if h.UpdateFunc != nil {
				h.UpdateFunc(old, cur)
			}
		},
		DeleteFunc: func(obj any) {
			del.Inc()
			if h.DeleteFunc != nil {
				h.DeleteFunc(obj)
			}
		},
	}
}
