package conntracknl_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracknl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelStaleUDPFlows: UDP clients with fixed source ports talk to a VIP
// balanced over two real servers; one real server is removed. With its
// flows deleted, each client's very next datagram (same source port) is
// answered by the remaining real server. The control case skips the
// deletion and shows that datagram is lost: the flush is what prevents the
// black hole.
func TestKernelStaleUDPFlows(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	d := kerneltest.NewDirector(ctx, t)
	client := kerneltest.NewNS(t, 1, true)
	b1, b2 := kerneltest.NewNS(t, 2, false), kerneltest.NewNS(t, 4, false)
	be1, be2 := netip.AddrPortFrom(b1.IP(false), 5353), netip.AddrPortFrom(b2.IP(false), 5353)
	b1.Serve(t, "b1", be1)
	b2.Serve(t, "b2", be2)

	for i, flush := range []bool{true, false} {
		name := map[bool]string{true: "flush", false: "no-flush-control"}[flush]
		t.Run(name, func(t *testing.T) {
			vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.96.0.20"), Protocol: ipvs.UDP, Port: uint16(53 + i), Scheduler: "rr"}
			vip := netip.AddrPortFrom(vs.Address, vs.Port)
			d.Program(ctx, t, kerneltest.Service{VS: vs, RealServers: []ipvs.RealServer{
				{Address: be1.Addr(), Port: be1.Port(), Weight: 1},
				{Address: be2.Addr(), Port: be2.Port(), Weight: 1},
			}})
			var onB1 []*kerneltest.UDPClient
			for p := 0; p < 6; p++ {
				c := client.UDPClient(t, false, uint16(41000+100*i+p))
				got, err := c.Ask(vip, 5*time.Second)
				if err != nil {
					t.Fatalf("client %d: %v", p, err)
				}
				if got == "b1" {
					onB1 = append(onB1, c)
				}
			}
			if len(onB1) == 0 || len(onB1) == 6 {
				t.Fatalf("rr put %d of 6 clients on b1; want both real servers used", len(onB1))
			}
			flows, err := d.Conntrack.ListFlows(ctx, vs.Address, conntrack.UDP, vs.Port)
			if err != nil {
				t.Fatal(err)
			}
			if len(flows) != 6 {
				t.Errorf("ListFlows = %d flows, want 6: %v", len(flows), flows)
			}

			// Kernels >= 5.9 also expire a removed real server's
			// connections (and their conntrack entries) from a delayed
			// work item when expire_nodest_conn=1 at deletion time. That
			// cleanup races the client's next datagram; keep it out of
			// the experiment (sysctl 0 around the deletion, 1 again before
			// the datagram) so only our flush can make the difference.
			setSysctl(t, "net/ipv4/vs/expire_nodest_conn", "0")
			err = d.IPVS.DeleteRealServer(ctx, vs.Key(), ipvs.RealKey{Address: be1.Addr(), Port: be1.Port()})
			setSysctl(t, "net/ipv4/vs/expire_nodest_conn", "1")
			if err != nil {
				t.Fatal(err)
			}
			if flush {
				n, err := d.Conntrack.DeleteFlows(ctx, []conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: be1}})
				if err != nil {
					t.Fatal(err)
				}
				if n != len(onB1) {
					t.Errorf("deleted %d flows, want %d (the clients on b1)", n, len(onB1))
				}
			}
			if !flush {
				onB1 = onB1[:1] // one lost datagram makes the point; each costs the timeout
			}
			for _, c := range onB1 {
				got, err := c.Ask(vip, 2*time.Second)
				switch {
				case flush && (err != nil || got != "b2"):
					t.Errorf("after flush: got %q, %v; want the next datagram answered by b2", got, err)
				case !flush && err == nil:
					t.Errorf("without flush the next datagram was answered (%q): the control does not show the black hole", got)
				case !flush && !kerneltest.IsTimeout(err):
					t.Errorf("without flush: %v, want the datagram silently dropped", err)
				}
			}
		})
	}
}

func setSysctl(t *testing.T, path, v string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+path, []byte(v), 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkKernelDeleteFlows deletes the flows of one real server (10,000)
// among 100,000 flows, created through ctnetlink rather than traffic.
func BenchmarkKernelDeleteFlows(b *testing.B) {
	ctx := context.Background()
	kerneltest.Require(b)
	if err := os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_max", []byte("400000"), 0); err != nil {
		b.Fatal(err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ct, err := conntracknl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	vip := netip.MustParseAddrPort("10.96.2.1:53")
	backend := func(k int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, 50, byte(k + 1)}), 5353)
	}
	const total, backends = 100000, 10
	create := func() {
		for i := 0; i < total; i++ {
			client := net.IP{10, byte(100 + i>>16), byte(i >> 8), byte(i)}
			be := backend(i % backends)
			f := &netlink.ConntrackFlow{
				FamilyType: unix.AF_INET,
				Forward:    netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: client, DstIP: net.IP(vip.Addr().AsSlice()), SrcPort: 40000, DstPort: vip.Port()},
				Reverse:    netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IP(be.Addr().AsSlice()), DstIP: client, SrcPort: be.Port(), DstPort: 40000},
				TimeOut:    600,
			}
			if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
				b.Fatalf("create flow %d: %v", i, err)
			}
		}
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		create()
		b.StartTimer()
		n, err := ct.DeleteFlows(ctx, []conntrack.Target{{Protocol: conntrack.UDP, VIP: vip, Backend: backend(3)}})
		if err != nil {
			b.Fatal(err)
		}
		if n != total/backends {
			b.Fatalf("deleted %d flows, want %d", n, total/backends)
		}
		b.StopTimer()
		all := make([]conntrack.Target, backends)
		for k := range all {
			all[k] = conntrack.Target{Protocol: conntrack.UDP, VIP: vip, Backend: backend(k)}
		}
		if _, err := ct.DeleteFlows(ctx, all); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total), "flows-in-table")
	b.ReportMetric(float64(total/backends), "flows-deleted")
}
