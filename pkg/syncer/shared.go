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
	"runtime/trace"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// syncShared writes the VIPs and ipset members that all groups together
// want, if they changed (or always, when force is set: the writers then
// compare with the kernel). What all groups want is kept as they change
// (sharedState), so this costs nothing per other group; comparing with
// what was last written is free when it is the same slice, which it is
// after a write of it. Once a full sync has compared the shared state with
// the kernel, an unforced write is the difference from what was last
// written (UpdateAddresses, UpdateMembers), so that the writers' cost is
// that of the change and not of every VIP and member on the node. The
// difference is the last group's change when what was written is what
// that change started from (sharedState.last: one VirtualService created
// or deleted), else a merge of the sorted lists, never a map of the whole
// set. After a failed write the kernel may hold part of it, so the next
// write is whole again (vipsUnknown, membersUnknown).
func (s *Syncer) syncShared(ctx context.Context, force bool) error {
	if !force && !s.sharedDirty {
		s.metrics.setProgrammed(len(s.services), s.realCount())
		return nil
	}
	vips, m := s.sh.vips, s.sh.members
	update := !force && s.sharedChecked
	// VIPs before members: a VIP that goes away stops taking traffic
	// before its sourceRanges are lifted (tighten put new restrictions in
	// place before anything was added).
	var errs []error
	s.sharedMu.Lock()
	if force || s.vipsUnknown || !sameAddrs(vips, s.vips) {
		s.sharedGen++
		op := "sync"
		var err error
		if update && !s.vipsUnknown {
			op = "update"
			add, del := s.sh.last.addVIPs, s.sh.last.delVIPs
			if !identical(s.vips, s.sh.last.fromVIPs) || !identical(vips, s.sh.last.toVIPs) {
				add, del = diffSorted(s.vips, vips, netip.Addr.Compare)
			}
			err = s.k.VIPs.UpdateAddresses(ctx, add, del)
		} else {
			err = s.k.VIPs.SyncAddresses(ctx, vips)
		}
		s.vipsUnknown = err != nil
		if err == nil {
			s.vips = vips
		}
		s.metrics.op("vip", op, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("VIPs: %w", err))
		}
	}
	s.sharedMu.Unlock()
	s.sharedMu.Lock()
	if force || s.membersUnknown || !sameMembers(m, s.members) {
		s.sharedGen++
		op := "sync"
		var err error
		if update && !s.membersUnknown {
			op = "update"
			add, del := s.membersDiff(s.members, m)
			err = s.k.Netfilter.UpdateMembers(ctx, add, del)
		} else {
			err = s.k.Netfilter.SyncMembers(ctx, m)
		}
		s.membersUnknown = err != nil
		if err == nil {
			s.members = m
		}
		s.metrics.op("ipset", op, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("ipset members: %w", err))
		}
	}
	s.sharedMu.Unlock()
	if len(errs) == 0 {
		s.sharedDirty = false
		if force {
			s.sharedChecked = true
		}
	}
	// What the last change kept of the old lists is not needed any more.
	s.sh.last.fromVIPs, s.sh.last.toVIPs, s.sh.last.addVIPs, s.sh.last.delVIPs = nil, nil, nil, nil
	s.sh.last.from, s.sh.last.to, s.sh.last.d = netfilter.Members{}, netfilter.Members{}, memberDelta{}
	s.metrics.setProgrammed(len(s.services), s.realCount())
	return errors.Join(errs...)
}

// membersDiff returns what to add to and remove from the members have to
// make them want, list by list: nothing for a list that is the very one in
// both; the last group's change when have's list is what it changed and
// want's what it made (a create or delete of one VirtualService, which
// tighten did not write ahead); else a merge of the two sorted lists.
func (s *Syncer) membersDiff(have, want netfilter.Members) (add, del netfilter.Members) {
	last := &s.sh.last
	hl, wl, al, dl := lists(&have), lists(&want), lists(&add), lists(&del)
	fl, tl := lists(&last.from), lists(&last.to)
	for l := range nLists {
		switch {
		case sameEntries(*hl[l], *wl[l]):
		case identical(*hl[l], *fl[l]) && identical(*wl[l], *tl[l]):
			*al[l], *dl[l] = last.d.add[l], last.d.del[l]
		default:
			*al[l], *dl[l] = diffSorted(*hl[l], *wl[l], ipset.Entry.Compare)
		}
	}
	return add, del
}

