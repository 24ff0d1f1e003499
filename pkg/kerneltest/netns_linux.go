package kerneltest

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace joined to the root namespace by a veth pair:
// the root side holds .1 of 10.99.<Index>.0/24 and fd99:<Index>::1/64, the
// namespace side .2 and ::2.
type NS struct {
	Index int
	Name  string
	h     netns.NsHandle
}

// HostIP returns the root-namespace end of the link.
func (n *NS) HostIP(v6 bool) netip.Addr { return n.addr(v6, 1) }

// IP returns the namespace end of the link.
func (n *NS) IP(v6 bool) netip.Addr { return n.addr(v6, 2) }

func (n *NS) addr(v6 bool, host byte) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0xfd, 0x99, 0, byte(n.Index), 15: host})
	}
	return netip.AddrFrom4([4]byte{10, 99, byte(n.Index), host})
}

// NewNS creates namespace index (1-250) with its veth link. With
// defaultRoute, the namespace routes everything through the root namespace
// (a client); without, it reaches only its own /24 (a real server that can
// answer clients only if the director masquerades).
func NewNS(tb testing.TB, index int, defaultRoute bool) *NS {
	tb.Helper()
	n := &NS{Index: index, Name: fmt.Sprintf("kt%d", index)}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	n.h, err = netns.New()
	if serr := netns.Set(orig); serr != nil {
		tb.Fatalf("restore netns: %v", serr) // thread stays locked: discarded on exit
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		tb.Fatal(err)
	}
	host := "kt" + fmt.Sprint(index) + "h"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(n.h))}
	if err := netlink.LinkAdd(veth); err != nil {
		tb.Fatalf("veth %s: %v", host, err)
	}
	tb.Cleanup(func() {
		if l, err := netlink.LinkByName(host); err == nil {
			_ = netlink.LinkDel(l)
		}
		n.h.Close()
	})
	in, err := netlink.NewHandleAt(n.h)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	hl, err := netlink.LinkByName(host)
	if err != nil {
		tb.Fatal(err)
	}
	nl, err := in.LinkByName("eth0")
	if err != nil {
		tb.Fatal(err)
	}
	lo, err := in.LinkByName("lo")
	if err != nil {
		tb.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		bits := 24
		if v6 {
			bits = 64
		}
		addr := func(a netip.Addr) *netlink.Addr {
			na, _ := netlink.ParseAddr(netip.PrefixFrom(a, bits).String())
			na.Flags = unix.IFA_F_NODAD
			return na
		}
		if err := netlink.AddrAdd(hl, addr(n.HostIP(v6))); err != nil {
			tb.Fatalf("addr %s: %v", n.HostIP(v6), err)
		}
		if err := in.AddrAdd(nl, addr(n.IP(v6))); err != nil {
			tb.Fatalf("addr %s: %v", n.IP(v6), err)
		}
	}
	for _, l := range []netlink.Link{lo, nl} {
		if err := in.LinkSetUp(l); err != nil {
			tb.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		tb.Fatal(err)
	}
	if defaultRoute {
		for _, v6 := range []bool{false, true} {
			gw := n.HostIP(v6)
			r := &netlink.Route{LinkIndex: nl.Attrs().Index, Gw: net.IP(gw.AsSlice())}
			if err := in.RouteAdd(r); err != nil {
				tb.Fatalf("default route via %s: %v", gw, err)
			}
		}
	}
	return n
}

// Do runs f on an OS thread inside the namespace. Sockets f creates stay in
// the namespace after f returns, so servers and clients can then be used
// from any goroutine.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime discards the thread when this
		// goroutine exits, so no other goroutine runs in the namespace.
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
