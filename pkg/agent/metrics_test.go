package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
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
	e.seen(a)
	clk.SetTime(first.Add(20 * time.Millisecond))
	e.seen(a)
	t0, ok := e.take(a)
	if !ok || !t0.Equal(first) {
		t.Fatalf("clock %v (%v), want the first event's %v", t0, ok, first)
	}
	// An event during the sync starts a new clock.
	clk.SetTime(first.Add(30 * time.Millisecond))
	e.seen(a)
	clk.SetTime(first.Add(50 * time.Millisecond))
	e.done(a, t0, true)
	if n, sum := histogram(t, reg); n != 1 || sum != 0.05 {
		t.Fatalf("after one successful sync: %d observations, sum %gs; want 1, 0.05s", n, sum)
	}
	if t1, ok := e.take(a); !ok || !t1.Equal(first.Add(30*time.Millisecond)) {
		t.Fatalf("event during the sync: clock %v (%v), want %v", t1, ok, first.Add(30*time.Millisecond))
	}

	// A failed sync observes nothing and keeps the earliest time for the
	// retry, even if a newer event came meanwhile.
	e.seen(b)
	tb, _ := e.take(b)
	clk.SetTime(clk.Now().Add(5 * time.Millisecond))
	e.seen(b)
	e.done(b, tb, false)
	if n, _ := histogram(t, reg); n != 1 {
		t.Fatalf("failed sync observed: %d observations, want 1", n)
	}
	if got, ok := e.take(b); !ok || !got.Equal(tb) {
		t.Fatalf("after a failed sync the clock is %v (%v), want the first event's %v", got, ok, tb)
	}
	clk.SetTime(clk.Now().Add(10 * time.Millisecond))
	e.done(b, tb, true)
	if n, sum := histogram(t, reg); n != 2 || sum != 0.05+0.015 {
		t.Fatalf("retry: %d observations, sum %gs; want 2, 0.065s", n, sum)
	}
}
