package validation

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// Limits of an AddressPool, the same as the CRD's.
const (
	MaxPoolCIDRs           = 64
	MaxPoolRanges          = 32
	MaxPoolAvoid           = 64
	MaxSelectorLabels      = 32
	MaxSelectorExpressions = 16
	MaxSelectorValues      = 64
	maxLabelKeyLength      = 317 // a 253-character prefix, "/" and a 63-character name
	maxAddressOrCIDRLength = 49
)

// nonUnicast are the networks whose addresses Address refuses: a pool may
// hold none of them, so that every address it admits could be a
// VirtualService's.
var nonUnicast = []struct {
	net  netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "reserved"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// AddressPool returns everything that is wrong with an AddressPool, each
// naming its field; empty means the pool can be used. It repeats every
// rule of the CRD and adds the one the CRD cannot afford: the syntax of
// namespaceSelector.matchLabels keys. Like VirtualService, it quotes no
// value at more than 64 characters.
func AddressPool(p *lvsv1.AddressPool) field.ErrorList {
	spec := &p.Spec
	sp := field.NewPath("spec")
	var errs field.ErrorList
	if len(spec.CIDRs) == 0 && len(spec.Ranges) == 0 {
		errs = append(errs, field.Required(sp, "at least one CIDR or range is required"))
	}
	errs = append(errs, poolCIDRs(spec.CIDRs, sp.Child("cidrs"))...)
	errs = append(errs, poolRanges(spec.Ranges, sp.Child("ranges"))...)
	errs = append(errs, poolAvoid(spec.Avoid, sp.Child("avoid"))...)
	if s := spec.NamespaceSelector; s != nil {
		errs = append(errs, LabelSelector(s, sp.Child("namespaceSelector"))...)
	}
	if an := spec.Announce; an != nil && an.Layer2 != nil && an.Layer2.NodeSelector != nil {
		errs = append(errs, LabelSelector(an.Layer2.NodeSelector, sp.Child("announce", "layer2", "nodeSelector"))...)
	}
	return errs
}

// PoolCIDR parses a network of an AddressPool: a canonical CIDR without
// host bits, of unicast addresses only.
func PoolCIDR(s string) (netip.Prefix, error) {
	pfx, err := networkOrAddress(s, true)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, n := range nonUnicast {
		if n.net.Overlaps(pfx) {
			return netip.Prefix{}, fmt.Errorf("must hold only unicast addresses: it overlaps %s (%s)", n.net, n.what)
		}
	}
	return pfx, nil
}

// AddressOrCIDR parses an entry of an AddressPool's avoid list: a
// canonical address (returned as a /32 or /128) or a canonical CIDR
// without host bits.
func AddressOrCIDR(s string) (netip.Prefix, error) {
	return networkOrAddress(s, false)
}

// networkOrAddress parses a canonical CIDR (and, unless cidrOnly, a
// canonical address) with the messages of the CRD's rules.
func networkOrAddress(s string, cidrOnly bool) (netip.Prefix, error) {
	what := "an IP address or a CIDR, e.g. 192.0.2.1 or 192.0.2.0/28"
	if cidrOnly {
		what = "a valid CIDR, e.g. 192.0.2.0/24 or 2001:db8::/64"
	}
	if len(s) > maxAddressOrCIDRLength {
		return netip.Prefix{}, fmt.Errorf("must be %s (at most %d characters)", what, maxAddressOrCIDRLength)
	}
	if !strings.Contains(s, "/") {
		if cidrOnly {
			return netip.Prefix{}, fmt.Errorf("must be %s", what)
		}
		addr, err := netip.ParseAddr(s)
		switch {
		case err != nil || addr.Zone() != "":
			return netip.Prefix{}, fmt.Errorf("must be %s", what)
		case addr.Is4In6():
			return netip.Prefix{}, fmt.Errorf("is an IPv4-mapped IPv6 address: write the IPv4 address %s instead", addr.Unmap())
		case addr.String() != s:
			return netip.Prefix{}, fmt.Errorf("must be an IP address in canonical form (%s)", addr)
		}
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("must be %s", what)
	case pfx.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("is an IPv4-mapped IPv6 network: write it as an IPv4 CIDR")
	case pfx.Masked() != pfx:
		return netip.Prefix{}, fmt.Errorf("must be a network address: no bits set after the prefix length (%s)", pfx.Masked())
	case pfx.String() != s:
		return netip.Prefix{}, fmt.Errorf("must be a CIDR in canonical form (%s)", pfx)
	}
	return pfx, nil
}

func poolCIDRs(cidrs []lvsv1.PoolCIDR, cp *field.Path) field.ErrorList {
	return setOf(cidrs, cp, MaxPoolCIDRs, func(c string) error { _, err := PoolCIDR(c); return err })
}

// setOf checks a list used as a set: at most max items, none twice, each
// one accepted by parse.
func setOf[T ~string](items []T, p *field.Path, maxItems int, parse func(string) error) field.ErrorList {
	var errs field.ErrorList
	if len(items) > maxItems {
		return append(errs, field.TooMany(p, len(items), maxItems))
	}
	seen := map[T]bool{}
	for i, it := range items {
		if seen[it] {
			errs = append(errs, field.Duplicate(p.Index(i), short(string(it))))
		}
		seen[it] = true
		if err := parse(string(it)); err != nil {
			errs = append(errs, field.Invalid(p.Index(i), short(string(it)), err.Error()))
		}
	}
	return errs
}

// PoolRange parses a range of an AddressPool: two addresses as Address
// takes them, of one family, first not after last, and no non-unicast
// network between them.
func PoolRange(first, last string) (netip.Addr, netip.Addr, error) {
	f, err := Address(first)
	if err != nil {
		return f, f, fmt.Errorf("first: %w", err)
	}
	l, err := Address(last)
	if err != nil {
		return f, l, fmt.Errorf("last: %w", err)
	}
	if f.Is4() != l.Is4() {
		return f, l, fmt.Errorf("first and last must be of the same IP family")
	}
	if l.Less(f) {
		return f, l, fmt.Errorf("first must not be after last")
	}
	for _, n := range nonUnicast {
		if n.net.Addr().Is4() == f.Is4() && f.Less(n.net.Addr()) && lastOf(n.net).Less(l) {
			return f, l, fmt.Errorf("must hold only unicast addresses: the range spans %s (%s)", n.net, n.what)
		}
	}
	return f, l, nil
}

// lastOf returns the last address of a network.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func poolRanges(ranges []lvsv1.AddressRange, rp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(ranges) > MaxPoolRanges {
		return append(errs, field.TooMany(rp, len(ranges), MaxPoolRanges))
	}
	seen := map[lvsv1.IPAddress]bool{}
	for i, r := range ranges {
		ip := rp.Index(i)
		if seen[r.First] {
			errs = append(errs, field.Duplicate(ip, short(string(r.First))))
		}
		seen[r.First] = true
		// The ends first, each under its own field, as the CRD names them.
		bad := false
		for _, end := range []struct {
			name string
			addr lvsv1.IPAddress
		}{{"first", r.First}, {"last", r.Last}} {
			if _, err := Address(string(end.addr)); err != nil {
				errs = append(errs, field.Invalid(ip.Child(end.name), short(string(end.addr)), err.Error()))
				bad = true
			}
		}
		if bad {
			continue
		}
		if _, _, err := PoolRange(string(r.First), string(r.Last)); err != nil {
			errs = append(errs, field.Invalid(ip, r.First+"-"+r.Last, err.Error()))
		}
	}
	return errs
}

