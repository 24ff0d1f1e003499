package ipvsnl_test

import (
	"context"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// TestKernelHandleStaysInItsNamespace: a handle made in a network
// namespace lists that namespace's IPVS, whatever namespace the calling
// thread is in later (test/multinode keeps one per simulated node). The
// dump socket was once opened at the first dump, in the caller's
// namespace: a node's listing then read the root namespace's IPVS.
func TestKernelHandleStaysInItsNamespace(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	vs := ipvs.VirtualServer{Address: netip.MustParseAddr("10.96.77.1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}

	made := make(chan *ipvsnl.Netlink, 1)
	errs := make(chan error, 1)
	go func() {
		// This thread goes into a new namespace and is never used again
		// (not unlocked: the runtime ends it with the goroutine).
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			errs <- err
			return
		}
		defer ns.Close()
		// With lo down, the namespace has no local routing table yet,
		// and the kernel refuses every IPv4 real server (EINVAL): IPVS
		// checks a real server's address type in that table
		// (ip_vs_new_dest, inet_addr_type), and an address it cannot
		// look up reads as broadcast.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			errs <- err
			return
		}
		n, err := ipvsnl.New()
		if err != nil {
			errs <- err
			return
		}
		made <- n
	}()
	var n *ipvsnl.Netlink
	select {
	case err := <-errs:
		t.Fatal(err)
	case n = <-made:
	}
	defer n.Close()
	// From here on this goroutine's thread is in the root namespace.
	if err := n.AddVirtualServer(ctx, vs); err != nil {
		t.Fatal(err)
	}
	got, err := n.ListVirtualServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != vs {
		t.Fatalf("the namespace's handle lists %v, want only %s", got, vs)
	}
	rs := ipvs.RealServer{Address: netip.MustParseAddr("10.1.77.1"), Port: 8080, Weight: 1}
	if err := n.AddRealServer(ctx, vs.Key(), rs); err != nil {
		t.Fatal(err)
	}
	if reals, err := n.ListRealServers(ctx, vs.Key()); err != nil || len(reals) != 1 || reals[0] != rs {
		t.Fatalf("the namespace's handle lists real servers %v (%v), want only %v", reals, err, rs)
	}
	root, err := ipvsnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.GetVirtualServer(ctx, vs.Key()); err == nil {
		t.Fatalf("%s, added through the namespace's handle, is in the root namespace", vs)
	}
}
