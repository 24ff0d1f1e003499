package netifnl_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
)

func TestKernelDeviceAndAddresses(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	h, err := netifnl.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.DeleteDevice(ctx); err != nil {
			t.Error(err)
		}
		h.Close()
	})
	for i := 0; i < 2; i++ {
		if err := h.EnsureDevice(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l, err := netlink.LinkByName(netif.DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if l.Type() != "dummy" || l.Attrs().Flags&1 == 0 {
		t.Errorf("%s: type %s flags %v, want an up dummy", netif.DeviceName, l.Type(), l.Attrs().Flags)
	}
	all := []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2"), netip.MustParseAddr("fd96::1"), netip.MustParseAddr("fd96::2")}
	for _, want := range [][]netip.Addr{all, {all[1], all[3]}, {all[0], all[2]}, nil} {
		if err := h.SyncAddresses(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := h.ListAddresses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("kubelvs0 holds %v, want %v", got, want)
		}
		// Host prefixes only, so no VIP route covers other addresses.
		as, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range as {
			if ones, bits := a.Mask.Size(); a.IP.IsGlobalUnicast() && ones != bits {
				t.Errorf("%s on kubelvs0 is not a host prefix", a.IPNet)
			}
		}
	}

	// A sync works from what it wrote last (no dump of every VIP per
	// change); EnsureDevice, which the periodic resync calls, makes the
	// next sync read the kernel and repair what someone removed by hand.
	if err := h.SyncAddresses(ctx, all); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.96.0.1"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.SyncAddresses(ctx, all); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.ListAddresses(ctx); len(got) != 3 {
		t.Fatalf("an unchanged sync read the kernel: %v", got)
	}
	if err := h.EnsureDevice(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.SyncAddresses(ctx, all); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.ListAddresses(ctx); fmt.Sprint(got) != fmt.Sprint(all) {
		t.Fatalf("after the resync kubelvs0 holds %v, want %v", got, all)
	}
}

func TestKernelForeignDeviceUntouched(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	// Another program's non-dummy interface called kubelvs0.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: netif.DeviceName}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = netlink.LinkDel(br) }()
	h, err := netifnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for name, err := range map[string]error{
		"ensure": h.EnsureDevice(ctx),
		"sync":   h.SyncAddresses(ctx, []netip.Addr{netip.MustParseAddr("10.96.0.1")}),
		"delete": h.DeleteDevice(ctx),
	} {
		if !errors.Is(err, netif.ErrNotOwned) {
			t.Errorf("%s with a foreign bridge named kubelvs0: got %v, want ErrNotOwned", name, err)
		}
	}
}

func TestKernelSysctls(t *testing.T) {
	kerneltest.Require(t)
	if err := ipvsnl.CheckKernel(); err != nil { // loads ip_vs, which owns net.ipv4.vs.*
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	ss := netif.Sysctls(strings.TrimSpace(string(b)), true)
	if _, err := netif.ApplySysctls("/proc/sys", ss); err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		got, err := os.ReadFile("/proc/sys/" + s.Path)
		if err != nil || strings.TrimSpace(string(got)) != s.Value {
			t.Errorf("%s: read %q, %v", s, got, err)
		}
	}
}