func poolAvoid(avoid []lvsv1.AddressOrCIDR, ap *field.Path) field.ErrorList {
	return setOf(avoid, ap, MaxPoolAvoid, func(a string) error { _, err := AddressOrCIDR(a); return err })
}

// LabelSelector checks a selector as the CRD does, and the syntax of its
// matchLabels keys, which the CRD cannot afford to.
func LabelSelector(s *lvsv1.LabelSelector, sp *field.Path) field.ErrorList {
	var errs field.ErrorList
	lp := sp.Child("matchLabels")
	if len(s.MatchLabels) > MaxSelectorLabels {
		errs = append(errs, field.TooMany(lp, len(s.MatchLabels), MaxSelectorLabels))
	} else {
		keys := make([]string, 0, len(s.MatchLabels))
		for k := range s.MatchLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if msg := labelKey(k); msg != "" {
				errs = append(errs, field.Invalid(lp, short(k), "key: "+msg))
			}
			if msgs := k8svalidation.IsValidLabelValue(string(s.MatchLabels[k])); len(msgs) > 0 {
				errs = append(errs, field.Invalid(lp.Key(short(k)), short(string(s.MatchLabels[k])), strings.Join(msgs, "; ")))
			}
		}
	}
	ep := sp.Child("matchExpressions")
	if len(s.MatchExpressions) > MaxSelectorExpressions {
		return append(errs, field.TooMany(ep, len(s.MatchExpressions), MaxSelectorExpressions))
	}
	for i, e := range s.MatchExpressions {
		ip := ep.Index(i)
		if msg := labelKey(string(e.Key)); msg != "" {
			errs = append(errs, field.Invalid(ip.Child("key"), short(string(e.Key)), msg))
		}
		vp := ip.Child("values")
		switch e.Operator {
		case lvsv1.LabelSelectorOpIn, lvsv1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				errs = append(errs, field.Required(vp, "values must not be empty when the operator is In or NotIn"))
			}
		case lvsv1.LabelSelectorOpExists, lvsv1.LabelSelectorOpDoesNotExist:
			if len(e.Values) > 0 {
				errs = append(errs, field.Forbidden(vp, "values must be empty when the operator is Exists or DoesNotExist"))
			}
		default:
			errs = append(errs, field.NotSupported(ip.Child("operator"), short(string(e.Operator)), []string{"In", "NotIn", "Exists", "DoesNotExist"}))
		}
		if len(e.Values) > MaxSelectorValues {
			errs = append(errs, field.TooMany(vp, len(e.Values), MaxSelectorValues))
			continue
		}
		for j, v := range e.Values {
			if msgs := k8svalidation.IsValidLabelValue(string(v)); len(msgs) > 0 {
				errs = append(errs, field.Invalid(vp.Index(j), short(string(v)), strings.Join(msgs, "; ")))
			}
		}
	}
	return errs
}

// labelKey returns what is wrong with a label key, or "".
func labelKey(k string) string {
	if len(k) > maxLabelKeyLength {
		return fmt.Sprintf("must be at most %d characters", maxLabelKeyLength)
	}
	if msgs := k8svalidation.IsQualifiedName(k); len(msgs) > 0 {
		return strings.Join(msgs, "; ")
	}
	return ""
}
