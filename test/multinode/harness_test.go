//go:build linux

package multinode

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestHarnessRouterECMP proves the router side of the harness without
// kubelvs: two nodes announce 10.30.0.1/32 and fd00:30::1/128 over eBGP
// (BIRD standing in for a node's speaker), the router's BIRD installs one
// multipath route with both nodes as next hops in its kernel FIB, and the
// connections of one external client spread over both nodes (layer-4
// multipath hashing), each node answering on the address itself.
func TestHarnessRouterECMP(t *testing.T) {
	kerneltest.Require(t)
	start := time.Now()
	c := New(t, Options{})
	t.Logf("topology of %d nodes built in %s", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	vip4, vip6 := netip.MustParseAddr("10.30.0.1"), netip.MustParseAddr("fd00:30::1")
	speakers := c.Nodes[:2]
	for _, n := range speakers {
		for _, vip := range []netip.Addr{vip4, vip6} {
			if err := n.AddAddr("lo", netip.PrefixFrom(vip, vip.BitLen())); err != nil {
				t.Fatal(err)
			}
		}
		c.ServeEcho(n.Netns, n.Name, netip.AddrPortFrom(netip.IPv6Unspecified(), 80))
		c.StartBIRD(n.Netns, "bird-"+n.Name, n.SpeakerConfig(BGPOptions{},
			netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)))
	}
	c.Router.StartBIRD(c.Router.RouterConfig(BGPOptions{}))

	for _, vip := range []netip.Addr{vip4, vip6} {
		v6 := vip.Is6()
		want := []netip.Addr{speakers[0].IP(v6), speakers[1].IP(v6)}
		WaitFor(t, 30*time.Second, fmt.Sprintf("ECMP route to %s via %v", vip, want), func() error {
			got, err := c.Router.Routes(netip.PrefixFrom(vip, vip.BitLen()))
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("next hops %v", got)
			}
			return nil
		})
		t.Logf("router's FIB: %s via %v after %s", vip, want, time.Since(start).Round(time.Millisecond))

		// One client, many connections: the 5-tuple hash spreads them.
		seen := map[string]int{}
		for i := 0; i < 32; i++ {
			got, err := c.Ext.Get(netip.AddrPortFrom(vip, 80), 3*time.Second)
			if err != nil {
				t.Fatalf("connection %d from ext to %s: %v", i, vip, err)
			}
			seen[got]++
		}
		t.Logf("32 connections from ext to %s answered by %v", vip, seen)
		if len(seen) != 2 || seen[speakers[0].Name] == 0 || seen[speakers[1].Name] == 0 {
			out, _ := c.Router.BIRDShow("show route all")
			t.Fatalf("connections to %s reached %v, want both %s and %s\n%s", vip, seen, speakers[0].Name, speakers[1].Name, out)
		}
	}
	if t.Failed() || testing.Verbose() {
		out, err := c.Router.BIRDShow("show protocols")
		t.Logf("router's BIRD:\n%s%v", out, err)
	}
}
