// Package pools answers what the controller and the agents will ask of
// AddressPools: does a pool hold an address (one it does not avoid), and
// which pools admit a namespace. A pool is parsed once into sorted,
// disjoint ranges with the avoided addresses taken out, and a compiled
// namespace selector; a lookup is a binary search. It is pure: no I/O.
//
// An AddressPool that validation.AddressPool refuses is no Pool: New
// returns its errors, and a caller that skips it admits nothing from it.
package pools

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// Range is every address from First to Last, both included, of one family.
type Range struct {
	First, Last netip.Addr
}

// String renders the range as first-last, or one address.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Pool is a valid AddressPool, ready for lookups.
type Pool struct {
	// Name of the AddressPool.
	Name string
	// AutoAssign is spec.autoAssign, defaulted.
	AutoAssign bool
	// BGP and Layer2 are spec.announce: how the pool's addresses are made
	// reachable from outside the nodes.
	BGP, Layer2 bool
	// layer2Nodes is spec.announce.layer2.nodeSelector (nil: every node).
	layer2Nodes labels.Selector

	ranges   []Range // sorted, disjoint, not adjacent, avoided addresses taken out
	selector labels.Selector
}

// New parses an AddressPool. It refuses what validation.AddressPool
// refuses, with those errors.
func New(ap *lvsv1.AddressPool) (*Pool, error) {
	if errs := validation.AddressPool(ap); len(errs) > 0 {
		return nil, fmt.Errorf("AddressPool %s: %w", ap.Name, errs.ToAggregate())
	}
	var blocks, avoid []Range
	for _, c := range ap.Spec.CIDRs {
		p, err := validation.PoolCIDR(string(c))
		if err != nil {
			return nil, fmt.Errorf("AddressPool %s: cidr %s: %w", ap.Name, c, err)
		}
		blocks = append(blocks, prefixRange(p))
	}
	for _, r := range ap.Spec.Ranges {
		f, l, err := validation.PoolRange(string(r.First), string(r.Last))
		if err != nil {
			return nil, fmt.Errorf("AddressPool %s: range %s-%s: %w", ap.Name, r.First, r.Last, err)
		}
		blocks = append(blocks, Range{f, l})
	}
	for _, a := range ap.Spec.Avoid {
		p, err := validation.AddressOrCIDR(string(a))
		if err != nil {
			return nil, fmt.Errorf("AddressPool %s: avoid %s: %w", ap.Name, a, err)
		}
		avoid = append(avoid, prefixRange(p))
	}
	sel, err := metav1.LabelSelectorAsSelector(ap.Spec.NamespaceSelector.AsMetav1())
	if err != nil {
		return nil, fmt.Errorf("AddressPool %s: namespaceSelector: %w", ap.Name, err)
	}
	auto := lvsv1.DefaultPoolAutoAssign
	if a := ap.Spec.AutoAssign; a != nil {
		auto = *a
	}
	p := &Pool{Name: ap.Name, AutoAssign: auto, ranges: subtract(merge(blocks), merge(avoid)), selector: sel}
	if an := ap.Spec.Announce; an != nil {
		p.BGP, p.Layer2 = an.BGP != nil, an.Layer2 != nil
		if an.Layer2 != nil && an.Layer2.NodeSelector != nil {
			ns, err := metav1.LabelSelectorAsSelector(an.Layer2.NodeSelector.AsMetav1())
			if err != nil {
				return nil, fmt.Errorf("AddressPool %s: announce.layer2.nodeSelector: %w", ap.Name, err)
			}
			p.layer2Nodes = ns
		}
	}
	return p, nil
}

// Contains reports whether the pool holds a and does not avoid it. An
// IPv4-mapped IPv6 address is taken as its IPv4 address, and a zone is
// ignored.
func (p *Pool) Contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	i := sort.Search(len(p.ranges), func(i int) bool { return !p.ranges[i].Last.Less(a) })
	return i < len(p.ranges) && !a.Less(p.ranges[i].First) && p.ranges[i].First.Is4() == a.Is4()
}

// Admits reports whether the pool's namespaceSelector selects the
// namespace with these labels. The namespace's name counts as its label
// kubernetes.io/metadata.name, which the API server sets on every
// namespace, whether or not nsLabels has it.
func (p *Pool) Admits(namespace string, nsLabels map[string]string) bool {
	if p.selector.Empty() {
		return true
	}
	return p.selector.Matches(withName(namespace, nsLabels))
}

// Ranges returns the addresses the pool can give: its CIDRs and ranges,
// merged and sorted (IPv4 first), without the avoided addresses.
func (p *Pool) Ranges() []Range { return slices.Clone(p.ranges) }

// String renders the pool's name and ranges.
func (p *Pool) String() string {
	rs := make([]string, len(p.ranges))
	for i, r := range p.ranges {
		rs[i] = r.String()
	}
	return fmt.Sprintf("%s[%s]", p.Name, strings.Join(rs, ","))
}

// Admitting returns the pools that admit the namespace, in their order.
func Admitting(pools []*Pool, namespace string, nsLabels map[string]string) []*Pool {
	l := withName(namespace, nsLabels)
	var out []*Pool
	for _, p := range pools {
		if p.selector.Empty() || p.selector.Matches(l) {
			out = append(out, p)
		}
	}
	return out
}

