package ipvsnl_test

import (
	"context"
	"net/netip"
	"runtime"
	"testing"

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
	// (Adding a masquerading real server in a fresh namespace fails with
	// EINVAL in the guest, through moby/ipvs and the batch socket alike:
	// not this test's subject. The real servers' dump is checked empty.)
	if reals, err := n.ListRealServers(ctx, vs.Key()); err != nil || len(reals) != 0 {
		t.Fatalf("the namespace's handle lists real servers %v (%v), want none", reals, err)
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