// identical reports whether a and b are the same list, not just equal:
// the lists are never changed in place, so the same array and length are
// the same contents.
func identical[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
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
// is written as it is. When the change alone makes pre (d, below), only
// that change is written (UpdateMembers), unless the last write of the
// members failed: the kernel may then hold part of it, and pre is written
// whole.
func (s *Syncer) tighten(ctx context.Context, next netfilter.Members, d *memberDelta) error {
	pre := next
	var add, del *netfilter.Members // the change from s.members to pre, when known
	if s.sharedChecked {
		cur := s.members
		if d != nil && sameMembers(cur, s.sh.members) {
			// What the ipsets hold is what the groups wanted before this
			// change, and d turns that into next: the same sets as below,
			// from the change alone. Masquerade, restricted and hairpin
			// entries: cur and what d adds. Allowed: cur and what d adds,
			// less what d removes of a VIP:port next still restricts
			// (lifted keeps the ranges of one it no longer restricts).
			var drop []ipset.Entry
			for _, a := range d.del[listAllowed] {
				k := ipset.Entry{IP: a.IP, Protocol: a.Protocol, Port: a.Port}
				if _, found := slices.BinarySearchFunc(next.Restricted, k, ipset.Entry.Compare); found {
					drop = append(drop, a)
				}
			}
			if d.none(false) && len(drop) == 0 {
				return nil
			}
			pick := func(l int, cur, next []ipset.Entry, del []ipset.Entry) []ipset.Entry {
				if len(d.del[l]) == len(del) {
					return next // the same set: share it, so that syncShared finds it written
				}
				return patch(cur, d.add[l], del, ipset.Entry.Compare)
			}
			pre = netfilter.Members{
				Masquerade: pick(listMasquerade, cur.Masquerade, next.Masquerade, nil),
				Restricted: pick(listRestricted, cur.Restricted, next.Restricted, nil),
				Allowed:    pick(listAllowed, cur.Allowed, next.Allowed, drop),
				Hairpin:    pick(listHairpin, cur.Hairpin, next.Hairpin, nil),
			}
			add = &netfilter.Members{Masquerade: d.add[listMasquerade], Restricted: d.add[listRestricted],
				Allowed: d.add[listAllowed], Hairpin: d.add[listHairpin]}
			del = &netfilter.Members{Allowed: drop}
		} else {
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
	}
	r := trace.StartRegion(ctx, "kubelvs: ipset members before the IPVS writes")
	defer r.End()
	s.sharedMu.Lock()
	s.sharedGen++
	op := "sync"
	var err error
	if add != nil && !s.membersUnknown {
		op = "update"
		err = s.k.Netfilter.UpdateMembers(ctx, *add, *del)
	} else {
		err = s.k.Netfilter.SyncMembers(ctx, pre)
	}
	s.membersUnknown = err != nil
	if err == nil {
		s.members = pre
	}
	s.sharedMu.Unlock()
	s.metrics.op("ipset", op, err)
	if err != nil {
		// Nothing of the change is written: adding a virtual server
		// without its restriction would open it to every source.
		return fmt.Errorf("ipset members, before the virtual servers: %w", err)
	}
	if !s.sharedChecked {
		s.sharedDirty = true // syncShared(ctx, force) still checks them all
	}
	return nil
}

// The four member lists, as indexes.
const (
	listMasquerade = iota
	listRestricted
	listAllowed
	listHairpin
	nLists
)

func lists(m *netfilter.Members) [nLists]*[]ipset.Entry {
	return [nLists]*[]ipset.Entry{&m.Masquerade, &m.Restricted, &m.Allowed, &m.Hairpin}
}

// sharedState is what all groups together want of the shared state, kept
// as groups change rather than merged from every group on each change: a
// count of the groups that want each VIP and each ipset member, and the
// sorted lists of those wanted (what syncShared writes). A group's change
// costs the difference between its old and its new VIPs and members, plus
// one copy of a list that changes: the writers take the difference
// (UpdateAddresses, UpdateMembers), but a full sync, Verify and the write
// after a failure hand them the whole set, and tighten compares with it.
// The lists are never changed in place: a change makes new ones, so a
// list handed to a writer, or remembered as written, stays as it was.
type sharedState struct {
	vipRefs    map[netip.Addr]int
	memberRefs [nLists]map[ipset.Entry]int
	vips       []netip.Addr
	members    netfilter.Members
	// memo is the members a group's change was computed to give before
	// its IPVS writes (for tighten), reused when the change is recorded.
	memo struct {
		from, to, base, result netfilter.Members
		d                      memberDelta
		ok                     bool
	}
	// last is the last group's change of the lists: what they were before
	// it, what they are after it and the difference, so that syncShared
	// writes the difference without comparing the lists when what was
	// written is what they were before it (membersDiff). syncShared drops
	// it, so that it does not keep old lists alive.
	last struct {
		fromVIPs, toVIPs, addVIPs, delVIPs []netip.Addr
		from, to                           netfilter.Members
		d                                  memberDelta
	}
}

func newSharedState() sharedState {
	sh := sharedState{vipRefs: map[netip.Addr]int{}}
	for l := range sh.memberRefs {
		sh.memberRefs[l] = map[ipset.Entry]int{}
	}
	return sh
}

// memberDelta is how the wanted members change: entries no group wanted
// before (add) and entries no group wants any more (del), each sorted.
type memberDelta struct {
	add, del [nLists][]ipset.Entry
}

// none reports whether d adds nothing (and, with dels, removes nothing).
func (d *memberDelta) none(dels bool) bool {
	for l := range nLists {
		if len(d.add[l]) > 0 || dels && len(d.del[l]) > 0 {
			return false
		}
	}
	return true
}

// membersDelta returns how the wanted members change when a group that
// wanted from wants to instead.
func (sh *sharedState) membersDelta(from, to netfilter.Members) memberDelta {
	var d memberDelta
	fl, tl := lists(&from), lists(&to)
	for l := range nLists {
		plus, minus := diffSorted(distinct(*fl[l], ipset.Entry.Compare), distinct(*tl[l], ipset.Entry.Compare), ipset.Entry.Compare)
		refs := sh.memberRefs[l]
		for _, e := range plus {
			if refs[e] == 0 {
				d.add[l] = append(d.add[l], e)
			}
		}
		for _, e := range minus {
			if refs[e] == 1 {
				d.del[l] = append(d.del[l], e)
			}
		}
	}
	return d
}

// membersAfter returns the wanted members after the change d.
func (sh *sharedState) membersAfter(d *memberDelta) netfilter.Members {
	m := sh.members
	ml := lists(&m)
	for l := range nLists {
		*ml[l] = patch(*ml[l], d.add[l], d.del[l], ipset.Entry.Compare)
	}
	return m
}

// nextMembers returns what the groups will want once the group that wants
// from wants to, and how that differs from what they want now; the result
// is remembered for setGroup.
func (sh *sharedState) nextMembers(from, to netfilter.Members) (netfilter.Members, memberDelta) {
	d := sh.membersDelta(from, to)
	next := sh.membersAfter(&d)
	sh.memo.from, sh.memo.to, sh.memo.base, sh.memo.result, sh.memo.d, sh.memo.ok = from, to, sh.members, next, d, true
	return next, d
}

// setGroup records what a group now contributes (nil: nothing) and brings
// the shared state's counts and lists up to date with its difference.
func (s *Syncer) setGroup(name types.NamespacedName, g *group) {
	var from, to group
	if prev := s.groups[name]; prev != nil {
		from = *prev
	}
	if g != nil {
		to = *g
		s.groups[name] = g
	} else {
		delete(s.groups, name)
	}
	sh := &s.sh
	// VIPs.
	plus, minus := diffSorted(distinct(from.vips, netip.Addr.Compare), distinct(to.vips, netip.Addr.Compare), netip.Addr.Compare)
	var vadd, vdel []netip.Addr
	for _, v := range plus {
		if sh.vipRefs[v]++; sh.vipRefs[v] == 1 {
			vadd = append(vadd, v)
		}
	}
	for _, v := range minus {
		if sh.vipRefs[v]--; sh.vipRefs[v] == 0 {
			delete(sh.vipRefs, v)
			vdel = append(vdel, v)
		}
	}
	sh.last.fromVIPs, sh.last.addVIPs, sh.last.delVIPs = sh.vips, vadd, vdel
	sh.vips = patch(sh.vips, vadd, vdel, netip.Addr.Compare)
	sh.last.toVIPs = sh.vips
	// Members: as computed for tighten, unless the group changed otherwise.
	next, d := sh.memo.result, sh.memo.d
	if !sh.memo.ok || !sameMembers(sh.memo.from, from.members) || !sameMembers(sh.memo.to, to.members) || !sameMembers(sh.memo.base, sh.members) {
		d = sh.membersDelta(from.members, to.members)
		next = sh.membersAfter(&d)
	}
	sh.last.from, sh.last.to, sh.last.d = sh.members, next, d
	sh.memo.ok = false
	sh.memo.from, sh.memo.to, sh.memo.base, sh.memo.result, sh.memo.d = netfilter.Members{}, netfilter.Members{}, netfilter.Members{}, netfilter.Members{}, memberDelta{}
	fl, tl := lists(&from.members), lists(&to.members)
	for l := range nLists {
		refs := sh.memberRefs[l]
		plus, minus := diffSorted(distinct(*fl[l], ipset.Entry.Compare), distinct(*tl[l], ipset.Entry.Compare), ipset.Entry.Compare)
		for _, e := range plus {
			refs[e]++
		}
		for _, e := range minus {
			if refs[e]--; refs[e] == 0 {
				delete(refs, e)
			}
		}
	}
	sh.members = next
}

// distinct returns a sorted copy of a group's list without duplicates (the
// list itself is the caller's and stays as it is).
func distinct[T any](xs []T, cmp func(a, b T) int) []T {
	if len(xs) == 0 {
		return nil
	}
	out := slices.Clone(xs)
	slices.SortFunc(out, cmp)
	return slices.CompactFunc(out, func(a, b T) bool { return cmp(a, b) == 0 })
}

// diffSorted returns what b has that a has not, and what a has that b has
// not; both sorted and without duplicates.
func diffSorted[T any](a, b []T, cmp func(a, b T) int) (plus, minus []T) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && cmp(a[i], b[j]) < 0:
			minus = append(minus, a[i])
			i++
		case i == len(a) || cmp(a[i], b[j]) > 0:
			plus = append(plus, b[j])
			j++
		default:
			i, j = i+1, j+1
		}
	}
	return plus, minus
}

