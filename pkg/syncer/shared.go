package syncer

// The state all groups share: the VIPs on kubelvs0 and the ipset members
// of the netfilter rules, and the order in which they are written around a
// group's IPVS changes, so that a virtual server is never reachable from
// outside its sourceRanges (tighten before, loosen after).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// syncShared writes the VIPs and ipset members that all groups together
// want, if they changed (or always, when force is set: the writers then
// compare with the kernel).
func (s *Syncer) syncShared(ctx context.Context, force bool) error {
	if !force && !s.sharedDirty {
		s.metrics.setProgrammed(len(s.services), s.realCount())
		return nil
	}
	vipSet := map[netip.Addr]bool{}
	for _, g := range s.groups {
		for _, v := range g.vips {
			vipSet[v] = true
		}
	}
	m := s.mergedMembers(types.NamespacedName{}, nil)
	vips := make([]netip.Addr, 0, len(vipSet))
	for v := range vipSet {
		vips = append(vips, v)
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	// VIPs before members: a VIP that goes away stops taking traffic
	// before its sourceRanges are lifted (tighten put new restrictions in
	// place before anything was added).
	var errs []error
	if force || !slices.Equal(vips, s.vips) {
		err := s.k.VIPs.SyncAddresses(ctx, vips)
		s.metrics.op("vip", "sync", err)
		if err != nil {
			errs = append(errs, fmt.Errorf("VIPs: %w", err))
		} else {
			s.vips = vips
		}
	}
	if force || !membersEqual(m, s.members) {
		err := s.k.Netfilter.SyncMembers(ctx, m)
		s.metrics.op("ipset", "sync", err)
		if err != nil {
			errs = append(errs, fmt.Errorf("ipset members: %w", err))
		} else {
			s.members = m
		}
	}
	if len(errs) == 0 {
		s.sharedDirty = false
		if force {
			s.sharedChecked = true
		}
	}
	s.metrics.setProgrammed(len(s.services), s.realCount())
	return errors.Join(errs...)
}

// tighten writes, before any virtual server or VIP changes, the ipset
// members that make the change safe to apply: every restricted VIP:port of
// both what the ipsets hold and next, with next's source ranges, and the
// current ranges of a VIP:port whose restriction next lifts; every
// masquerade and hairpin entry of both. A virtual server that gets
// sourceRanges is thus never reachable from outside them, not even for the
// moment between its VIP coming up and its members being written, and one
// that loses them (or goes away) stays restricted until its virtual server
// and VIP changes are done. A VIP:port restricted in both gets next's
// ranges at once: it is reachable before and after, so the order of the
// IPVS writes does not matter to it, and a source both admit is never
// dropped on the way. Likewise no real server takes traffic it could not
// answer unmasqueraded: a VIP:port that turns from trafficPolicy Local to
// Cluster is masqueraded before its remote real servers are added, one
// that turns Local stays masqueraded until they are gone, and a real
// server's hairpin entry is there before it is. syncShared writes next
// itself after the VIPs. Until the first full sync has compared the shared
// state with the kernel, what the ipsets hold is not known here and next
// is written as it is.
func (s *Syncer) tighten(ctx context.Context, next netfilter.Members) error {
	pre := next
	if s.sharedChecked {
		cur := s.members
		pre = netfilter.Members{
			Masquerade: union(cur.Masquerade, next.Masquerade),
			Restricted: union(cur.Restricted, next.Restricted),
			Allowed:    union(next.Allowed, lifted(cur, next)),
			Hairpin:    union(cur.Hairpin, next.Hairpin),
		}
		if membersEqual(pre, cur) {
			return nil
		}
	}
	err := s.k.Netfilter.SyncMembers(ctx, pre)
	s.metrics.op("ipset", "sync", err)
	if err != nil {
		// Nothing of the change is written: adding a virtual server
		// without its restriction would open it to every source.
		return fmt.Errorf("ipset members, before the virtual servers: %w", err)
	}
	s.members = pre
	if !s.sharedChecked {
		s.sharedDirty = true // syncShared(ctx, force) still checks them all
	}
	return nil
}

// mergedMembers returns the members of every group, sorted and without
// duplicates, with the group named skip left out and extra added.
func (s *Syncer) mergedMembers(skip types.NamespacedName, extra *netfilter.Members) netfilter.Members {
	var m netfilter.Members
	for name, g := range s.groups {
		if name != skip {
			m = appendMembers(m, g.members)
		}
	}
	if extra != nil {
		m = appendMembers(m, *extra)
	}
	return sortMembers(m)
}

func appendMembers(m, o netfilter.Members) netfilter.Members {
	m.Masquerade = append(m.Masquerade, o.Masquerade...)
	m.Restricted = append(m.Restricted, o.Restricted...)
	m.Allowed = append(m.Allowed, o.Allowed...)
	m.Hairpin = append(m.Hairpin, o.Hairpin...)
	return m
}

// sortMembers sorts each list in place and drops duplicates (two
// VirtualServices may name the same VIP:port while one of them is
// conflicted), so that lists compare equal when the sets are.
func sortMembers(m netfilter.Members) netfilter.Members {
	for _, es := range []*[]ipset.Entry{&m.Masquerade, &m.Restricted, &m.Allowed, &m.Hairpin} {
		ipset.SortEntries(*es)
		*es = slices.Compact(*es)
	}
	return m
}

// union merges two sorted lists without duplicates.
func union(a, b []ipset.Entry) []ipset.Entry {
	out := make([]ipset.Entry, 0, max(len(a), len(b)))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].Compare(b[j]) < 0:
			out = append(out, a[i])
			i++
		case i == len(a) || a[i].Compare(b[j]) > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// lifted returns, in order, the allowed ranges of cur whose VIP:port next
// no longer restricts.
func lifted(cur, next netfilter.Members) []ipset.Entry {
	var out []ipset.Entry
	for _, a := range cur.Allowed {
		k := ipset.Entry{IP: a.IP, Protocol: a.Protocol, Port: a.Port}
		if _, found := slices.BinarySearchFunc(next.Restricted, k, ipset.Entry.Compare); !found {
			out = append(out, a)
		}
	}
	return out
}

func membersEqual(a, b netfilter.Members) bool {
	return slices.Equal(a.Masquerade, b.Masquerade) && slices.Equal(a.Restricted, b.Restricted) && slices.Equal(a.Allowed, b.Allowed) &&
		slices.Equal(a.Hairpin, b.Hairpin)
}
