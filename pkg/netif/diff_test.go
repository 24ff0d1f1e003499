package netif

import (
	"net/netip"
	"slices"
	"testing"
)

func TestDiffAddresses(t *testing.T) {
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	for _, tc := range []struct {
		name                 string
		have, want, add, del []netip.Addr
	}{
		{"empty", nil, nil, nil, nil},
		{"all new", nil, a("10.0.0.2", "10.0.0.1"), a("10.0.0.2", "10.0.0.1"), nil},
		{"all gone", a("10.0.0.1", "fd00::1"), nil, nil, a("10.0.0.1", "fd00::1")},
		{"same", a("10.0.0.1", "fd00::1"), a("fd00::1", "10.0.0.1"), nil, nil},
		{"some of each", a("10.0.0.1", "10.0.0.2", "fd00::1"), a("10.0.0.3", "10.0.0.2", "fd00::2"), a("10.0.0.3", "fd00::2"), a("10.0.0.1", "fd00::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			add, del := DiffAddresses(tc.have, tc.want)
			if !slices.Equal(add, tc.add) || !slices.Equal(del, tc.del) {
				t.Fatalf("DiffAddresses(%v, %v) = add %v, del %v; want add %v, del %v", tc.have, tc.want, add, del, tc.add, tc.del)
			}
		})
	}
}

// BenchmarkDiffAddresses: the periodic resync compares kubelvs0's 10,000
// VIPs with the wanted ones, one of them new.
func BenchmarkDiffAddresses(b *testing.B) {
	const n = 10000
	have := make([]netip.Addr, n)
	for i := range have {
		have[i] = netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
	}
	want := append(slices.Clone(have[1:]), netip.AddrFrom4([4]byte{10, 97, 0, 1}))
	b.ReportAllocs()
	for b.Loop() {
		if add, del := DiffAddresses(have, want); len(add) != 1 || len(del) != 1 {
			b.Fatalf("add %v del %v", add, del)
		}
	}
}
