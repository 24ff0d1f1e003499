package conntrack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink implements Interface with vishvananda/netlink on one long-lived
// handle; the mutex keeps one request in flight on its socket.
type Netlink struct {
	mu sync.Mutex
	h  *netlink.Handle
}

var _ Interface = (*Netlink)(nil)

// New opens the netlink handle.
func New() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open conntrack netlink handle: %w", err)
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

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// FromNetlink converts a library flow.
func FromNetlink(f *netlink.ConntrackFlow) Flow {
	return Flow{
		Protocol: f.Forward.Protocol,
		OrigSrc:  addrPort(f.Forward.SrcIP, f.Forward.SrcPort),
		OrigDst:  addrPort(f.Forward.DstIP, f.Forward.DstPort),
		ReplySrc: addrPort(f.Reverse.SrcIP, f.Reverse.SrcPort),
		ReplyDst: addrPort(f.Reverse.DstIP, f.Reverse.DstPort),
	}
}

func familyOf(a netip.Addr) netlink.InetFamily {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// ListFlows dumps the table of vip's family and keeps vip:port flows.
func (n *Netlink) ListFlows(vip netip.Addr, proto uint8, port uint16) ([]Flow, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h == nil {
		return nil, errors.New("conntrack handle closed")
	}
	fs, err := n.h.ConntrackTableList(netlink.ConntrackTable, familyOf(vip))
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list conntrack flows of %s/%s: %w", protoName(proto), netip.AddrPortFrom(vip, port), err)
	}
	want := netip.AddrPortFrom(vip.Unmap(), port)
	var out []Flow
	for _, f := range fs {
		fl := FromNetlink(f)
		if fl.Protocol == proto && fl.OrigDst == want {
			out = append(out, fl)
		}
	}
	SortFlows(out)
	return out, nil
}

type filter struct{ m *Matcher }

func (f filter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool { return f.m.Match(FromNetlink(fl)) }

// DeleteFlows dumps each needed family once and deletes the matching flows.
// An interrupted dump (the table changed under it) still deletes what it
// saw and is reported, so the caller retries later.
func (n *Netlink) DeleteFlows(targets []Target) (int, error) {
	if len(targets) == 0 {
		return 0, nil
	}
	m := NewMatcher(targets)
	v4, v6 := m.Families()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h == nil {
		return 0, errors.New("conntrack handle closed")
	}
	var total int
	var errs []error
	for _, fam := range []struct {
		want bool
		af   netlink.InetFamily
	}{{v4, unix.AF_INET}, {v6, unix.AF_INET6}} {
		if !fam.want {
			continue
		}
		c, err := n.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam.af, filter{m})
		total += int(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete conntrack flows (family %d): %w", fam.af, err))
		}
	}
	return total, errors.Join(errs...)
}
