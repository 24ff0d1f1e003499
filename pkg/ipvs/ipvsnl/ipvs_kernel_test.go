package ipvsnl_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// newKernelGuard returns a guarded IPVS handle on the real kernel; its
// cleanup deletes whatever the test left owned.
func newKernelGuard(tb testing.TB) *ownership.Guard {
	ctx := context.Background()
	tb.Helper()
	kerneltest.Require(tb)
	sets, err := ipsetnl.New()
	if err != nil {
		tb.Fatal(err)
	}
	own, err := ownership.NewSetRecords(ctx, sets)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := ipvsnl.New()
	if err != nil {
		tb.Fatal(err)
	}
	g := ownership.NewGuard(raw, own)
	tb.Cleanup(func() {
		for _, k := range own.Owned() {
			if err := g.DeleteVirtualServer(ctx, k); err != nil {
				tb.Error(err)
			}
		}
		g.Close()
		sets.Close()
	})
	return g
}

func TestKernelVirtualServerLifecycle(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	port := uint16(1000)
	for _, addr := range []string{"10.96.7.1", "fd96::7:1"} {
		for _, proto := range []ipvs.Protocol{ipvs.TCP, ipvs.UDP, ipvs.SCTP} {
			for i, sched := range ipvs.Schedulers {
				port++
				vs := ipvs.VirtualServer{Address: netip.MustParseAddr(addr), Protocol: proto, Port: port, Scheduler: sched}
				if sched == "sh" || sched == "mh" {
					vs.Flags = ipvs.FlagFallback
				}
				t.Run(vs.String(), func(t *testing.T) {
					if err := g.AddVirtualServer(ctx, vs); err != nil {
						t.Fatal(err)
					}
					expectVS(t, g, vs)
					up := vs
					up.Scheduler = ipvs.Schedulers[(i+1)%len(ipvs.Schedulers)]
					up.Flags = ipvs.FlagPort | ipvs.FlagFallback
					up.Timeout, up.NetmaskBits = 300, up.Address.BitLen()/2
					if err := g.UpdateVirtualServer(ctx, up); err != nil {
						t.Fatal(err)
					}
					expectVS(t, g, up)
					if err := g.DeleteVirtualServer(ctx, vs.Key()); err != nil {
						t.Fatal(err)
					}
					if _, err := g.GetVirtualServer(ctx, vs.Key()); !errors.Is(err, ipvs.ErrNotFound) {
						t.Errorf("after delete: got %v, want ErrNotFound", err)
					}
					if err := g.DeleteVirtualServer(ctx, vs.Key()); err != nil {
						t.Errorf("deleting a deleted virtual server: %v", err)
					}
				})
			}
		}
	}
}

func expectVS(t *testing.T, g *ownership.Guard, want ipvs.VirtualServer) {
	ctx := context.Background()
	t.Helper()
	got, err := g.GetVirtualServer(ctx, want.Key())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Errorf("read back %s, want %s", got, want)
	}
}

func TestKernelRealServerLifecycle(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	for _, fam := range []struct{ vip, rs string }{{"10.96.8.1", "10.97.0.%d"}, {"fd96::8:1", "fd97::%d"}} {
		vs := ipvs.VirtualServer{Address: netip.MustParseAddr(fam.vip), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr", Timeout: 60, NetmaskBits: 24}
		if vs.Address.Is6() {
			vs.NetmaskBits = 64
		}
		if err := g.AddVirtualServer(ctx, vs); err != nil {
			t.Fatal(err)
		}
		var want []ipvs.RealServer
		for i, fwd := range []ipvs.Forwarding{ipvs.Masquerade, ipvs.DirectRoute, ipvs.Tunnel} {
			rs := ipvs.RealServer{Address: netip.MustParseAddr(fmt.Sprintf(fam.rs, i+1)), Port: 8080, Weight: i + 1, Forwarding: fwd}
			if fwd != ipvs.Masquerade {
				rs.Port = 80 // DR and tunnel cannot change the port
			}
			if err := g.AddRealServer(ctx, vs.Key(), rs); err != nil {
				t.Fatal(err)
			}
			if err := g.AddRealServer(ctx, vs.Key(), rs); !errors.Is(err, ipvs.ErrExists) {
				t.Errorf("adding %s twice: got %v, want ErrExists", rs, err)
			}
			want = append(want, rs)
		}
		expectRS(t, g, vs.Key(), want)
		// Drain-style update: weight 0, other forwarding method.
		want[0].Weight, want[0].Forwarding = 0, ipvs.Tunnel
		want[1].Weight = 7
		for _, rs := range want[:2] {
			if err := g.UpdateRealServer(ctx, vs.Key(), rs); err != nil {
				t.Fatal(err)
			}
		}
		expectRS(t, g, vs.Key(), want)
		for _, rs := range want {
			if err := g.DeleteRealServer(ctx, vs.Key(), rs.Key()); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.DeleteRealServer(ctx, vs.Key(), want[0].Key()); err != nil {
			t.Errorf("deleting a deleted real server: %v", err)
		}
		expectRS(t, g, vs.Key(), nil)
		expectVS(t, g, vs)
	}
	all, err := ipvs.List(ctx, g, g.Owns)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Errorf("List(owned) = %v, want the two virtual servers", all)
	}
}

func expectRS(t *testing.T, g *ownership.Guard, k ipvs.Key, want []ipvs.RealServer) {
	ctx := context.Background()
	t.Helper()
	got, err := g.ListRealServers(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	ipvs.SortRealServers(want)
	if len(got) != len(want) {
		t.Fatalf("real servers of %s = %v, want %v", k, got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("real server %d of %s = %s, want %s", i, k, got[i], want[i])
		}
	}
}

func TestKernelForeignVirtualServersUntouchable(t *testing.T) {
	ctx := context.Background()
	g := newKernelGuard(t)
	all, err := g.ListVirtualServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	foreign := 0
	for _, vs := range all {
		if g.Owns(vs.Key()) {
			continue
		}
		foreign++
		rs := ipvs.RealServer{Address: netip.MustParseAddr("10.251.9.9"), Port: 1, Weight: 1}
		up := vs
		up.Scheduler = "rr"
		for name, err := range map[string]error{
			"add":       g.AddVirtualServer(ctx, vs),
			"update":    g.UpdateVirtualServer(ctx, up),
			"delete":    g.DeleteVirtualServer(ctx, vs.Key()),
			"add rs":    g.AddRealServer(ctx, vs.Key(), rs),
			"delete rs": g.DeleteRealServer(ctx, vs.Key(), ipvs.RealKey{Address: netip.MustParseAddr("10.251.0.1"), Port: 8080}),
		} {
			if !errors.Is(err, ipvs.ErrNotOwned) {
				t.Errorf("%s %s: got %v, want ErrNotOwned", name, vs, err)
			}
		}
	}
	if foreign < 20 {
		t.Errorf("saw %d foreign virtual servers, want the 20+ made by ipvsadm", foreign)
	}
	// kerneltest.Require checks after the test that ipvsadm -Sn is unchanged.
}
