// Package conntracknl implements conntrack.Interface on the kernel through
// netlink: kernel-filtered dumps parsed by its own attribute reader
// (raw_linux.go) and batched deletes.
package conntracknl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// Netlink implements Interface on one long-lived ctnetlink socket of its
// own (raw_linux.go); the mutex keeps one request in flight on it.
type Netlink struct {
	mu sync.Mutex
	c  *conn
}

var _ conntrack.Interface = (*Netlink)(nil)

// New opens the netlink socket.
func New() (*Netlink, error) {
	c, err := dial()
	if err != nil {
		return nil, fmt.Errorf("open conntrack netlink socket: %w", err)
	}
	return &Netlink{c: c}, nil
}

// Close releases the socket.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c != nil {
		n.c.close()
		n.c = nil
	}
	return nil
}

func familyOf(a netip.Addr) netlink.InetFamily {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// maxFilteredDumps bounds the kernel-filtered dumps of one DeleteFlows;
// beyond it one unfiltered dump of the family is cheaper.
const maxFilteredDumps = 16

// dumpFiltered runs one dump restricted by f in the kernel (CTA_FILTER,
// kernel >= 5.8). A kernel that refuses the filter gets an unfiltered dump
// instead; one that ignores it (older than 5.8) returns every flow: the
// caller checks each flow anyway.
func (n *Netlink) dumpFiltered(family uint8, f *dumpFilter, fn func(conntrack.Flow)) error {
	err := n.c.dump(family, f, fn)
	if f != nil && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
		err = n.c.dump(family, nil, fn)
	}
	return err
}

// ListFlows dumps the vip:port flows over proto (the kernel filters the
// dump) and returns them sorted.
func (n *Netlink) ListFlows(ctx context.Context, vip netip.Addr, proto uint8, port uint16) ([]conntrack.Flow, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return nil, errors.New("conntrack handle closed")
	}
	want := netip.AddrPortFrom(vip.Unmap(), port)
	var out []conntrack.Flow
	err := n.dumpFiltered(uint8(familyOf(want.Addr())), &dumpFilter{proto: proto, vip: want}, func(fl conntrack.Flow) {
		if fl.Protocol == proto && fl.OrigDst == want {
			out = append(out, fl)
		}
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list conntrack flows of %s/%s: %w", conntrack.ProtoName(proto), want, err)
	}
	conntrack.SortFlows(out)
	return out, nil
}

// filtersFor returns the kernel-side dump filters that cover targets of one
// family: one per target, one per virtual service if there are too many
// targets, or a single unfiltered dump (nil) if there are too many of those.
func filtersFor(targets []conntrack.Target) []*dumpFilter {
	var per []*dumpFilter
	seen := map[conntrack.Target]bool{}
	for _, t := range targets {
		if !seen[t] {
			seen[t] = true
			per = append(per, &dumpFilter{proto: t.Protocol, vip: t.VIP, backend: t.Backend})
		}
	}
	if len(per) <= maxFilteredDumps {
		return per
	}
	var vs []*dumpFilter
	seenVS := map[conntrack.Target]bool{}
	for _, t := range targets {
		k := conntrack.Target{Protocol: t.Protocol, VIP: t.VIP}
		if !seenVS[k] {
			seenVS[k] = true
			vs = append(vs, &dumpFilter{proto: t.Protocol, vip: t.VIP})
		}
	}
	if len(vs) <= maxFilteredDumps {
		return vs
	}
	return []*dumpFilter{nil}
}

// DeleteFlows collects the matching flows with kernel-filtered dumps (each
// flow is checked against the targets again here) and deletes them in
// batches. An interrupted dump (the table changed under it) still deletes
// what it saw and is reported, so the caller retries later.
func (n *Netlink) DeleteFlows(ctx context.Context, targets []conntrack.Target) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(targets) == 0 {
		return 0, nil
	}
	m := conntrack.NewMatcher(targets)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return 0, errors.New("conntrack handle closed")
	}
	byFam := map[uint8][]conntrack.Target{}
	for _, t := range m.Targets() {
		f := uint8(familyOf(t.VIP.Addr()))
		byFam[f] = append(byFam[f], t)
	}
	var total int
	var errs []error
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		ts := byFam[fam]
		if len(ts) == 0 {
			continue
		}
		filters := filtersFor(ts)
		var flows []conntrack.Flow
		var dup map[conntrack.Flow]bool
		if len(filters) > 1 {
			dup = map[conntrack.Flow]bool{}
		}
		for _, f := range filters {
			err := n.dumpFiltered(fam, f, func(fl conntrack.Flow) {
				if !m.Match(fl) || dup[fl] {
					return
				}
				if dup != nil {
					dup[fl] = true
				}
				flows = append(flows, fl)
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("delete conntrack flows (family %d): %w", fam, err))
				if !errors.Is(err, netlink.ErrDumpInterrupted) {
					break
				}
			}
		}
		c, err := n.c.deleteFlows(flows)
		total += c
		if err != nil {
			errs = append(errs, fmt.Errorf("delete conntrack flows (family %d): %w", fam, err))
		}
	}
	return total, errors.Join(errs...)
}
