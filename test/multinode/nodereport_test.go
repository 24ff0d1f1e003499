//go:build linux

package multinode

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestMultiNodeNodeReports: three agents with --node-reports and the
// controller. Each node writes its NodeReport; the controller makes the
// VirtualService Programmed on all three from them, and nothing per node
// is written into the VirtualService. A new generation is Programmed again
// once every node has synced it.
func TestMultiNodeNodeReports(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	c := New(t, Options{})
	c.StartAPI()
	c.StartController()
	for _, n := range c.Nodes {
		n.StartAgent("--node-reports=true")
	}
	for _, n := range c.Nodes {
		n.AgentReady(60 * time.Second)
	}
	c.SetEndpoints("web", false, c.Nodes, nil)
	vs := echoVS("web", lvsv1.TrafficPolicyCluster, netip.MustParseAddr("10.30.0.40"))
	if err := c.API.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)
	programmedOnAll := func(gen int64) func() error {
		return func() error {
			var cur lvsv1.VirtualService
			if err := c.API.Get(ctx, key, &cur); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(cur.Status.Conditions, lvsv1.ConditionProgrammed)
			if cur.Generation < gen || cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != cur.Generation ||
				!strings.Contains(cond.Message, fmt.Sprintf("programmed on %d nodes", len(c.Nodes))) {
				return fmt.Errorf("generation %d, Programmed %+v", cur.Generation, cond)
			}
			if len(cur.Status.Nodes) != 0 {
				return fmt.Errorf("per-node entries written: %+v", cur.Status.Nodes)
			}
			if cur.Status.ReadyBackends != "3/3" {
				return fmt.Errorf("readyBackends %q", cur.Status.ReadyBackends)
			}
			return nil
		}
	}
	start := time.Now()
	WaitFor(t, 60*time.Second, "Programmed on every node from the NodeReports", programmedOnAll(1))
	t.Logf("Programmed on %d nodes %s after the VirtualService was created", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	for _, n := range c.Nodes {
		var rep lvsv1.NodeReport
		if err := c.API.Get(ctx, client.ObjectKey{Name: n.Name}, &rep); err != nil {
			t.Fatalf("NodeReport of %s: %v", n.Name, err)
		}
		if rep.Status.VirtualServices != 1 || rep.Status.FailedCount != 0 {
			t.Errorf("NodeReport of %s: %+v", n.Name, rep.Status)
		}
	}
	var cur lvsv1.VirtualService
	if err := c.API.Get(ctx, key, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Scheduler = lvsv1.SchedulerWeightedRoundRobin
	if err := c.API.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	WaitFor(t, 60*time.Second, "generation 2 Programmed on every node", programmedOnAll(2))
	t.Logf("generation 2 Programmed on %d nodes %s after the change", len(c.Nodes), time.Since(start).Round(time.Millisecond))
}

// announcedIn reads every node's NodeReport (the agents' default way to
// report) and counts, per node, the addresses of addrs it announces.
func announcedIn(ctx context.Context, c *Cluster, addrs ...netip.Addr) (map[string]int, error) {
	got := map[string]int{}
	for _, n := range c.Nodes {
		var rep lvsv1.NodeReport
		if err := c.API.Get(ctx, client.ObjectKey{Name: n.Name}, &rep); err != nil {
			return nil, fmt.Errorf("NodeReport of %s: %w", n.Name, err)
		}
		for _, a := range rep.Status.Announced {
			if slices.ContainsFunc(addrs, func(x netip.Addr) bool { return x.String() == a.Address }) {
				got[n.Name]++
			}
		}
	}
	return got, nil
}
