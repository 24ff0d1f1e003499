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
// want, if they differ from what was last written (or always, when force
// is set: the writers then compare with the kernel). What the groups want
// and what was written are kept as counts and a record of where they
// differ (sharedState), so neither the check nor the write costs anything
// per other group: once a full sync has compared the shared state with
// the kernel, an unforced write is that difference (UpdateAddresses,
// UpdateMembers), the cost of the change and not of every VIP and member
// on the node. After a failed write the kernel may hold part of it, so the
// next write is whole again (vipsUnknown, membersUnknown), built from the
// counts.
func (s *Syncer) syncShared(ctx context.Context, force bool) error {
	if !force && !s.sharedDirty {
		s.metrics.setProgrammed(len(s.services), s.realCount())
		return nil
	}
	sh := &s.sh
	update := !force && s.sharedChecked
	// VIPs before members: a VIP that goes away stops taking traffic
	// before its sourceRanges are lifted (tighten put new restrictions in
	// place before anything was added).
	var errs []error
	s.sharedMu.Lock()
	if force || s.vipsUnknown || !sh.vips.inSync() {
		s.sharedGen++
		op := "sync"
		var err error
		if update && !s.vipsUnknown {
			op = "update"
			add, del := sh.vips.diff(netip.Addr.Compare)
			err = s.k.VIPs.UpdateAddresses(ctx, add, del)
			if err == nil {
				sh.vips.wrote(add, del)
			}
		} else {
			err = s.k.VIPs.SyncAddresses(ctx, sh.vips.wanted(netip.Addr.Compare))
			if err == nil {
				sh.vips.wroteWanted()
			}
		}
		s.vipsUnknown = err != nil
		s.metrics.op("vip", op, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("VIPs: %w", err))
		}
	}
	s.sharedMu.Unlock()
	s.sharedMu.Lock()
	if force || s.membersUnknown || !sh.membersInSync() {
		s.sharedGen++
		op := "sync"
		var err error
		if update && !s.membersUnknown {
			op = "update"
			var add, del netfilter.Members
			al, dl := lists(&add), lists(&del)
			for l := range nLists {
				*al[l], *dl[l] = sh.members[l].diff(ipset.Entry.Compare)
			}
			err = s.k.Netfilter.UpdateMembers(ctx, add, del)
			if err == nil {
				sh.wroteMembers(add, del)
			}
		} else {
			err = s.k.Netfilter.SyncMembers(ctx, sh.wantedMembers())
			if err == nil {
				for l := range nLists {
					sh.members[l].wroteWanted()
				}
			}
		}
		s.membersUnknown = err != nil
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
// itself after the VIPs.
//
// next is what the groups will want: a group's change d to what they want
// now (SyncGroup, create), or, from a full sync, the whole of it (all). A
// change is written as its difference from what the ipsets hold
// (UpdateMembers), found from d and where what was written differs from
// what the groups want, at the cost of the change. Until the first full
// sync has compared the shared state with the kernel, what the ipsets hold
// is not known here and next is written whole, as it is; after a failed
// write of the members the kernel may hold part of it, and the members
// are written whole too.
func (s *Syncer) tighten(ctx context.Context, d *memberDelta, all *netfilter.Members) error {
	sh := &s.sh
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	var pre, add, del netfilter.Members
	update := false
	switch {
	case d != nil && s.sharedChecked && !s.membersUnknown:
		add, del = sh.preDiff(d)
		if membersEmpty(add) && membersEmpty(del) {
			return nil
		}
		update = true
	case d != nil:
		next := sh.wantedMembers()
		nl := lists(&next)
		for l := range nLists {
			*nl[l] = patch(*nl[l], d.add[l], d.del[l], ipset.Entry.Compare)
		}
		all = &next
		fallthrough
	default:
		pre = *all
		if s.sharedChecked {
			cur := sortMembers(sh.heldMembers())
			pre = netfilter.Members{
				Masquerade: union(cur.Masquerade, all.Masquerade),
				Restricted: union(cur.Restricted, all.Restricted),
				Allowed:    union(all.Allowed, lifted(cur, *all)),
				Hairpin:    union(cur.Hairpin, all.Hairpin),
			}
			if membersEqual(pre, cur) && !s.membersUnknown {
				return nil
			}
		}
	}
	r := trace.StartRegion(ctx, "kubelvs: ipset members before the IPVS writes")
	defer r.End()
	s.sharedGen++
	op := "sync"
	var err error
	if update {
		op = "update"
		err = s.k.Netfilter.UpdateMembers(ctx, add, del)
		if err == nil {
			sh.wroteMembers(add, del)
		}
	} else {
		err = s.k.Netfilter.SyncMembers(ctx, pre)
		if err == nil {
			sh.wroteWholeMembers(pre)
		}
	}
	s.membersUnknown = err != nil
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

func membersEmpty(m netfilter.Members) bool {
	return len(m.Masquerade)+len(m.Restricted)+len(m.Allowed)+len(m.Hairpin) == 0
}

// sharedState is what all groups together want of the shared state, and
// what was last written of it, kept as groups change and as it is written
// rather than merged from every group: a count of the groups that want
// each VIP and each ipset member, and the few entries where what was
// written differs from what is wanted (counted.off). A group's change
// costs the difference between its old and its new VIPs and members,
// whatever the number of groups: nothing is copied or compared per other
// group. Only a whole write (a full sync, Verify, the write after a
// failure) builds the lists, from the counts.
type sharedState struct {
	vips    counted[netip.Addr]
	members [nLists]counted[ipset.Entry]
}

func newSharedState() sharedState {
	sh := sharedState{vips: newCounted[netip.Addr]()}
	for l := range sh.members {
		sh.members[l] = newCounted[ipset.Entry]()
	}
	return sh
}

// counted is one kind of shared entry: how many groups want each (refs),
// and, for the entries whose presence in the kernel as last written is
// not what the groups want, that presence (off: true for one written but
// not wanted, false for one wanted but not written). An entry not in off
// was written if and only if it is wanted, so off is empty when what was
// written is what is wanted, and it is the difference to write.
type counted[T comparable] struct {
	refs map[T]int
	off  map[T]bool
}

func newCounted[T comparable]() counted[T] {
	return counted[T]{refs: map[T]int{}, off: map[T]bool{}}
}

func (c *counted[T]) wants(e T) bool { return c.refs[e] > 0 }

// holds reports whether e was written (and not removed since).
func (c *counted[T]) holds(e T) bool {
	if h, ok := c.off[e]; ok {
		return h
	}
	return c.wants(e)
}

// set records whether e is now written, held, keeping off to the entries
// where that is not whether it is wanted.
func (c *counted[T]) set(e T, held bool) {
	if held == c.wants(e) {
		delete(c.off, e)
	} else {
		c.off[e] = held
	}
}

// add and drop count one group more or fewer wanting e; what was written
// stays as it was.
func (c *counted[T]) add(e T) {
	held := c.holds(e)
	c.refs[e]++
	c.set(e, held)
}

func (c *counted[T]) drop(e T) {
	held := c.holds(e)
	if c.refs[e]--; c.refs[e] <= 0 {
		delete(c.refs, e)
	}
	c.set(e, held)
}

func (c *counted[T]) inSync() bool { return len(c.off) == 0 }

// diff returns what to write to make what was written what is wanted:
// entries to add and entries to remove, each sorted.
func (c *counted[T]) diff(cmp func(a, b T) int) (add, del []T) {
	for e, held := range c.off {
		if held {
			del = append(del, e)
		} else {
			add = append(add, e)
		}
	}
	slices.SortFunc(add, cmp)
	slices.SortFunc(del, cmp)
	return add, del
}

// wrote records a successful write of add and del.
func (c *counted[T]) wrote(add, del []T) {
	for _, e := range del {
		c.set(e, false)
	}
	for _, e := range add {
		c.set(e, true) // an entry in both is added (the writers add last or skip its delete)
	}
}

// wroteWanted records a successful write of exactly the entries wanted.
func (c *counted[T]) wroteWanted() { clear(c.off) }

// wroteWhole records a successful write of exactly the entries es.
func (c *counted[T]) wroteWhole(es []T) {
	clear(c.off)
	in := make(map[T]struct{}, len(es))
	for _, e := range es {
		in[e] = struct{}{}
		if !c.wants(e) {
			c.off[e] = true
		}
	}
	for e := range c.refs {
		if _, ok := in[e]; !ok {
			c.off[e] = false
		}
	}
}

// wanted returns the entries wanted, sorted: for a whole write.
func (c *counted[T]) wanted(cmp func(a, b T) int) []T {
	out := make([]T, 0, len(c.refs))
	for e := range c.refs {
		out = append(out, e)
	}
	slices.SortFunc(out, cmp)
	return out
}

// held returns the entries last written, unsorted.
func (c *counted[T]) held() []T {
	out := make([]T, 0, len(c.refs)+len(c.off))
	for e := range c.refs {
		if h, ok := c.off[e]; !ok || h {
			out = append(out, e)
		}
	}
	for e, h := range c.off {
		if h {
			out = append(out, e) // written, not wanted: not in refs
		}
	}
	return out
}

func (sh *sharedState) membersInSync() bool {
	for l := range nLists {
		if !sh.members[l].inSync() {
			return false
		}
	}
	return true
}

// wantedMembers returns the members wanted, each list sorted (for a whole
// write); heldMembers those last written, unsorted (sortMembers sorts
// them), so that a copy taken under the lock is sorted outside it.
func (sh *sharedState) wantedMembers() netfilter.Members {
	var m netfilter.Members
	ml := lists(&m)
	for l := range nLists {
		*ml[l] = sh.members[l].wanted(ipset.Entry.Compare)
	}
	return m
}

func (sh *sharedState) heldMembers() netfilter.Members {
	var m netfilter.Members
	ml := lists(&m)
	for l := range nLists {
		*ml[l] = sh.members[l].held()
	}
	return m
}

func (sh *sharedState) wroteMembers(add, del netfilter.Members) {
	al, dl := lists(&add), lists(&del)
	for l := range nLists {
		sh.members[l].wrote(*al[l], *dl[l])
	}
}

func (sh *sharedState) wroteWholeMembers(m netfilter.Members) {
	ml := lists(&m)
	for l := range nLists {
		sh.members[l].wroteWhole(*ml[l])
	}
}

// memberDelta is how the wanted members change: entries no group wanted
// before (add) and entries no group wants any more (del), each sorted.
type memberDelta struct {
	add, del [nLists][]ipset.Entry
}

// membersDelta returns how the wanted members change when a group that
// wanted from wants to instead.
func (sh *sharedState) membersDelta(from, to netfilter.Members) memberDelta {
	var d memberDelta
	fl, tl := lists(&from), lists(&to)
	for l := range nLists {
		plus, minus := diffSorted(distinct(*fl[l], ipset.Entry.Compare), distinct(*tl[l], ipset.Entry.Compare), ipset.Entry.Compare)
		c := &sh.members[l]
		for _, e := range plus {
			if !c.wants(e) {
				d.add[l] = append(d.add[l], e)
			}
		}
		for _, e := range minus {
			if c.refs[e] == 1 {
				d.del[l] = append(d.del[l], e)
			}
		}
	}
	return d
}

// wantsAfter reports whether list l will have e once d is made.
func (sh *sharedState) wantsAfter(d *memberDelta, l int, e ipset.Entry) bool {
	if _, found := slices.BinarySearchFunc(d.add[l], e, ipset.Entry.Compare); found {
		return true
	}
	if _, found := slices.BinarySearchFunc(d.del[l], e, ipset.Entry.Compare); found {
		return false
	}
	return sh.members[l].wants(e)
}

// preDiff returns what tighten writes ahead of the change d, as the
// difference from what the ipsets hold (H) for the members next (N, what
// the groups want after d): masquerade, restricted and hairpin entries of
// N that H lacks; allowed ranges of N that H lacks, and those of H that N
// lacks for a VIP:port N still restricts (one it no longer restricts
// keeps its ranges until syncShared). H and N can differ only where H
// differs from what the groups want now (off) or d changes that, so only
// those entries are looked at.
func (sh *sharedState) preDiff(d *memberDelta) (add, del netfilter.Members) {
	al, dl := lists(&add), lists(&del)
	for l := range nLists {
		c := &sh.members[l]
		look := func(e ipset.Entry) {
			held, next := c.holds(e), sh.wantsAfter(d, l, e)
			switch {
			case next && !held:
				*al[l] = append(*al[l], e)
			case held && !next && l == listAllowed:
				k := ipset.Entry{IP: e.IP, Protocol: e.Protocol, Port: e.Port}
				if sh.wantsAfter(d, listRestricted, k) {
					*dl[l] = append(*dl[l], e)
				}
			}
		}
		for e := range c.off {
			look(e)
		}
		for _, es := range [][]ipset.Entry{d.add[l], d.del[l]} {
			for _, e := range es {
				if _, seen := c.off[e]; !seen {
					look(e)
				}
			}
		}
		slices.SortFunc(*al[l], ipset.Entry.Compare)
		slices.SortFunc(*dl[l], ipset.Entry.Compare)
	}
	return add, del
}

// setGroup records what a group now contributes (nil: nothing) and brings
// the shared state's counts up to date with its difference.
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
	plus, minus := diffSorted(distinct(from.vips, netip.Addr.Compare), distinct(to.vips, netip.Addr.Compare), netip.Addr.Compare)
	for _, v := range plus {
		sh.vips.add(v)
	}
	for _, v := range minus {
		sh.vips.drop(v)
	}
	fl, tl := lists(&from.members), lists(&to.members)
	for l := range nLists {
		c := &sh.members[l]
		plus, minus := diffSorted(distinct(*fl[l], ipset.Entry.Compare), distinct(*tl[l], ipset.Entry.Compare), ipset.Entry.Compare)
		for _, e := range plus {
			c.add(e)
		}
		for _, e := range minus {
			c.drop(e)
		}
	}
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
// sorted; add holds nothing of base, del only what base holds), as a new
// list unless neither changes it.
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
