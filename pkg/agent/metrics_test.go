package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

func histogram(t *testing.T, reg *prometheus.Registry) (count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "kubelvs_event_to_kernel_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("kubelvs_event_to_kernel_seconds not registered")
	return 0, 0
}

func TestEventLatencyClock(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEventLatency(reg)
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}

	if _, ok := e.take(a); ok {
		t.Fatal("a clock without an event")
	}

	// The first of several events starts the clock; a later one does not
	// reset it.
	e.seen(a)
	time.Sleep(20 * time.Millisecond)
	e.seen(a)
	t0, ok := e.take(a)
	if !ok {
		t.Fatal("no clock after an event")
	}
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Fatalf("clock started by the second event: %s ago", d)
	}
	// An event during the sync starts a new clock.
	e.seen(a)
	e.done(a, t0, true)
	if n, sum := histogram(t, reg); n != 1 || sum < 0.02 {
		t.Fatalf("after one successful sync: %d observations, sum %gs; want 1, >= 0.02s", n, sum)
	}
	if t1, ok := e.take(a); !ok || !t1.After(t0) {
		t.Fatalf("event during the sync: clock %v (%v), want one after %v", t1, ok, t0)
	}

	// A failed sync observes nothing and keeps the earliest time for the
	// retry, even if a newer event came meanwhile.
	e.seen(b)
	tb, _ := e.take(b)
	time.Sleep(5 * time.Millisecond)
	e.seen(b)
	e.done(b, tb, false)
	if n, _ := histogram(t, reg); n != 1 {
		t.Fatalf("failed sync observed: %d observations, want 1", n)
	}
	if got, ok := e.take(b); !ok || !got.Equal(tb) {
		t.Fatalf("after a failed sync the clock is %v (%v), want the first event's %v", got, ok, tb)
	}
	e.done(b, tb, true)
	if n, _ := histogram(t, reg); n != 2 {
		t.Fatalf("retry observed %d in all, want 2", n)
	}
}
