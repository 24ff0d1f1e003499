package ipvsnl_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelDumpMatchesTheLibrary lists, on the guest kernel, what the
// in-place dumps read and what moby/ipvs reads, and wants the same: every
// protocol, both families, persistence with netmasks, the flags we set,
// every forwarding method and weights up to 65,535, over enough virtual
// servers for many replies, beside a firewall-mark service of another
// program (listed by neither), and a missing virtual server (an error).
func TestKernelDumpMatchesTheLibrary(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	n, err := ipvsnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const mark = 4242
	if err := ipvsnl.AddFirewallMarkService(n, mark); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ipvsnl.DeleteFirewallMarkService(n, mark); err != nil {
			t.Error(err)
		}
	}()

	protos := []ipvs.Protocol{ipvs.TCP, ipvs.UDP, ipvs.SCTP}
	scheds := []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}
	fwds := []ipvs.Forwarding{ipvs.Masquerade, ipvs.DirectRoute, ipvs.Tunnel}
	var made []ipvs.VirtualServer
	defer func() {
		for _, vs := range made {
			if err := n.DeleteVirtualServer(ctx, vs.Key()); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := range 1500 {
		a := netip.AddrFrom4([4]byte{10, 98, byte(i / 250), byte(i%250 + 1)})
		if i%3 == 2 {
			a = netip.AddrFrom16([16]byte{0xfd, 0x98, 14: byte(i >> 8), 15: byte(i)})
		}
		vs := ipvs.VirtualServer{Address: a, Protocol: protos[i%3], Port: uint16(1 + i%65535), Scheduler: scheds[i%len(scheds)]}
		switch i % 5 {
		case 1:
			vs.Timeout = uint32(60 + i)
		case 2:
			vs.Timeout, vs.NetmaskBits = 10800, 24
			if a.Is6() {
				vs.NetmaskBits = 64
			}
		case 3:
			vs.Flags = ipvs.FlagOnePacket
			if vs.Protocol != ipvs.UDP {
				vs.Flags = 0
			}
		}
		if vs.Scheduler == "sh" || vs.Scheduler == "mh" {
			vs.Flags |= ipvs.FlagFallback | ipvs.FlagPort
		}
		if err := n.AddVirtualServer(ctx, vs); err != nil {
			t.Fatalf("add %s: %v", vs, err)
		}
		made = append(made, vs)
		// Real servers for some: every forwarding method and weights up
		// to 65,535.
		if i%50 == 0 {
			for j := range 12 {
				ra := netip.AddrFrom4([4]byte{10, 99, byte(j), byte(i%250 + 1)})
				if a.Is6() {
					ra = netip.AddrFrom16([16]byte{0xfd, 0x99, 13: byte(j), 14: byte(i >> 8), 15: byte(i)})
				}
				rs := ipvs.RealServer{Address: ra, Port: uint16(8000 + j), Weight: []int{0, 1, 100, 65535}[j%4], Forwarding: fwds[j%3]}
				if err := n.AddRealServer(ctx, vs.Key(), rs); err != nil {
					t.Fatalf("add %s to %s: %v", rs, vs, err)
				}
			}
		}
	}

	got, err := n.ListVirtualServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ipvsnl.LibraryVirtualServers(n)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("virtual servers: the dump read %d, the library %d; first differences: %s", len(got), len(want), firstDiff(got, want))
	}
	if len(got) < len(made) {
		t.Fatalf("listed %d virtual servers, made %d", len(got), len(made))
	}
	for i, vs := range made {
		if i%50 != 0 && i%7 != 0 {
			continue
		}
		got, err := n.ListRealServers(ctx, vs.Key())
		if err != nil {
			t.Fatal(err)
		}
		want, err := ipvsnl.LibraryRealServers(n, vs.Key())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("real servers of %s: the dump read %v, the library %v", vs, got, want)
		}
		if i%50 == 0 && len(got) != 12 {
			t.Fatalf("real servers of %s: %d, want 12", vs, len(got))
		}
	}
	missing := ipvs.Key{Address: netip.MustParseAddr("10.98.255.255"), Protocol: ipvs.TCP, Port: 1}
	if _, err := n.ListRealServers(ctx, missing); err == nil {
		t.Fatalf("real servers of missing %s: no error", missing)
	}
	// The socket keeps working after many dumps and an error.
	if again, err := n.ListVirtualServers(ctx); err != nil || !slices.Equal(again, want) {
		t.Fatalf("listing again: %d virtual servers, err %v", len(again), err)
	}
}

func firstDiff(got, want []ipvs.VirtualServer) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d: %+v against %+v", i, got[i], want[i])
		}
	}
	return "one is a prefix of the other"
}

// BenchmarkKernelDumps lists 10,000 virtual servers, and the 10 real
// servers of one, in place and through moby/ipvs (-benchmem: the bytes
// per listing are what Verify's dumps cost the agent's collector).
func BenchmarkKernelDumps(b *testing.B) {
	ctx := context.Background()
	kerneltest.Require(b)
	n, err := ipvsnl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	var made []ipvs.VirtualServer
	defer func() {
		for _, vs := range made {
			_ = n.DeleteVirtualServer(ctx, vs.Key())
		}
	}()
	for i := range 10000 {
		vs := ipvs.VirtualServer{Address: netip.AddrFrom4([4]byte{10, 97, byte(i / 250), byte(i%250 + 1)}), Protocol: ipvs.TCP, Port: 80, Scheduler: "wrr"}
		if err := n.AddVirtualServer(ctx, vs); err != nil {
			b.Fatal(err)
		}
		made = append(made, vs)
	}
	k := made[0].Key()
	for j := range 10 {
		rs := ipvs.RealServer{Address: netip.AddrFrom4([4]byte{10, 1, 0, byte(j + 1)}), Port: 8080, Weight: 1}
		if err := n.AddRealServer(ctx, k, rs); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		f    func() (int, error)
	}{
		{"virtual-servers/in-place", func() (int, error) { l, err := n.ListVirtualServers(ctx); return len(l), err }},
		{"virtual-servers/moby", func() (int, error) { l, err := ipvsnl.LibraryVirtualServers(n); return len(l), err }},
		{"real-servers/in-place", func() (int, error) { l, err := n.ListRealServers(ctx, k); return len(l), err }},
		{"real-servers/moby", func() (int, error) { l, err := ipvsnl.LibraryRealServers(n, k); return len(l), err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got, err := c.f(); err != nil || got < 10 {
					b.Fatalf("listed %d: %v", got, err)
				}
			}
		})
	}
}
