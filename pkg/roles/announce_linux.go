package roles

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/announce/layer2"
)

// defaultRoute returns the interface of the node's IPv4 default route (else
// its IPv6 one) and that interface's first global IPv4 address, if any.
func defaultRoute() (string, netip.Addr, netip.Addr, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return "", netip.Addr{}, netip.Addr{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst != nil && !isDefault(r.Dst)) || r.LinkIndex == 0 {
				continue
			}
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return "", netip.Addr{}, netip.Addr{}, err
			}
			v4, v6 := linkAddrs(link)
			return link.Attrs().Name, v4, v6, nil
		}
	}
	return "", netip.Addr{}, netip.Addr{}, errors.New("the node has no default route")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// linkAddrs returns a link's first global IPv4 and IPv6 addresses.
func linkAddrs(link netlink.Link) (v4, v6 netip.Addr) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return v4, v6
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Unmap().IsGlobalUnicast() {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	return v4, v6
}

func newLayer2(ifname string, log logr.Logger, reg prometheus.Registerer) (announce.Layer2, error) {
	return layer2.New(ifname, log, reg)
}