// patch returns base, sorted, with add inserted and del removed (both
// sorted; add holds nothing of base, del only what base holds). base is
// returned as it is when neither changes it, else a new list: one copy,
// the elements in between moved in blocks.
func patch[T any](base, add, del []T, cmp func(a, b T) int) []T {
	if len(add) == 0 && len(del) == 0 {
		return base
	}
	out := make([]T, 0, len(base)+len(add))
	i := 0
	for len(add) > 0 || len(del) > 0 {
		isAdd := len(del) == 0 || len(add) > 0 && cmp(add[0], del[0]) < 0
		var e T
		if isAdd {
			e, add = add[0], add[1:]
		} else {
			e, del = del[0], del[1:]
		}
		j, found := slices.BinarySearchFunc(base[i:], e, cmp)
		out = append(out, base[i:i+j]...)
		i += j
		switch {
		case isAdd && !found:
			out = append(out, e)
		case !isAdd && found:
			i++
		}
	}
	return append(out, base[i:]...)
}

// sameAddrs and sameMembers compare lists, at no cost when they are the
// same slices (what was written is the wanted list itself, shared).
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.Equal(a, b)
}

func sameEntries(a, b []ipset.Entry) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.Equal(a, b)
}

func sameMembers(a, b netfilter.Members) bool {
	return sameEntries(a.Masquerade, b.Masquerade) && sameEntries(a.Restricted, b.Restricted) && sameEntries(a.Allowed, b.Allowed) &&
		sameEntries(a.Hairpin, b.Hairpin)
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
