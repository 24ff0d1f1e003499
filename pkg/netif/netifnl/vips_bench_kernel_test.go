package netifnl_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
)

// BenchmarkKernelManyVIPs shows how the cost of adding a VIP grows with
// the number already on the device: 10,000 /32 VIPs added 1,000 at a
// time, through SyncAddresses (what the agent does), and, for comparison,
// as local routes (type local in table local, no address) on another
// dummy device. It logs the time of each step of 1,000.
func BenchmarkKernelManyVIPs(b *testing.B) {
	ctx := context.Background()
	kerneltest.Require(b)
	const total, step = 10000, 1000
	vip := func(base byte, i int) netip.Addr { return netip.AddrFrom4([4]byte{10, base, byte(i >> 8), byte(i)}) }
	for range b.N {
		h, err := netifnl.New()
		if err != nil {
			b.Fatal(err)
		}
		if err := h.EnsureDevice(ctx); err != nil {
			b.Fatal(err)
		}
		var vips []netip.Addr
		var steps []time.Duration
		for n := step; n <= total; n += step {
			for i := len(vips); i < n; i++ {
				vips = append(vips, vip(98, i))
			}
			t := time.Now()
			if err := h.SyncAddresses(ctx, vips); err != nil {
				b.Fatal(err)
			}
			steps = append(steps, time.Since(t))
		}
		b.Logf("addresses on %s, per 1,000 added: %v", netif.DeviceName, steps)
		t := time.Now()
		if err := h.DeleteDevice(ctx); err != nil {
			b.Fatal(err)
		}
		b.Logf("delete %s with %d addresses: %s", netif.DeviceName, total, time.Since(t))
		h.Close()

		d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "kbench0"}}
		if err := netlink.LinkAdd(d); err != nil {
			b.Fatal(err)
		}
		l, err := netlink.LinkByName("kbench0")
		if err != nil {
			b.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			b.Fatal(err)
		}
		steps = steps[:0]
		for n := 0; n < total; n += step {
			t := time.Now()
			for i := n; i < n+step; i++ {
				a := vip(99, i)
				r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
					Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: 4}
				if err := netlink.RouteAdd(r); err != nil {
					b.Fatal(err)
				}
			}
			steps = append(steps, time.Since(t))
		}
		b.Logf("local routes via kbench0, per 1,000 added: %v", steps)
		if err := netlink.LinkDel(l); err != nil {
			b.Fatal(err)
		}
	}
}
