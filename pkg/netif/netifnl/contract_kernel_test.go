package netifnl_test

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
)

// TestKernelContract runs on the kernel the contract that netiftest's
// TestContract runs on the fake.
func TestKernelContract(t *testing.T) {
	kerneltest.Require(t)
	open := func(t *testing.T) netif.Interface {
		h, err := netifnl.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	netiftest.Contract(t, netiftest.Harness{
		Open:    open,
		Foreign: foreignBridge,
		Another: func(t *testing.T, _ netif.Interface) netif.Interface { return open(t) },
	})
}

// foreignBridge makes another program's bridge named kubelvs0.
func foreignBridge(t *testing.T, _ netif.Interface) func() {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: netif.DeviceName}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	removed := false
	remove := func() {
		if removed {
			return
		}
		removed = true
		l, err := netlink.LinkByName(netif.DeviceName)
		if err != nil {
			t.Errorf("the foreign %s is gone: %v", netif.DeviceName, err)
			return
		}
		if l.Type() != "bridge" || l.Attrs().Index != br.Attrs().Index {
			t.Errorf("the foreign %s is now a %s (index %d), want the bridge it was (index %d)", netif.DeviceName, l.Type(), l.Attrs().Index, br.Attrs().Index)
		}
		if err := netlink.LinkDel(l); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(remove)
	return remove
}
