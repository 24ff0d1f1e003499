package envtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

func endpoints(addrs ...string) []discoveryv1.Endpoint {
	var out []discoveryv1.Endpoint
	for _, a := range addrs {
		out = append(out, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-1")})
	}
	return out
}

// TestAgentAndControllerAgainstAPIServer runs the agent role (on a fake
// kernel that keeps state) and the controller role against a real API
// server, and follows one VirtualService through its life.
func TestAgentAndControllerAgainstAPIServer(t *testing.T) {
	ctx := context.Background()
	fakes := syncertest.NewKernel()
	ipvsK, vips := fakes.IPVS, fakes.VIPs
	kernel, err := fakes.Wire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var masq []string
	kernel.Netfilter = recordedNetfilter{fakes.Netfilter, func(m netfilter.Members) {
		masq = masq[:0]
		for _, e := range m.Masquerade {
			masq = append(masq, e.String())
		}
	}}
	node(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"lb": "yes"}}})
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- roles.RunAgent(actx, cfg, roles.AgentOptions{
			Options:            agent.Options{NodeName: "node-1", ResyncPeriod: time.Hour, DrainInterval: 50 * time.Millisecond, ReportStatus: true},
			MetricsBindAddress: "0", HealthProbeBindAddress: "0", Kernel: kernel,
			// Its own: the suite may run more than once in a process (-count=2).
			MetricsRegistry: prometheus.NewRegistry(),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent role: %v", err)
		}
	})

	ns := namespace(t, "agent")
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
		},
		Endpoints: endpoints("10.1.0.1", "10.1.0.2"),
	}
	if err := k8s.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.50.1"},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))},
			{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromInt32(5353))},
		},
		Scheduler:    lvsv1.SchedulerWeightedRoundRobin,
		Backends:     lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
		NodeSelector: map[string]lvsv1.LabelValue{"lb": "yes"},
	}}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(vs)

	kernelHas := func(what string, want string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			if got := ipvsK.Dump(); got != want {
				return fmt.Errorf("kernel:\n%s\nwant:\n%s", got, want)
			}
			return nil
		})
	}
	backends := func(want string) {
		t.Helper()
		eventually(t, 20*time.Second, "readyBackends "+want, func() error {
			var cur lvsv1.VirtualService
			if err := k8s.Get(ctx, key, &cur); err != nil {
				return err
			}
			if cur.Status.ReadyBackends != want {
				return fmt.Errorf("readyBackends %q, nodes %+v", cur.Status.ReadyBackends, cur.Status.Nodes)
			}
			return nil
		})
	}

	// Created: programmed from the EndpointSlice, named targetPort resolved.
	kernelHas("programmed", `TCP/10.96.50.1:80 wrr
  -> 10.1.0.1:8080 w=1 Masquerade
  -> 10.1.0.2:8080 w=1 Masquerade
UDP/10.96.50.1:53 wrr
  -> 10.1.0.1:5353 w=1 Masquerade
  -> 10.1.0.2:5353 w=1 Masquerade
`)
	if d := vips.Dump(); !strings.Contains(d, "10.96.50.1/32") {
		t.Fatalf("VIP not on kubelvs0:\n%s", d)
	}
	got := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	if len(got.Status.Nodes) != 1 || got.Status.Nodes[0].Node != "node-1" || !got.Status.Nodes[0].Programmed {
		t.Fatalf("node report: %+v", got.Status.Nodes)
	}
	waitCondition(t, key, lvsv1.ConditionReady, metav1.ConditionTrue, "BackendsReady")
	backends("2/2")

	// Scale up.
	slice.Endpoints = endpoints("10.1.0.1", "10.1.0.2", "10.1.0.3")
	if err := k8s.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	kernelHas("scaled up", `TCP/10.96.50.1:80 wrr
  -> 10.1.0.1:8080 w=1 Masquerade
  -> 10.1.0.2:8080 w=1 Masquerade
  -> 10.1.0.3:8080 w=1 Masquerade
UDP/10.96.50.1:53 wrr
  -> 10.1.0.1:5353 w=1 Masquerade
  -> 10.1.0.2:5353 w=1 Masquerade
  -> 10.1.0.3:5353 w=1 Masquerade
`)
	backends("3/3")

	// Scale down: 10.1.0.1 keeps a TCP connection, so it drains at weight 0;
	// its UDP real server goes at once.
	if err := ipvsK.SetConns(ipvs.Key{Address: mustAddr("10.96.50.1"), Protocol: ipvs.TCP, Port: 80},
		ipvs.RealKey{Address: mustAddr("10.1.0.1"), Port: 8080}, 1, 0); err != nil {
		t.Fatal(err)
	}
	slice.Endpoints = endpoints("10.1.0.2", "10.1.0.3")
	if err := k8s.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	drainingDump := `TCP/10.96.50.1:80 wrr
  -> 10.1.0.1:8080 w=0 Masquerade
  -> 10.1.0.2:8080 w=1 Masquerade
  -> 10.1.0.3:8080 w=1 Masquerade
UDP/10.96.50.1:53 wrr
  -> 10.1.0.2:5353 w=1 Masquerade
  -> 10.1.0.3:5353 w=1 Masquerade
`
	kernelHas("draining", drainingDump)
	eventually(t, 20*time.Second, "draining count", func() error {
		var cur lvsv1.VirtualService
		if err := k8s.Get(ctx, key, &cur); err != nil {
			return err
		}
		if cur.Status.Backends == nil || cur.Status.Backends.Draining != 1 {
			return fmt.Errorf("backends %+v", cur.Status.Backends)
		}
		return nil
	})
	// The connection ends: the drain finishes.
	if err := ipvsK.SetConns(ipvs.Key{Address: mustAddr("10.96.50.1"), Protocol: ipvs.TCP, Port: 80},
		ipvs.RealKey{Address: mustAddr("10.1.0.1"), Port: 8080}, 0, 0); err != nil {
		t.Fatal(err)
	}
	kernelHas("drained", `TCP/10.96.50.1:80 wrr
  -> 10.1.0.2:8080 w=1 Masquerade
  -> 10.1.0.3:8080 w=1 Masquerade
UDP/10.96.50.1:53 wrr
  -> 10.1.0.2:5353 w=1 Masquerade
  -> 10.1.0.3:5353 w=1 Masquerade
`)
	backends("2/2")

	// Update the spec: a new scheduler, programmed in place.
	// Agents and the controller write status meanwhile: retry on conflicts.
	eventually(t, 10*time.Second, "update the scheduler", func() error {
		if err := k8s.Get(ctx, key, vs); err != nil {
			return err
		}
		vs.Spec.Scheduler = lvsv1.SchedulerMaglevHashing
		return k8s.Update(ctx, vs)
	})
	kernelHas("updated", `TCP/10.96.50.1:80 mh
  -> 10.1.0.2:8080 w=1 Masquerade
  -> 10.1.0.3:8080 w=1 Masquerade
UDP/10.96.50.1:53 mh
  -> 10.1.0.2:5353 w=1 Masquerade
  -> 10.1.0.3:5353 w=1 Masquerade
`)
	if v := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed"); v.Status.Nodes[0].ObservedGeneration != 2 {
		t.Fatalf("node observed generation %d, want 2", v.Status.Nodes[0].ObservedGeneration)
	}

	// The kernel refuses: status and an Event say so; when it recovers, so
	// does the VirtualService.
	ipvsK.FailAlways("AddRealServer", errors.New("no space left on device"))
	slice.Endpoints = endpoints("10.1.0.2", "10.1.0.3", "10.1.0.4")
	if err := k8s.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	v := waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionFalse, "ProgrammingFailed")
	if c := meta.FindStatusCondition(v.Status.Conditions, lvsv1.ConditionProgrammed); !strings.Contains(c.Message, "no space left on device") {
		t.Fatalf("Programmed message %q", c.Message)
	}
	waitEvent(t, ns, "web", "ProgrammingFailed")
	ipvsK.Reset()
	waitCondition(t, key, lvsv1.ConditionProgrammed, metav1.ConditionTrue, "Programmed")
	backends("3/3")

	// The node stops matching the selector: the agent withdraws.
	var node corev1.Node
	if err := k8s.Get(ctx, client.ObjectKey{Name: "node-1"}, &node); err != nil {
		t.Fatal(err)
	}
	node.Labels = map[string]string{"lb": "no"}
	if err := k8s.Update(ctx, &node); err != nil {
		t.Fatal(err)
	}
	kernelHas("withdrawn from an unselected node", "")
	node.Labels = map[string]string{"lb": "yes"}
	if err := k8s.Update(ctx, &node); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "back on the node", func() error {
		if !strings.Contains(ipvsK.Dump(), "10.1.0.4:8080") {
			return errors.New(ipvsK.Dump())
		}
		return nil
	})

	// A slice relabelled from another Service to "web" brings its
	// endpoints, and they go when it is deleted (the agent's own indexes
	// follow labels and deletes).
	has := func(what, addr string, want bool) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			if d := ipvsK.Dump(); strings.Contains(d, addr) != want {
				return fmt.Errorf("%s in the kernel: %v, want %v\n%s", addr, !want, want, d)
			}
			return nil
		})
	}
	other := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "other-xyz", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "other"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: slice.Ports, Endpoints: endpoints("10.1.0.9"),
	}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	other.Labels[discoveryv1.LabelServiceName] = "web"
	if err := k8s.Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	has("relabelled slice's endpoint", "10.1.0.9:5353", true)
	if err := k8s.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
	has("deleted slice's endpoint", "10.1.0.9:", false)

	// Deleted: every kernel object of it goes, the VIP too.
	if err := k8s.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	kernelHas("deleted", "")
	eventually(t, 20*time.Second, "VIP removed", func() error {
		if d := vips.Dump(); strings.Contains(d, "10.96.50.1") {
			return errors.New(d)
		}
		return nil
	})
}
