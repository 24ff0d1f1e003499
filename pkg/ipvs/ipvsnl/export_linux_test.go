package ipvsnl

import (
	"syscall"

	moby "github.com/moby/ipvs"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// HoldReads takes n's read handle, as a dump in progress does, until the
// returned function is called.
func HoldReads(n *Netlink) (release func()) {
	n.rmu.Lock()
	return n.rmu.Unlock
}

// LibraryVirtualServers lists the virtual servers as moby/ipvs parses
// them, to check the in-place dump against.
func LibraryVirtualServers(n *Netlink) ([]ipvs.VirtualServer, error) {
	var svcs []*moby.Service
	if err := n.read(func(h *moby.Handle) (err error) { svcs, err = h.GetServices(); return err }); err != nil {
		return nil, err
	}
	var out []ipvs.VirtualServer
	for _, s := range svcs {
		if vs, ok := fromService(s); ok {
			out = append(out, vs)
		}
	}
	ipvs.SortVirtualServers(out)
	return out, nil
}

// LibraryRealServers lists the real servers of k as moby/ipvs parses
// them.
func LibraryRealServers(n *Netlink, k ipvs.Key) ([]ipvs.RealServer, error) {
	var ds []*moby.Destination
	if err := n.read(func(h *moby.Handle) (err error) { ds, err = h.GetDestinations(keyService(k)); return err }); err != nil {
		return nil, err
	}
	var out []ipvs.RealServer
	for _, d := range ds {
		out = append(out, fromDest(d))
	}
	ipvs.SortRealServers(out)
	return out, nil
}

// AddFirewallMarkService adds a firewall-mark service through moby/ipvs,
// as another program would: kubelvs never makes one, and lists none.
func AddFirewallMarkService(n *Netlink, mark uint32) error {
	return n.do(func(h *moby.Handle) error {
		return h.NewService(&moby.Service{FWMark: mark, AddressFamily: syscall.AF_INET, SchedName: "rr", Netmask: 0xffffffff})
	})
}

// DeleteFirewallMarkService deletes what AddFirewallMarkService added.
func DeleteFirewallMarkService(n *Netlink, mark uint32) error {
	return n.do(func(h *moby.Handle) error {
		return h.DelService(&moby.Service{FWMark: mark, AddressFamily: syscall.AF_INET})
	})
}
