package envtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/syncer"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

// fakeNode is a node's kernel made of fakes that keep state, shared by the
// agents a test starts and stops on it, with a record of the writes.
type fakeNode struct {
	ipvs *ipvstest.Fake
	vips *netiftest.Fake
	k    *syncer.Kernel

	mu      sync.Mutex
	members []string // every netfilter member set written, in order
}

func newFakeNode(t *testing.T) *fakeNode {
	ctx := context.Background()
	t.Helper()
	fakes := syncertest.NewKernel()
	n := &fakeNode{ipvs: fakes.IPVS, vips: fakes.VIPs}
	k, err := fakes.Wire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k.Netfilter = recordedNetfilter{fakes.Netfilter, func(m netfilter.Members) {
		n.mu.Lock()
		n.members = append(n.members, fmt.Sprint(m))
		n.mu.Unlock()
	}}
	n.k = k
	return n
}

// state is what the node's kernel holds.
func (n *fakeNode) state() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	last := ""
	if len(n.members) > 0 {
		last = n.members[len(n.members)-1]
	}
	return n.ipvs.Dump() + "VIPs:\n" + n.vips.Dump() + "members: " + last + "\n"
}

// ipvsWrites counts the IPVS writes so far.
func (n *fakeNode) ipvsWrites() int {
	w := 0
	for _, op := range []string{"AddVirtualServer", "UpdateVirtualServer", "DeleteVirtualServer", "AddRealServer", "UpdateRealServer", "DeleteRealServer"} {
		w += n.ipvs.Calls(op)
	}
	return w
}

// membersSince returns the member sets written after the first i.
func (n *fakeNode) membersSince(i int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.members[i:]...)
}

func (n *fakeNode) membersWritten() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.members)
}

// runFakeAgent runs the agent role on node as identity c; stop cancels it
// (the agent's SIGTERM) and returns what RunAgent returned.
func runFakeAgent(t *testing.T, c *rest.Config, node *fakeNode, o roles.AgentOptions) (stop func() error) {
	t.Helper()
	o.Options = agent.Options{NodeName: "node-rbac", ResyncPeriod: time.Hour, DrainInterval: 50 * time.Millisecond}
	o.MetricsBindAddress = "0"
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = "0"
	}
	o.Kernel = node.k
	o.MetricsRegistry = prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- roles.RunAgent(ctx, c, o) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the agent did not stop within 30s")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestAgentWithoutRBACLeavesTheKernel: an agent restarted without its RBAC
