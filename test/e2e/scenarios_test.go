//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/e2e/echo"
)

// webVS is a VirtualService for Service svc: TCP 80 -> http (8080), UDP
// 53 -> dns (5353).
func webVS(c Cluster, name, svc string, vip netip.Addr) *lvsv1.VirtualService {
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace()}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip.String())},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))},
			{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromString("dns"))},
		},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: svc}},
		Drain:     &lvsv1.Drain{TimeoutSeconds: 60},
	}}
}

func create(t *testing.T, c Cluster, vs *lvsv1.VirtualService) {
	t.Helper()
	if err := c.API().Create(context.Background(), vs); err != nil {
		t.Fatalf("create VirtualService %s: %v", vs.Name, err)
	}
	t.Cleanup(func() { _ = c.API().Delete(context.Background(), vs) })
}

// serving waits until every backend answers through addr.
func serving(t *testing.T, cl Client, addr netip.AddrPort, bs []Backend) {
	t.Helper()
	want := map[string]bool{}
	for _, b := range bs {
		want[b.Name] = true
	}
	seen := map[string]bool{}
	eventually(t, 60*time.Second, fmt.Sprintf("all of %v answer through %s", bs, addr), func() error {
		name, err := cl.Greet(addr)
		if err != nil {
			return err
		}
		if !want[name] {
			return fmt.Errorf("answered by %q, not one of the backends", name)
		}
		seen[name] = true
		if len(seen) < len(want) {
			return fmt.Errorf("seen %v so far", seen)
		}
		return nil
	})
}

func count(t *testing.T, cl Client, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := cl.Greet(addr)
		if err != nil {
			t.Fatalf("connection %d through %s: %v", i, addr, err)
		}
		got[name]++
	}
	return got
}

