package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
)

// histogram reads kubelvs_event_to_kernel_seconds{kind}.
func histogram(t *testing.T, reg *prometheus.Registry, kind ...string) (count uint64, sum float64) {
	t.Helper()
	if len(kind) == 0 {
		kind = []string{"change"}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "kubelvs_event_to_kernel_seconds" {
			for _, m := range mf.GetMetric() {
				if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetName() == "kind" && m.GetLabel()[0].GetValue() == kind[0] {
					h := m.GetHistogram()
					return h.GetSampleCount(), h.GetSampleSum()
				}
			}
			t.Fatalf("kubelvs_event_to_kernel_seconds has no kind=%q series", kind[0])
		}
	}
	t.Fatal("kubelvs_event_to_kernel_seconds not registered")
	return 0, 0
}

func TestEventLatencyClock(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	e := newEventLatency(reg, clk)
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}

	if _, ok := e.take(a); ok {
		t.Fatal("a clock without an event")
	}

	// The first of several events starts the clock; a later one does not
	// reset it.
	first := clk.Now()
	e.seen(a, false)
	clk.SetTime(first.Add(20 * time.Millisecond))
	e.seen(a, false)
	t0, ok := e.take(a)
	if !ok || !t0.at.Equal(first) {
		t.Fatalf("clock %v (%v), want the first event's %v", t0, ok, first)
	}
	// An event during the sync starts a new clock.
	clk.SetTime(first.Add(30 * time.Millisecond))
	e.seen(a, false)
	clk.SetTime(first.Add(50 * time.Millisecond))
	e.done(a, t0, true)
	if n, sum := histogram(t, reg); n != 1 || sum != 0.05 {
		t.Fatalf("after one successful sync: %d observations, sum %gs; want 1, 0.05s", n, sum)
	}
	if t1, ok := e.take(a); !ok || !t1.at.Equal(first.Add(30*time.Millisecond)) {
		t.Fatalf("event during the sync: clock %v (%v), want %v", t1, ok, first.Add(30*time.Millisecond))
	}

	// A failed sync observes nothing and keeps the earliest time for the
	// retry, even if a newer event came meanwhile.
	e.seen(b, false)
	tb, _ := e.take(b)
	clk.SetTime(clk.Now().Add(5 * time.Millisecond))
	e.seen(b, false)
	e.done(b, tb, false)
	if n, _ := histogram(t, reg); n != 1 {
		t.Fatalf("failed sync observed: %d observations, want 1", n)
	}
	if got, ok := e.take(b); !ok || !got.at.Equal(tb.at) {
		t.Fatalf("after a failed sync the clock is %v (%v), want the first event's %v", got, ok, tb)
	}
	clk.SetTime(clk.Now().Add(10 * time.Millisecond))
	e.done(b, tb, true)
	if n, sum := histogram(t, reg); n != 2 || sum != 0.05+0.015 {
		t.Fatalf("retry: %d observations, sum %gs; want 2, 0.065s", n, sum)
	}

	// A VirtualService new to the kernel is timed as a create, apart.
	c := types.NamespacedName{Namespace: "ns", Name: "c"}
	e.seen(c, true)
	clk.SetTime(clk.Now().Add(time.Second))
	e.seen(c, false) // a later event rides along: still the create's clock
	tc, _ := e.take(c)
	e.done(c, tc, true)
	if n, sum := histogram(t, reg, "create"); n != 1 || sum != 1 {
		t.Fatalf("create: %d observations, sum %gs; want 1, 1s", n, sum)
	}
	if n, _ := histogram(t, reg); n != 2 {
		t.Fatalf("a create counted as a change: %d changes, want 2", n)
	}
}

// The agent times an event as a create when the kernel does not have the
// VirtualService yet, as a change once it has.
func TestEventKindFollowsTheKernel(t *testing.T) {
	a := &Agent{lat: newEventLatency(nil, clocktesting.NewFakePassiveClock(time.Unix(1000, 0))), queue: newLane("q"), changes: newLane("c")}
	defer a.queue.ShutDown()
	defer a.changes.ShutDown()
	k := types.NamespacedName{Namespace: "ns", Name: "k"}
	a.event(k)
	if p, _ := a.lat.take(k); !p.create {
		t.Error("an event for a VirtualService the kernel has not: not a create")
	}
	a.programmed.Store(k, struct{}{})
	a.event(k)
	if p, _ := a.lat.take(k); p.create {
		t.Error("an event for a programmed VirtualService: a create")
	}
}

// Every event a counted handler receives is counted under its resource,
// whether or not the handler handles that kind of event.
func TestWatchEventsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := newWatchEvents(reg)
	var adds int
	h := w.counted(resourceEndpointSlices, toolscache.ResourceEventHandlerFuncs{AddFunc: func(any) { adds++ }})
	h.OnAdd(nil, false)
	h.OnAdd(nil, true)
	h.OnUpdate(nil, nil)
	h.OnDelete(nil)
	if adds != 2 {
		t.Errorf("the wrapped handler saw %d adds, want 2", adds)
	}
	want := map[string]float64{"add": 2, "update": 1, "delete": 1}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		if mf.GetName() != "kubelvs_watch_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got := m.GetCounter().GetValue()
			if l["resource"] == resourceEndpointSlices {
				seen++
				if got != want[l["event"]] {
					t.Errorf("%v: %v, want %v", l, got, want[l["event"]])
				}
			} else if got != 0 {
				t.Errorf("%v: %v, want 0", l, got)
			}
		}
	}
	if seen != 3 {
		t.Errorf("%d endpointslices series, want 3", seen)
	}
}