// Find returns the first of pools that admits the namespace and holds a,
// or nil: nil means the namespace may not use a.
func Find(pools []*Pool, namespace string, nsLabels map[string]string, a netip.Addr) *Pool {
	l := withName(namespace, nsLabels)
	for _, p := range pools {
		if p.Contains(a) && (p.selector.Empty() || p.selector.Matches(l)) {
			return p
		}
	}
	return nil
}

// Announce says how a VirtualService of the namespace announces a: in
// every way that some pool asks for that holds a and admits the namespace.
// layer2 is nil when no such pool asks for layer 2; otherwise it says
// whether a node, by its labels, may answer for a (some such pool's
// announce.layer2.nodeSelector selects it, or one has none).
func Announce(pools []*Pool, namespace string, nsLabels map[string]string, a netip.Addr) (bgp bool, layer2 func(nodeLabels map[string]string) bool) {
	l := withName(namespace, nsLabels)
	var sels []labels.Selector
	anyNode := false
	for _, p := range pools {
		if (!p.BGP && !p.Layer2) || !p.Contains(a) || !(p.selector.Empty() || p.selector.Matches(l)) {
			continue
		}
		bgp = bgp || p.BGP
		if p.Layer2 {
			if p.layer2Nodes == nil {
				anyNode = true
			} else {
				sels = append(sels, p.layer2Nodes)
			}
		}
	}
	switch {
	case anyNode:
		layer2 = func(map[string]string) bool { return true }
	case len(sels) > 0:
		layer2 = func(nodeLabels map[string]string) bool {
			for _, s := range sels {
				if s.Matches(labels.Set(nodeLabels)) {
					return true
				}
			}
			return false
		}
	}
	return bgp, layer2
}

// withName returns nsLabels with kubernetes.io/metadata.name set to the
// namespace's name, copying only when it must.
func withName(namespace string, nsLabels map[string]string) labels.Set {
	if v, ok := nsLabels[corev1.LabelMetadataName]; ok && v == namespace {
		return nsLabels
	}
	l := make(labels.Set, len(nsLabels)+1)
	for k, v := range nsLabels {
		l[k] = v
	}
	l[corev1.LabelMetadataName] = namespace
	return l
}

// prefixRange returns the first and last address of a network.
func prefixRange(p netip.Prefix) Range {
	first := p.Masked().Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{first, last}
}

// merge sorts ranges and joins those that overlap or touch.
func merge(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return a.First.Compare(b.First) })
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 {
			cur := &out[n-1]
			next := cur.Last.Next() // invalid after the last address of a family
			if cur.Last.Is4() == r.First.Is4() && (!cur.Last.Less(r.First) || r.First == next) {
				if cur.Last.Less(r.Last) {
					cur.Last = r.Last
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// subtract returns what of rs (sorted, disjoint) is not in avoid (sorted,
// disjoint).
func subtract(rs, avoid []Range) []Range {
	var out []Range
	for _, r := range rs {
		first := r.First
		for _, a := range avoid {
			if a.First.Is4() != r.First.Is4() || a.Last.Less(first) {
				continue // another family, or before what is left of r
			}
			if r.Last.Less(a.First) {
				break // after r
			}
			if first.Less(a.First) {
				out = append(out, Range{first, a.First.Prev()})
			}
			first = a.Last.Next()
			if !first.IsValid() || r.Last.Less(first) {
				break // the rest of r is avoided
			}
		}
		if first.IsValid() && !r.Last.Less(first) && first.Is4() == r.First.Is4() {
			out = append(out, Range{first, r.Last})
		}
	}
	return out
}

// Parse makes Pools of AddressPools, sorted by name so that every reader
// (the controller and each agent) takes them in the same order. A pool that
// validation refuses admits nothing: it is left out, and its errors are
// returned, one per pool, naming it.
func Parse(items []lvsv1.AddressPool) ([]*Pool, []error) {
	out := make([]*Pool, 0, len(items))
	var errs []error
	for i := range items {
		p, err := New(&items[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("AddressPool %s: %w", items[i].Name, err))
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Pool) int { return strings.Compare(a.Name, b.Name) })
	return out, errs
}

// Check is the rule the controller and every agent apply, by this one
// function, before an address may be bound: each address must lie in a
// pool (not avoided by it) that admits the namespace. It returns one
// message per address that no pool admits, nil when all are admitted. An
// address that does not parse is refused too (validation refuses it first).
func Check(pools []*Pool, namespace string, nsLabels map[string]string, addrs []lvsv1.IPAddress) []string {
	var out []string
	for _, s := range addrs {
		a, err := netip.ParseAddr(string(s))
		if err != nil {
			out = append(out, fmt.Sprintf("address %q does not parse", s))
			continue
		}
		if Find(pools, namespace, nsLabels, a) != nil {
			continue
		}
		switch holders := holding(pools, a); len(holders) {
		case 0:
			out = append(out, fmt.Sprintf("address %s: no AddressPool holds it", s))
		case 1:
			out = append(out, fmt.Sprintf("address %s: AddressPool %s holds it but does not admit namespace %s", s, holders[0], namespace))
		default:
			out = append(out, fmt.Sprintf("address %s: AddressPools %s hold it but do not admit namespace %s",
				s, strings.Join(holders, ", "), namespace))
		}
	}
	return out
}

// holding names the pools that hold a, whoever they admit (at most 3).
func holding(pools []*Pool, a netip.Addr) []string {
	var out []string
	for _, p := range pools {
		if p.Contains(a) {
			if len(out) == 3 {
				return append(out, "…")
			}
			out = append(out, p.Name)
		}
	}
	return out
}
