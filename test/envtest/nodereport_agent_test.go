package envtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

// An agent with --node-reports reports through its NodeReport only: the
// controller turns it into Programmed=True, for each new generation too,
// and no entry of the node is written into the VirtualService.
func TestAgentNodeReportsThroughTheController(t *testing.T) {
	ctx := context.Background()
	kernel := newFakeNode(t).k
	const nodeName = "node-reporting"
	node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- roles.RunAgent(actx, cfg, roles.AgentOptions{
			Options:            agent.Options{NodeName: nodeName, ResyncPeriod: time.Hour, ReportStatus: true, NodeReports: true},
			MetricsBindAddress: "0", HealthProbeBindAddress: "0", Kernel: kernel, MetricsRegistry: prometheus.NewRegistry(),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent role: %v", err)
		}
		_ = k8s.Delete(context.Background(), &lvsv1.NodeReport{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
	})
	ns := namespace(t, "reporting")
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{"10.96.0.14"}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: spec}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)
	got := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	for _, n := range got.Status.Nodes {
		if n.Node == nodeName {
			t.Fatalf("the agent wrote an entry into status.nodes: %+v", n)
		}
	}
	// Backend counts come from the API (its static backend; no
	// EndpointSlice yet), and follow its EndpointSlices.
	waitCondition(t, key, lvsv1.ConditionReady, metav1.ConditionTrue, "BackendsReady")
	readyIs := func(want string) {
		t.Helper()
		eventually(t, 20*time.Second, "readyBackends "+want, func() error {
			var cur lvsv1.VirtualService
			if err := k8s.Get(ctx, key, &cur); err != nil {
				return err
			}
			if cur.Status.ReadyBackends != want {
				return fmt.Errorf("readyBackends %q", cur.Status.ReadyBackends)
			}
			return nil
		})
	}
	readyIs("1/1")
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   append(endpoints("10.1.0.1"), discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}),
	}
	if err := k8s.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	readyIs("2/3")
	var rep lvsv1.NodeReport
	if err := k8s.Get(ctx, client.ObjectKey{Name: nodeName}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status.VirtualServices < 1 || rep.Status.ResourceVersion == "" || rep.Status.FailedCount != 0 {
		t.Fatalf("report %+v", rep.Status)
	}
	// A new generation: Programmed again once the agent synced it.
	toggleScheduler(t, key)
	eventually(t, 20*time.Second, "generation 2 programmed", func() error {
		c, cur, err := condition(t, key, lvsv1.ConditionProgrammed)
		if err != nil {
			return err
		}
		if cur.Generation < 2 || c.ObservedGeneration != cur.Generation || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("generation %d: %s=%s (observed %d) %s", cur.Generation, c.Type, c.Status, c.ObservedGeneration, c.Message)
		}
		return nil
	})
}
