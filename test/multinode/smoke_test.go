//go:build linux

package multinode

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestMultiNodeSmoke runs three agents, each in its own node, against one
// API server: one VirtualService (10.30.0.10 and fd00:30::10, 80/TCP and
// 53/UDP, rr) over the three nodes' pods is programmed in every node's IPVS, each
// agent reports its node in the status, a client on every node reaches all
// three pods through the VIP (across the pod network), and a client on the
// LAN with a static route to the VIP through n1 does too: the data path an
// announced VIP will use; a UDP question through n1 is answered too. Last,
// n1 loses its API server: it keeps its IPVS while the others follow a
// change, and catches up once the API server is back.
func TestMultiNodeSmoke(t *testing.T) {
	kerneltest.Require(t)
	start := time.Now()
	ctx := context.Background()
	c := New(t, Options{})
	c.StartAPI()
	for _, n := range c.Nodes {
		n.StartAgent()
	}
	for _, n := range c.Nodes {
		n.AgentReady(60 * time.Second)
	}
	t.Logf("API server and %d agents ready after %s", len(c.Nodes), time.Since(start).Round(time.Millisecond))

	vip4, vip6 := netip.MustParseAddr("10.30.0.10"), netip.MustParseAddr("fd00:30::10")
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: Namespace}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip4.String()), lvsv1.IPAddress(vip6.String())},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("echo"))},
			{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromString("echo-udp"))},
		},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
	}}
	if err := c.API.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	c.SetEndpoints("web", false, c.Nodes, nil)
	c.SetEndpoints("web", true, c.Nodes, nil)

	// Every node's IPVS holds the VIPs with the three pods.
	for _, vip := range []netip.Addr{vip4, vip6} {
		want := ipvsWant(vip, c.Nodes, nil)
		for _, n := range c.Nodes {
			WaitFor(t, 30*time.Second, n.Name+" programs "+vip.String(), func() error {
				if got := n.IPVS(vip); got != want {
					return fmt.Errorf("IPVS of %s:\n%swant:\n%s", n.Name, got, want)
				}
				return nil
			})
		}
	}
	t.Logf("every node programmed after %s", time.Since(start).Round(time.Millisecond))

	// Every agent reports its node in its NodeReport: one VirtualService
	// programmed, none failed, every change up to it synced.
	var cur lvsv1.VirtualService
	if err := c.API.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
		t.Fatal(err)
	}
	rv, err := strconv.ParseUint(cur.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		WaitFor(t, 30*time.Second, n.Name+"'s NodeReport", func() error {
			var rep lvsv1.NodeReport
			if err := c.API.Get(ctx, client.ObjectKey{Name: n.Name}, &rep); err != nil {
				return err
			}
			wm, _ := strconv.ParseUint(rep.Status.ResourceVersion, 10, 64)
			if rep.Status.VirtualServices != 1 || rep.Status.FailedCount != 0 || wm < rv {
				return fmt.Errorf("report %+v, want 1 VirtualService, none failed, resourceVersion >= %d", rep.Status, rv)
			}
			return nil
		})
	}

	// reachesAll connects from ns to the VIP until every pod answered.
	reachesAll := func(ns *Netns, vip netip.Addr) {
		t.Helper()
		seen := map[string]bool{}
		WaitFor(t, 20*time.Second, ns.Name+" reaches every pod through "+vip.String(), func() error {
			got, err := ns.Get(netip.AddrPortFrom(vip, 80), 2*time.Second)
			if err != nil {
				return err
			}
			seen[got] = true
			if len(seen) < len(c.Nodes) {
				return fmt.Errorf("answered by %v so far", seen)
			}
			return nil
		})
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		for _, n := range c.Nodes {
			reachesAll(n.Netns, vip)
		}
	}
	t.Logf("a client on every node reaches every pod through the VIPs after %s", time.Since(start).Round(time.Millisecond))

	// The LAN client, routed to the VIP through n1: n1 forwards to pods
	// on every node and the answers come back through it.
	n1 := c.Nodes[0]
	for _, vip := range []netip.Addr{vip4, vip6} {
		if err := c.L2C.AddRoute(netip.PrefixFrom(vip, vip.BitLen()), n1.IP(vip.Is6())); err != nil {
			t.Fatal(err)
		}
		reachesAll(c.L2C, vip)
		if got, err := c.L2C.AskUDP(netip.AddrPortFrom(vip, 53), 3*time.Second); err != nil || c.Node(got) == nil {
			t.Fatalf("UDP from l2c to %s: %q %v", vip, got, err)
		}
	}
	t.Logf("l2c reaches every pod through n1 after %s", time.Since(start).Round(time.Millisecond))

	// n1 loses the API server (its proxy closed, its link up): it keeps
	// what it programmed while the others follow n3's pod leaving (TCP
	// drained at weight 0, or deleted once idle; UDP deleted), and
	// catches up once the API server is back.
	all := ipvsWant(vip4, c.Nodes, nil)
	left := []string{ipvsWant(vip4, c.Nodes[:2], c.Nodes[2:]), ipvsWant(vip4, c.Nodes[:2], nil)}
	converged := func(n *Node) error {
		got := n.IPVS(vip4)
		if !slices.Contains(left, got) {
			return fmt.Errorf("IPVS of %s:\n%swant one of:\n%s", n.Name, got, strings.Join(left, "or\n"))
		}
		return nil
	}
	n1.CutAPI()
	c.SetEndpoints("web", false, c.Nodes[:2], nil)
	for _, n := range c.Nodes[1:] {
		WaitFor(t, 30*time.Second, n.Name+" follows n3's pod leaving", func() error { return converged(n) })
	}
	if got := n1.IPVS(vip4); got != all {
		t.Fatalf("n1 changed without its API server:\n%swant:\n%s", got, all)
	}
	n1.RestoreAPI()
	WaitFor(t, 30*time.Second, "n1 catches up with its API server back", func() error { return converged(n1) })
	t.Logf("n1 caught up after its API server came back, after %s", time.Since(start).Round(time.Millisecond))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal") || strings.HasPrefix(l, "MemAvailable") {
				t.Log(l)
			}
		}
	}
}

// ipvsWant is the IPVS dump (kerneltest.DumpVIP) of the VirtualService of
// TestMultiNodeSmoke for vip: the pods of ready, and for TCP the pods of
// draining at weight 0.
func ipvsWant(vip netip.Addr, ready, draining []*Node) string {
	v6 := vip.Is6()
	var b strings.Builder
	for _, vs := range []ipvs.VirtualServer{
		{Address: vip, Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"},
		{Address: vip, Protocol: ipvs.UDP, Port: 53, Scheduler: "rr"},
	} {
		var rss []ipvs.RealServer
		for _, n := range ready {
			rss = append(rss, ipvs.RealServer{Address: n.PodIP(v6), Port: EchoPort, Weight: 1})
		}
		if vs.Protocol == ipvs.TCP {
			for _, n := range draining {
				rss = append(rss, ipvs.RealServer{Address: n.PodIP(v6), Port: EchoPort})
			}
		}
		ipvs.SortRealServers(rss)
		fmt.Fprintf(&b, "%s\n", vs)
		for _, r := range rss {
			fmt.Fprintf(&b, "  -> %s\n", r)
		}
	}
	return b.String()
}
