package pools_test

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// FuzzNew parses pools of fuzzed CIDRs, a range and avoided entries. New
// must accept exactly what validation accepts; a Pool's ranges must be
// sorted, disjoint and not touching; and Contains must agree with a naive
// reading of the spec (in a CIDR or range, in no avoided entry) for the
// fuzzed address, the ends of each range and the addresses next to them.
func FuzzNew(f *testing.F) {
	f.Add("192.0.2.0/24", "2001:db8::/64", "198.51.100.10", "198.51.100.20", "192.0.2.0/30", "2001:db8::", []byte{192, 0, 2, 3})
	f.Add("10.0.0.0/8", "", "2001:db8::ffff", "2001:db8::1:0", "10.0.0.0/9", "2001:db8::1:0", []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add("fe00::/9", "223.255.255.0/24", "fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "223.255.255.255", "feff::/16", []byte{223, 255, 255, 255})
	f.Add("192.0.2.1/24", "::ffff:192.0.2.0/120", "10.0.0.10", "10.0.0.9", "gateway", "fe80::1%eth0", []byte{})
	f.Fuzz(func(t *testing.T, cidr1, cidr2, first, last, avoid1, avoid2 string, addr []byte) {
		spec := lvsv1.AddressPoolSpec{
			NamespaceSelector: &lvsv1.LabelSelector{},
			Ranges:            []lvsv1.AddressRange{{First: lvsv1.IPAddress(first), Last: lvsv1.IPAddress(last)}},
		}
		for _, c := range []string{cidr1, cidr2} {
			if c != "" {
				spec.CIDRs = append(spec.CIDRs, lvsv1.PoolCIDR(c))
			}
		}
		for _, a := range []string{avoid1, avoid2} {
			if a != "" {
				spec.Avoid = append(spec.Avoid, lvsv1.AddressOrCIDR(a))
			}
		}
		ap := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "fuzz"}, Spec: spec}
		p, err := pools.New(ap)
		if errs := validation.AddressPool(ap); (len(errs) == 0) != (err == nil) {
			t.Fatalf("New: %v; validation: %v", err, errs)
		}
		if err != nil {
			return
		}

		rs := p.Ranges()
		for i, r := range rs {
			if r.Last.Less(r.First) || r.First.Is4() != r.Last.Is4() {
				t.Fatalf("range %s is empty or of two families: %s", r, p)
			}
			if i > 0 && (!rs[i-1].Last.Less(r.First) || (rs[i-1].Last.Next() == r.First)) {
				t.Fatalf("ranges %s and %s overlap or touch: %s", rs[i-1], r, p)
			}
		}

		naive := func(a netip.Addr) bool {
			in := false
			for _, c := range spec.CIDRs {
				in = in || netip.MustParsePrefix(string(c)).Contains(a)
			}
			for _, r := range spec.Ranges {
				f, l := netip.MustParseAddr(string(r.First)), netip.MustParseAddr(string(r.Last))
				in = in || (f.Is4() == a.Is4() && !a.Less(f) && !l.Less(a))
			}
			for _, e := range spec.Avoid {
				if pfx, err := netip.ParsePrefix(string(e)); err == nil {
					in = in && !pfx.Contains(a)
				} else {
					in = in && netip.MustParseAddr(string(e)) != a
				}
			}
			return in
		}
		check := func(a netip.Addr) {
			if a.IsValid() && p.Contains(a) != naive(a.Unmap()) {
				t.Fatalf("Contains(%s) = %t, the spec says %t: %s", a, p.Contains(a), naive(a), p)
			}
		}
		if a, ok := netip.AddrFromSlice(addr); ok {
			check(a)
		}
		for _, r := range append(rs, pools.Range{First: netip.MustParseAddr(first), Last: netip.MustParseAddr(last)}) {
			check(r.First)
			check(r.First.Prev())
			check(r.Last)
			check(r.Last.Next())
		}
	})
}