// (a token or RBAC hiccup) never syncs an empty desired state, nor cleans up
// when stopped; given its RBAC back it adopts the kernel without rewriting
// it; and only the deletion of its DaemonSet makes it clean up.
func TestAgentWithoutRBACLeavesTheKernel(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "norbac")
	vip := "10.96.61.1"
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip)},
		Ports:     []lvsv1.VirtualServicePort{{Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(8080))}},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: "10.2.0.1"}, {Address: "10.2.0.2"}}},
	}}
	if err := k8s.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	// Agents are cluster-wide: the other tests' would program it too.
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), vs) })
	node := newFakeNode(t)
	stop := runFakeAgent(t, cfg, node, roles.AgentOptions{})
	// Programmed: the virtual server with its real servers, then its VIP
	// (written after them, and the state compared below includes it).
	eventually(t, 30*time.Second, "programmed", func() error {
		if d := node.state(); !strings.Contains(d, "TCP/"+vip+":80 rr\n  -> 10.2.0.1:8080 w=1 Masquerade\n  -> 10.2.0.2:8080 w=1 Masquerade\n") ||
			!strings.Contains(d, "inet "+vip+"/32\n") {
			return fmt.Errorf("kernel:\n%s", d)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	before, writes, members := node.state(), node.ipvsWrites(), node.membersWritten()
	unchanged := func(when string) {
		t.Helper()
		if after := node.state(); after != before {
			t.Fatalf("%s, the kernel changed:\n--- before\n%s--- after\n%s", when, before, after)
		}
		if w := node.ipvsWrites(); w != writes {
			t.Fatalf("%s: %d IPVS writes", when, w-writes)
		}
		last := node.membersSince(members - 1)[0]
		for _, m := range node.membersSince(members) {
			if m != last {
				t.Fatalf("%s: netfilter members rewritten to %s (were %s)", when, m, last)
			}
		}
	}

	for _, c := range []struct {
		name string
		// grant: RBAC given to the agent; drop: resources left out of
		// its ClusterRole.
		grant   bool
		drop    []string
		refused string
	}{
		{"no RBAC at all", false, nil, "virtualservices"},
		{"EndpointSlices forbidden", true, []string{"endpointslices"}, "endpointslices"},
		// Without the pools, which addresses may be bound is not known.
		{"AddressPools forbidden", true, []string{"addresspools"}, "addresspools"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := namespace(t, "norbac")
			if c.grant {
				grantAgentRBAC(t, ns, c.drop...)
			}
			_, pod := agentDaemonSet(t, ns, true)
			id, refused := refusals(agentIdentity(t, ns), c.refused)
			probe := freeAddr(t)
			var cleanups atomic.Int32
			stop := runFakeAgent(t, id, node, roles.AgentOptions{
				HealthProbeBindAddress: probe, CleanupOnUninstall: true, PodName: pod.Name, PodNamespace: ns,
				Cleanup: func(context.Context, io.Writer) error { cleanups.Add(1); return nil },
			})
			eventually(t, 30*time.Second, "the API server refused the agent's list of "+c.refused+" twice", func() error {
				if n := refused.Load(); n < 2 {
					return fmt.Errorf("%d refusals", n)
				}
				return nil
			})
			if ready(probe) {
				t.Error("the agent is ready without its RBAC")
			}
			unchanged("while the agent cannot list " + c.refused)
			err := stop()
			t.Logf("agent stopped: %v", err)
			if n := cleanups.Load(); n != 0 {
				t.Fatalf("cleaned up %d times on a stop without RBAC", n)
			}
			unchanged("after a stop without RBAC")
		})
	}

	t.Run("RBAC back: adopts without rewriting; DaemonSet deleted: cleans up", func(t *testing.T) {
		ns := namespace(t, "norbac")
		ds, pod := agentDaemonSet(t, ns, true)
		id, refused := refusals(agentIdentity(t, ns), "virtualservices")
		probe := freeAddr(t)
		var cleanups atomic.Int32
		stop := runFakeAgent(t, id, node, roles.AgentOptions{
			HealthProbeBindAddress: probe, CleanupOnUninstall: true, PodName: pod.Name, PodNamespace: ns,
			Cleanup: func(context.Context, io.Writer) error { cleanups.Add(1); return nil },
		})
		eventually(t, 30*time.Second, "the API server refused the agent", func() error {
			if refused.Load() == 0 {
				return fmt.Errorf("no refusal yet")
			}
			return nil
		})
		grantAgentRBAC(t, ns)
		// The reflectors retry with a backoff of up to 30 s.
		eventually(t, 60*time.Second, "the agent ready once its RBAC is back", func() error {
			if !ready(probe) {
				return fmt.Errorf("not ready")
			}
			return nil
		})
		unchanged("after the first sync with the RBAC back")

		if err := k8s.Delete(ctx, ds); err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatalf("agent: %v", err)
		}
		if n := cleanups.Load(); n != 1 {
			t.Fatalf("cleaned up %d times after its DaemonSet was deleted", n)
		}
	})
}

// recordedNetfilter is the fake netfilter telling written about the
// members it holds after every write, whole or an update.
type recordedNetfilter struct {
	*netfiltertest.Fake
	written func(netfilter.Members)
}

func (r recordedNetfilter) SyncMembers(ctx context.Context, m netfilter.Members) error {
	if err := r.Fake.SyncMembers(ctx, m); err != nil {
		return err
	}
	r.written(r.Fake.Members())
	return nil
}

func (r recordedNetfilter) UpdateMembers(ctx context.Context, add, del netfilter.Members) error {
	if err := r.Fake.UpdateMembers(ctx, add, del); err != nil {
		return err
	}
	r.written(r.Fake.Members())
	return nil
}
