package conntracknl_test

import (
	"context"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracknl"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracktest"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelContract runs on the kernel the contract that conntracktest's
// TestContract runs on the fake. Flows are created through ctnetlink with
// the tuples IPVS gives them (the reply comes from the real server), as
// BenchmarkKernelDeleteFlows does; TestKernelStaleUDPFlows has real ones.
func TestKernelContract(t *testing.T) {
	kerneltest.Require(t)
	conntracktest.Contract(t, conntracktest.Harness{
		Open: func(t *testing.T) conntrack.Interface {
			h, err := conntracknl.New()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			return h
		},
		AddFlows: addFlows,
	})
}

func addFlows(t *testing.T, h conntrack.Interface, flows ...conntrack.Flow) {
	t.Helper()
	ct, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	targets := make([]conntrack.Target, 0, len(flows))
	t.Cleanup(func() {
		if _, err := h.DeleteFlows(context.Background(), targets); err != nil {
			t.Errorf("clean up flows: %v", err)
		}
	})
	for _, f := range flows {
		fam := netlink.InetFamily(unix.AF_INET)
		if f.OrigDst.Addr().Is6() {
			fam = unix.AF_INET6
		}
		cf := &netlink.ConntrackFlow{
			FamilyType: uint8(fam),
			Forward: netlink.IPTuple{Protocol: f.Protocol,
				SrcIP: net.IP(f.OrigSrc.Addr().AsSlice()), SrcPort: f.OrigSrc.Port(),
				DstIP: net.IP(f.OrigDst.Addr().AsSlice()), DstPort: f.OrigDst.Port()},
			Reverse: netlink.IPTuple{Protocol: f.Protocol,
				SrcIP: net.IP(f.ReplySrc.Addr().AsSlice()), SrcPort: f.ReplySrc.Port(),
				DstIP: net.IP(f.ReplyDst.Addr().AsSlice()), DstPort: f.ReplyDst.Port()},
			TimeOut: 600,
		}
		if f.Protocol == conntrack.TCP {
			cf.ProtoInfo = &netlink.ProtoInfoTCP{State: nl.TCP_CONNTRACK_ESTABLISHED}
		}
		if err := ct.ConntrackCreate(netlink.ConntrackTable, fam, cf); err != nil {
			t.Fatalf("create flow %s: %v", f, err)
		}
		targets = append(targets, conntrack.Target{Protocol: f.Protocol, VIP: f.OrigDst, Backend: f.ReplySrc})
	}
}
