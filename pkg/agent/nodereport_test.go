package agent

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// The report holds the watermark, the count of programmed VirtualServices
// and the failures; an unchanged report is not written again.
func TestNodeReporterWrites(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scriptScheme).Build()
	w := newWatermark()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newNodeReporter("node-1", c, w, clk)
	a, b := types.NamespacedName{Namespace: "shop", Name: "a"}, types.NamespacedName{Namespace: "shop", Name: "b"}
	w.saw(a, "7")
	w.saw(b, "9")
	w.handled(a, w.start(a))
	r.outcome(a, 2, true, nil)
	w.handled(b, w.start(b))
	r.outcome(b, 5, true, []string{"IPVS: no such scheduler"})
	if wrote, err := r.write(ctx, false); err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	var got lvsv1.NodeReport
	if err := c.Get(ctx, client.ObjectKey{Name: "node-1"}, &got); err != nil {
		t.Fatal(err)
	}
	st := got.Status
	if st.ResourceVersion != "9" || st.VirtualServices != 1 || st.FailedCount != 1 || len(st.Failed) != 1 ||
		st.Failed[0] != (lvsv1.NodeReportFailure{Namespace: "shop", Name: "b", Generation: 5, Message: "IPVS: no such scheduler"}) {
		t.Fatalf("report %+v", st)
	}
	if wrote, err := r.write(ctx, false); err != nil || wrote {
		t.Fatalf("an unchanged report was written again: %v %v", wrote, err)
	}
	r.outcome(b, 6, true, nil)
	r.announced = func() []lvsv1.AnnouncedAddress {
		return []lvsv1.AnnouncedAddress{{Address: "10.96.0.10", Mode: lvsv1.AnnounceBGP}, {Address: "10.96.0.10", Mode: lvsv1.AnnounceLayer2}}
	}
	if wrote, err := r.write(ctx, false); err != nil || !wrote {
		t.Fatalf("after b was fixed: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "node-1"}, &got); err != nil || got.Status.AnnouncedCount != 2 || len(got.Status.Announced) != 2 {
		t.Fatalf("announced in the report: %+v %v", got.Status, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "node-1"}, &got); err != nil || got.Status.FailedCount != 0 || got.Status.VirtualServices != 2 {
		t.Fatalf("report %+v %v", got.Status, err)
	}

	// A status-only event (the controller's own write) moves the
	// watermark: an idle tick does not write for that alone until refresh
	// has passed; a sync's kick writes at once.
	w.saw(a, "12")
	w.handled(a, w.start(a))
	if wrote, err := r.write(ctx, true); err != nil || wrote {
		t.Fatalf("idle tick wrote a watermark-only change: %v %v", wrote, err)
	}
	clk.Step(r.refresh)
	if wrote, err := r.write(ctx, true); err != nil || !wrote {
		t.Fatalf("idle tick after refresh: %v %v", wrote, err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "node-1"}, &got); err != nil || got.Status.ResourceVersion != "12" {
		t.Fatalf("report after refresh %+v %v", got.Status, err)
	}
	w.saw(b, "14")
	w.handled(b, w.start(b))
	if wrote, err := r.write(ctx, false); err != nil || !wrote {
		t.Fatalf("a sync's write: %v %v", wrote, err)
	}
	// Something besides the watermark changed: an idle tick writes.
	r.outcome(a, 3, true, []string{"IPVS: file exists"})
	if wrote, err := r.write(ctx, true); err != nil || !wrote {
		t.Fatalf("idle tick with a new failure: %v %v", wrote, err)
	}
}