func TestE2E(t *testing.T) {
	c := cluster

	// First: every later scenario then runs on the chart under test.
	t.Run("upgrade-from-previous-chart-keeps-traffic", func(t *testing.T) {
		skipUnless(t, c, OpUpgrade)
		keepsTraffic(t, c, "upgrade", testVIP(10), func() { c.UpgradeChart(t) })
	})

	t.Run("tcp-and-udp-through-a-vip", func(t *testing.T) {
		vip := testVIP(1)
		bs := c.Backends(t, "basic", 3)
		c.SetEndpoints(t, "basic", bs)
		create(t, c, webVS(c, "basic", "basic", vip))
		cl := c.Client(t)
		serving(t, cl, netip.AddrPortFrom(vip, 80), bs)
		names := map[string]bool{}
		for _, b := range bs {
			names[b.Name] = true
		}
		eventually(t, 20*time.Second, "UDP through the VIP", func() error {
			got, err := cl.Ask(netip.AddrPortFrom(vip, 53), 41000)
			if err == nil && !names[got] {
				return fmt.Errorf("answered by %q", got)
			}
			return err
		})
		if d := c.KernelDump(t, vip); strings.Count(d, "->") != 6 {
			t.Fatalf("kernel holds:\n%s\nwant 2 virtual servers with 3 real servers each", d)
		}
	})

	t.Run("scale-down-drains-established-and-never-black-holes-udp", func(t *testing.T) {
		vip := testVIP(2)
		bs := c.Backends(t, "scale", 3)
		c.SetEndpoints(t, "scale", bs)
		vs := webVS(c, "scale", "scale", vip)
		// The drain must outlast the scenario: once it times out the
		// real server is deleted and, with expire_nodest_conn=1 (the
		// chart's), its connections are reset. On a real kubelet on a
		// slow host, counting 12 connections through kubectl exec took
		// over the 60 s of webVS.
		vs.Spec.Drain = &lvsv1.Drain{TimeoutSeconds: 900}
		create(t, c, vs)
		cl := c.Client(t)
		http := netip.AddrPortFrom(vip, 80)
		serving(t, cl, http, bs)
		held, err := cl.Hold(http)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		udpFrom := uint16(42000)
		var udpBackend string
		eventually(t, 20*time.Second, "UDP answer", func() (err error) {
			udpBackend, err = cl.Ask(netip.AddrPortFrom(vip, 53), udpFrom)
			return err
		})
		var keep []Backend
		for _, b := range bs {
			if b.Name != held.Backend() && b.Name != udpBackend {
				keep = append(keep, b)
			}
		}
		c.SetEndpoints(t, "scale", keep)
		removed := time.Now()
		gone := map[string]bool{held.Backend(): true, udpBackend: true}
		eventually(t, 30*time.Second, "removed backends at weight 0 or gone", func() error {
			d := c.KernelDump(t, vip)
			for _, b := range bs {
				if gone[b.Name] && strings.Contains(d, b.Addr.String()+":8080 w=1") {
					return fmt.Errorf("%s still takes new TCP connections:\n%s", b.Name, d)
				}
				if gone[b.Name] && strings.Contains(d, b.Addr.String()+":5353") {
					return fmt.Errorf("%s still a UDP real server:\n%s", b.Name, d)
				}
			}
			return nil
		})
		for name, n := range count(t, cl, http, 12) {
			if gone[name] {
				t.Fatalf("%d new connections went to removed backend %s", n, name)
			}
		}
		if r, err := held.Ping("still here"); err != nil || r != held.Backend()+": still here" {
			t.Fatalf("established connection to the draining backend, %s after its removal: %q %v", time.Since(removed).Round(time.Second), r, err)
		}
		// Same source port: the stale flow was flushed, a remaining backend answers.
		eventually(t, 10*time.Second, "UDP from the same source port answered by a remaining backend", func() error {
			got, err := cl.Ask(netip.AddrPortFrom(vip, 53), udpFrom)
			if err != nil {
				return err
			}
			if gone[got] {
				return fmt.Errorf("answered by removed %s", got)
			}
			return nil
		})
	})

	t.Run("health-check-failure-shifts-traffic-and-recovery-restores-it", func(t *testing.T) {
		vip := testVIP(3)
		bs := c.Backends(t, "health", 2)
		c.SetEndpoints(t, "health", bs)
		vs := webVS(c, "health", "health", vip)
		vs.Spec.HealthCheck = &lvsv1.HealthCheck{Protocol: lvsv1.HealthCheckHTTP, Path: "/healthz", Port: ptr.To[int32](8081),
			IntervalSeconds: 2, TimeoutSeconds: 1, Rise: 1, Fall: 1}
		create(t, c, vs)
		cl := c.Client(t)
		http := netip.AddrPortFrom(vip, 80)
		serving(t, cl, http, bs)
		c.SetHealthy(t, bs[0], false)
		eventually(t, 30*time.Second, bs[0].Name+" at weight 0", func() error {
			if d := c.KernelDump(t, vip); !strings.Contains(d, bs[0].Addr.String()+":8080 w=0") {
				return fmt.Errorf("\n%s", d)
			}
			return nil
		})
		if got := count(t, cl, http, 8); got[bs[0].Name] > 0 {
			t.Fatalf("unhealthy backend got %d new connections: %v", got[bs[0].Name], got)
		}
		c.SetHealthy(t, bs[0], true)
		serving(t, cl, http, bs)
	})

	t.Run("source-ranges-block-outsiders", func(t *testing.T) {
		vip := testVIP(4)
		bs := c.Backends(t, "ranges", 1)
		c.SetEndpoints(t, "ranges", bs)
		cl, out := c.Client(t), c.Outsider(t)
		allowed := netip.PrefixFrom(cl.Addr(), 32)
		if allowed.Contains(out.Addr()) {
			t.Fatalf("the outsider %s is inside %s", out.Addr(), allowed)
		}
		vs := webVS(c, "ranges", "ranges", vip)
		create(t, c, vs)
		http := netip.AddrPortFrom(vip, 80)
		// Both are served without sourceRanges: what refuses the outsider
		// below is the range, not its network.
		serving(t, cl, http, bs)
		serving(t, out, http, bs)
		patch := client.MergeFrom(vs.DeepCopy())
		vs.Spec.SourceRanges = []lvsv1.CIDR{lvsv1.CIDR(allowed.String())}
		if err := c.API().Patch(context.Background(), vs, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the outsider "+out.Addr().String()+" refused", func() error {
			if name, err := out.Greet(http); err == nil {
				return fmt.Errorf("served by %s", name)
			}
			return nil
		})
		for i := 0; i < 3; i++ {
			if name, err := out.Greet(http); err == nil {
				t.Fatalf("a client outside sourceRanges was served by %s", name)
			}
		}
		if _, err := cl.Greet(http); err != nil {
			t.Fatalf("the client inside sourceRanges: %v", err)
		}
	})

	t.Run("persistence-keeps-a-client-on-one-backend", func(t *testing.T) {
		vip := testVIP(5)
		bs := c.Backends(t, "sticky", 3)
		c.SetEndpoints(t, "sticky", bs)
		vs := webVS(c, "sticky", "sticky", vip)
		vs.Spec.Persistence = &lvsv1.Persistence{TimeoutSeconds: 300, IPv4PrefixLength: 32, IPv6PrefixLength: 128}
		create(t, c, vs)
		cl := c.Client(t)
		http := netip.AddrPortFrom(vip, 80)
		eventually(t, 60*time.Second, "served", func() error { _, err := cl.Greet(http); return err })
		if got := count(t, cl, http, 12); len(got) != 1 {
			t.Fatalf("a persistent client was spread over %v", got)
		}
	})

	t.Run("wrr-spreads-in-proportion-to-weights", func(t *testing.T) {
		vip := testVIP(6)
		bs := c.Backends(t, "weighted", 2)
		vs := webVS(c, "weighted", "weighted", vip)
		vs.Spec.Scheduler = lvsv1.SchedulerWeightedRoundRobin
		vs.Spec.Ports = vs.Spec.Ports[:1]
		vs.Spec.Ports[0].TargetPort = ptr.To(intstr.FromInt32(8080))
		vs.Spec.Backends = lvsv1.Backends{Static: []lvsv1.StaticBackend{
			{Address: lvsv1.IPAddress(bs[0].Addr.String()), Weight: ptr.To[int32](3)},
			{Address: lvsv1.IPAddress(bs[1].Addr.String()), Weight: ptr.To[int32](1)},
		}}
		create(t, c, vs)
		cl := c.Client(t)
		http := netip.AddrPortFrom(vip, 80)
		serving(t, cl, http, bs)
		const n = 40
		got := count(t, cl, http, n)
		// wrr is deterministic: 3:1 over 40 connections is 30:10; allow
		// 10% of n for connections counted across a cycle boundary.
		if d := got[bs[0].Name] - 30; d < -4 || d > 4 {
			t.Fatalf("weights 3:1 over %d connections gave %v; want 30:10 within ±4", n, got)
		}
		t.Logf("wrr 3:1 over %d connections: %v", n, got)
	})

	t.Run("rolling-the-agent-keeps-traffic", func(t *testing.T) {
		skipUnless(t, c, OpRoll)
		keepsTraffic(t, c, "roll", testVIP(11), func() { c.RollAgent(t) })
	})

	t.Run("deleting-the-agent-pod-keeps-traffic", func(t *testing.T) {
		keepsTraffic(t, c, "restart", testVIP(7), func() { c.RestartAgent(t) })
	})

	t.Run("conflicting-virtualservice-is-conflicted", func(t *testing.T) {
		vip := testVIP(8)
		bs := c.Backends(t, "first", 1)
		c.SetEndpoints(t, "first", bs)
		create(t, c, webVS(c, "first", "first", vip))
		cl := c.Client(t)
		http := netip.AddrPortFrom(vip, 80)
		serving(t, cl, http, bs)
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) // a newer creationTimestamp
		others := c.Backends(t, "second", 1)
		c.SetEndpoints(t, "second", others)
		second := webVS(c, "second", "second", vip)
		create(t, c, second)
		eventually(t, 30*time.Second, "second VirtualService Conflicted", func() error {
			var cur lvsv1.VirtualService
			if err := c.API().Get(context.Background(), client.ObjectKeyFromObject(second), &cur); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(cur.Status.Conditions, lvsv1.ConditionConflicted) {
				return fmt.Errorf("conditions %+v", cur.Status.Conditions)
			}
			return nil
		})
		// The kernel keeps serving the older one.
		if got := count(t, cl, http, 6); got[bs[0].Name] != 6 {
			t.Fatalf("traffic of the conflicted address went to %v", got)
		}
	})

	// Last: nothing may run after an uninstall.
	t.Run("uninstall-removes-only-what-kubelvs-owns", func(t *testing.T) {
		skipUnless(t, c, OpUninstall)
		vip := testVIP(9)
		bs := c.Backends(t, "last", 2)
		c.SetEndpoints(t, "last", bs)
		cl := c.Client(t)
		vs := webVS(c, "last", "last", vip)
		// With sourceRanges, the allow-list ipsets and drop rule exist too.
		vs.Spec.SourceRanges = []lvsv1.CIDR{lvsv1.CIDR(netip.PrefixFrom(cl.Addr(), 32).String())}
		create(t, c, vs)
		serving(t, cl, netip.AddrPortFrom(vip, 80), bs)
		if foreignAtStart == nil { // else they are there since TestReliability began
			c.NodeKernel(t, "add-foreign")
		}
		t.Cleanup(func() { c.NodeKernel(t, "delete-foreign") })

		before := c.NodeKernel(t, "dump")
		owned, foreign := echo.Owned(before), echo.Foreign(before)
		t.Logf("the node's IPVS table before the uninstall:\n%s", strings.Join(slices.DeleteFunc(slices.Clone(before), func(l string) bool { return !strings.HasPrefix(l, "ipvs ") }), "\n"))
		// The dump sees what it must: else the checks below prove nothing.
		if key := "tcp " + netip.AddrPortFrom(vip, 80).String(); !owned[key] {
			t.Fatalf("kubelvs's ownership ipsets do not record %s:\n%s", key, strings.Join(before, "\n"))
		}
		for _, want := range []string{echo.LinkLine, "-j KUBELVS-"} {
			if !slices.ContainsFunc(before, func(l string) bool { return strings.Contains(l, want) }) {
				t.Fatalf("no %q in the node's kernel:\n%s", want, strings.Join(before, "\n"))
			}
		}
		for _, want := range []string{"ipvs tcp " + echo.ForeignService.String(), "ipset " + echo.ForeignSet + " member", "-A INPUT -j " + echo.ForeignChain} {
			if !slices.ContainsFunc(foreign, func(l string) bool { return strings.Contains(l, want) }) {
				t.Fatalf("no foreign %q on the node:\n%s", want, strings.Join(foreign, "\n"))
			}
		}

		services := 0
		for _, l := range foreign {
			if strings.HasPrefix(l, "ipvs tcp "+echo.ForeignService.Addr().String()+":") && !strings.Contains(l, "->") {
				services++
			}
		}
		if services != echo.ForeignCount {
			t.Fatalf("%d foreign IPVS services on the node, want %d:\n%s", services, echo.ForeignCount, strings.Join(foreign, "\n"))
		}
		t.Logf("kubelvs owns %d IPVS virtual servers; %d lines of foreign objects (%d IPVS services, ipsets, iptables rules)", len(owned), len(foreign), services)

		c.Uninstall(t)
		after := c.NodeKernel(t, "dump")
		if left := echo.Leftovers(owned, after); len(left) > 0 {
			t.Errorf("kubelvs objects left after uninstall:\n%s", strings.Join(left, "\n"))
		}
		if got := echo.Foreign(after); !slices.Equal(got, foreign) {
			t.Errorf("the uninstall changed other programs' objects:\n--- before\n%s\n--- after\n%s", strings.Join(foreign, "\n"), strings.Join(got, "\n"))
		}
		if foreignAtStart != nil && !slices.Equal(echo.Foreign(after), foreignAtStart) {
			t.Errorf("the suite (churn, a crash, restarts, every scenario, the uninstall) changed other programs' objects:\n--- at the start\n%s\n--- after\n%s",
				strings.Join(foreignAtStart, "\n"), strings.Join(echo.Foreign(after), "\n"))
		} else if foreignAtStart != nil {
			fmt.Fprintf(os.Stderr, "e2e: %d lines of foreign objects (%d IPVS services with a real server each, ipsets, iptables rules) unchanged from the start of the suite to after the uninstall\n", len(foreignAtStart), echo.ForeignCount)
		}
	})
}
