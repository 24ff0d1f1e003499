// Package netifnl implements netif.Interface on the kernel through netlink
// (vishvananda/netlink): the kubelvs0 dummy device and its addresses.
package netifnl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/netif"
)

// Netlink implements Interface on one long-lived rtnetlink handle.
type Netlink struct {
	mu sync.Mutex
	h  *netlink.Handle
	// known is what kubelvs0 held after the last successful write, so a
	// change costs its own writes rather than a dump of every VIP; nil
	// means unknown (first sync, after an error or EnsureDevice). It is a
	// set so that UpdateAddresses brings it up to date at the cost of the
	// change, not of a copy of every VIP.
	known map[netip.Addr]struct{}
}

var _ netif.Interface = (*Netlink)(nil)

// New opens the handle.
func New() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink handle: %w", err)
	}
	return &Netlink{h: h}, nil
}

// Close releases the handle.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	return nil
}

func (n *Netlink) link() (netlink.Link, error) {
	if n.h == nil {
		return nil, errors.New("rtnetlink handle closed")
	}
	l, err := n.h.LinkByName(netif.DeviceName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up %s: %w", netif.DeviceName, err)
	}
	if l.Type() != "dummy" {
		return nil, fmt.Errorf("%s (type %s): %w", netif.DeviceName, l.Type(), netif.ErrNotOwned)
	}
	return l, nil
}

// EnsureDevice creates kubelvs0 if missing and sets it up.
func (n *Netlink) EnsureDevice(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.known = nil
	l, err := n.link()
	if err != nil {
		return err
	}
	if l == nil {
		d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: netif.DeviceName}}
		if err := n.h.LinkAdd(d); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create %s: %w", netif.DeviceName, err)
		}
		if l, err = n.link(); err != nil || l == nil {
			return fmt.Errorf("create %s: %w", netif.DeviceName, errors.Join(err, errors.New("not found after create")))
		}
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		if err := n.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", netif.DeviceName, err)
		}
	}
	// The periodic resync calls this, without the syncer's lock: read what
	// kubelvs0 holds now, so that the next SyncAddresses compares with the
	// kernel without a read of thousands of addresses while changes wait.
	// If the read fails, SyncAddresses reads.
	if known, err := n.list(l); err == nil {
		n.known = addrSet(known)
	}
	return nil
}

// dumpAttempts bounds the retries of an address dump that the kernel
// interrupted: addresses changed while it ran, as when the kernel adds
// kubelvs0's IPv6 link-local address right after the device comes up.
const dumpAttempts = 5

func (n *Netlink) list(l netlink.Link) ([]netip.Addr, error) {
	as, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	for i := 1; i < dumpAttempts && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
		as, err = n.h.AddrList(l, netlink.FAMILY_ALL)
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", netif.DeviceName, err)
	}
	var out []netip.Addr
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() {
			continue // fe80:: added by the kernel, not a VIP
		}
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// ListAddresses returns the VIPs on kubelvs0 (none if it does not exist).
func (n *Netlink) ListAddresses(ctx context.Context) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := n.link()
	if err != nil || l == nil {
		return nil, err
	}
	return n.list(l)
}

func addrSet(as []netip.Addr) map[netip.Addr]struct{} {
	m := make(map[netip.Addr]struct{}, len(as))
	for _, a := range as {
		m[a] = struct{}{}
	}
	return m
}

func nlAddr(a netip.Addr) *netlink.Addr {
	p := netif.Prefix(a)
	na := &netlink.Addr{IPNet: netlink.NewIPNet(a.AsSlice())}
	na.IPNet.Mask = netMask(p)
	if a.Is6() {
		// A VIP must be usable at once: skip duplicate address detection,
		// which would leave it tentative (not local) for a second or more.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func netMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// SyncAddresses adds missing VIPs and removes the others.
func (n *Netlink) SyncAddresses(ctx context.Context, vips []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := n.device(ctx, "sync addresses")
	if err != nil {
		return err
	}
	have := n.known
	if have == nil {
		listed, err := n.list(l)
		if err != nil {
			return err
		}
		have = addrSet(listed)
	}
	n.known = nil
	want := addrSet(vips)
	var del []netip.Addr
	for a := range have {
		if _, ok := want[a]; !ok {
			del = append(del, a)
		}
	}
	slices.SortFunc(del, netip.Addr.Compare)
	var errs []error
	for _, a := range del {
		if err := n.h.AddrDel(l, nlAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", a, netif.DeviceName, err))
		}
	}
	for _, a := range vips {
		if _, ok := have[a]; ok {
			continue
		}
		have[a] = struct{}{} // a duplicate in vips is added once
		if err := n.h.AddrReplace(l, nlAddr(a)); err != nil {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", a, netif.DeviceName, err))
		}
	}
	if len(errs) == 0 {
		n.known = want
	}
	return errors.Join(errs...)
}

// device returns kubelvs0 for a write of its addresses (op, for the
// error): an error unless ctx is live and the device exists. n.mu is held.
func (n *Netlink) device(ctx context.Context, op string) (netlink.Link, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := n.link()
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, fmt.Errorf("%s: %s does not exist", op, netif.DeviceName)
	}
	return l, nil
}

// UpdateAddresses adds add and removes del, writing only what known says
// is missing or there; with known unknown it writes them all, which is
// as cheap and needs no dump of every VIP: adding an address that is there
// (AddrReplace) and removing one that is gone (EADDRNOTAVAIL) change
// nothing. known stays unknown then, since the other addresses were not
// looked at.
func (n *Netlink) UpdateAddresses(ctx context.Context, add, del []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := n.device(ctx, "update addresses")
	if err != nil {
		return err
	}
	known := n.known
	n.known = nil
	var adding map[netip.Addr]struct{}
	if len(add) > 0 && len(del) > 0 {
		adding = addrSet(add) // an address in both is added
	}
	var errs []error
	for _, a := range del {
		if _, ok := adding[a]; ok {
			continue
		}
		if _, ok := known[a]; !ok && known != nil {
			continue
		}
		if err := n.h.AddrDel(l, nlAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", a, netif.DeviceName, err))
		}
	}
	for _, a := range add {
		if _, ok := known[a]; ok {
			continue
		}
		if err := n.h.AddrReplace(l, nlAddr(a)); err != nil {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", a, netif.DeviceName, err))
		}
	}
	if len(errs) == 0 && known != nil {
		for _, a := range del {
			delete(known, a)
		}
		for _, a := range add {
			known[a] = struct{}{}
		}
		n.known = known
	}
	return errors.Join(errs...)
}

// DeleteDevice removes kubelvs0.
func (n *Netlink) DeleteDevice(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.known = nil
	l, err := n.link()
	if err != nil || l == nil {
		return err
	}
	if err := n.h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", netif.DeviceName, err)
	}
	return nil
}
