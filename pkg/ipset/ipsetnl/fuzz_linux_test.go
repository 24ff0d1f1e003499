package ipsetnl

import (
	"net"
	"net/netip"
	"testing"

	lib "github.com/lrh3321/ipset-go"

	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// FuzzEntryRoundTrip: what the kernel hands back for an entry (the
// ownership record's keys, the allow-lists) parses without a panic, and an
// entry written is read back as itself.
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add([]byte{10, 96, 0, 10}, uint8(6), uint16(80), []byte{192, 0, 2, 0}, uint8(24), uint8(0))
	f.Add(make([]byte, 16), uint8(17), uint16(53), make([]byte, 16), uint8(1), uint8(1))
	f.Add([]byte{1, 2, 3}, uint8(0), uint16(0), []byte{}, uint8(200), uint8(2))
	f.Fuzz(func(t *testing.T, ip []byte, proto uint8, port uint16, netIP []byte, bits uint8, kind uint8) {
		typ := []ipset.Type{ipset.HashIPPort, ipset.HashIPPortNet, ipset.HashNet}[int(kind)%3]
		// Arbitrary kernel input: an error or an entry, never a panic.
		p, pt := proto, port
		_, _ = fromLib(typ, &lib.Entry{IP: net.IP(ip), Protocol: &p, Port: &pt, IP2: net.IP(netIP), CIDR2: bits, CIDR: bits})

		a, ok := netip.AddrFromSlice(ip)
		n, ok2 := netip.AddrFromSlice(netIP)
		if !ok || !ok2 {
			return
		}
		a, n = a.Unmap(), n.Unmap()
		if int(bits) < 1 || int(bits) > n.BitLen() {
			return // the kernel holds no such prefix (and Build never writes /0)
		}
		var e ipset.Entry
		switch typ {
		case ipset.HashIPPort:
			e = ipset.Entry{IP: a, Protocol: proto, Port: port}
		case ipset.HashIPPortNet:
			e = ipset.Entry{IP: a, Protocol: proto, Port: port, Net: netip.PrefixFrom(n, int(bits)).Masked()}
		case ipset.HashNet:
			e = ipset.Entry{Net: netip.PrefixFrom(n, int(bits)).Masked()}
		}
		le := toLib(e)
		got, err := fromLib(typ, &le)
		if err != nil || got != e {
			t.Fatalf("%s: wrote %v, read back %v (%v)", typ, e, got, err)
		}
	})
}
