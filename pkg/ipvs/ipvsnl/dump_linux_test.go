package ipvsnl

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/kubelvs/kubelvs/internal/nlattr"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// serviceReply is the attributes of one reply of a service dump, as the
// kernel writes them (ip_vs_genl_fill_service): the address in a 16-byte
// union, the flags with their mask, statistics that are not read.
func serviceReply(af uint16, addr []byte, port uint16, sched string, flags, timeout, netmask uint32) []byte {
	return nested(nil, ipvsCmdAttrService, func(b []byte) []byte {
		b = nlattr.Attr(b, ipvsSvcAttrAF, nlattr.U16(af)...)
		b = nlattr.Attr(b, ipvsSvcAttrProto, nlattr.U16(syscall.IPPROTO_TCP)...)
		b = nlattr.Attr(b, ipvsSvcAttrAddr, addr...)
		b = nlattr.Attr(b, ipvsSvcAttrPort, nlattr.BE16(port)...)
		b = nlattr.Attr(b, ipvsSvcAttrSched, append([]byte(sched), 0)...)
		b = nlattr.Attr(b, ipvsSvcAttrFlags, append(nlattr.U32(flags), nlattr.U32(^uint32(0))...)...)
		b = nlattr.Attr(b, ipvsSvcAttrTimeout, nlattr.U32(timeout)...)
		b = nlattr.Attr(b, ipvsSvcAttrNetmask, nlattr.U32(netmask)...)
		return nested(b, 10, func(b []byte) []byte { return nlattr.Attr(b, 1, nlattr.U32(7)...) }) // IPVS_SVC_ATTR_STATS
	})
}

func TestParseService(t *testing.T) {
	v4 := make([]byte, 16)
	copy(v4, []byte{10, 96, 0, 1})
	s, err := parseService(serviceReply(syscall.AF_INET, v4, 443, "wrr", uint32(ipvs.FlagPersistent), 300, netmask(netip.MustParseAddr("10.96.0.1"), 24)))
	if err != nil {
		t.Fatal(err)
	}
	got, ok := fromService(&s)
	want := ipvs.VirtualServer{Address: netip.MustParseAddr("10.96.0.1"), Protocol: ipvs.TCP, Port: 443, Scheduler: "wrr", Timeout: 300, NetmaskBits: 24}
	if !ok || got != want {
		t.Fatalf("IPv4: got %+v (%v), want %+v", got, ok, want)
	}

	v6 := netip.MustParseAddr("fd00::1").As16()
	s, err = parseService(serviceReply(syscall.AF_INET6, v6[:], 80, "rr", 0, 0, 128))
	if err != nil {
		t.Fatal(err)
	}
	got, ok = fromService(&s)
	want = ipvs.VirtualServer{Address: netip.MustParseAddr("fd00::1"), Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}
	if !ok || got != want {
		t.Fatalf("IPv6: got %+v (%v), want %+v", got, ok, want)
	}

	for name, reply := range map[string][]byte{
		"no service":             nlattr.Attr(nil, ipvsCmdAttrDest),
		"a short address":        serviceReply(syscall.AF_INET6, v4[:8], 80, "rr", 0, 0, 0),
		"an unknown family":      serviceReply(99, v4, 80, "rr", 0, 0, 0),
		"a short port":           nested(nil, ipvsCmdAttrService, func(b []byte) []byte { return nlattr.Attr(b, ipvsSvcAttrPort, 1) }),
		"a short timeout":        nested(nil, ipvsCmdAttrService, func(b []byte) []byte { return nlattr.Attr(b, ipvsSvcAttrTimeout, 1, 2) }),
		"a short address family": nested(nil, ipvsCmdAttrService, func(b []byte) []byte { return nlattr.Attr(b, ipvsSvcAttrAF, 2) }),
	} {
		if _, err := parseService(reply); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want errMalformed", name, err)
		}
	}
}

func destReply(af uint16, addr []byte, port uint16, fwd, weight uint32) []byte {
	return nested(nil, ipvsCmdAttrDest, func(b []byte) []byte {
		b = nlattr.Attr(b, ipvsDestAttrAddr, addr...)
		b = nlattr.Attr(b, ipvsDestAttrPort, nlattr.BE16(port)...)
		b = nlattr.Attr(b, ipvsDestAttrFwd, nlattr.U32(fwd)...)
		b = nlattr.Attr(b, ipvsDestAttrWeight, nlattr.U32(weight)...)
		b = nlattr.Attr(b, ipvsDestAttrUpper, nlattr.U32(0)...)
		b = nlattr.Attr(b, ipvsDestAttrLower, nlattr.U32(0)...)
		b = nlattr.Attr(b, ipvsDestAttrActive, nlattr.U32(3)...)
		b = nlattr.Attr(b, ipvsDestAttrInactive, nlattr.U32(4)...)
		if af != 0 {
			b = nlattr.Attr(b, ipvsDestAttrAF, nlattr.U16(af)...)
		}
		return b
	})
}

func TestParseDest(t *testing.T) {
	v4 := make([]byte, 16)
	copy(v4, []byte{10, 1, 0, 9})
	v6 := netip.MustParseAddr("fd00::9").As16()
	for name, c := range map[string]struct {
		reply []byte
		want  ipvs.RealServer
	}{
		"IPv4":                    {destReply(syscall.AF_INET, v4, 8080, 0, 65535), ipvs.RealServer{Address: netip.MustParseAddr("10.1.0.9"), Port: 8080, Weight: 65535, Forwarding: ipvs.Masquerade, ActiveConns: 3, InactiveConns: 4}},
		"IPv6, tunnel":            {destReply(syscall.AF_INET6, v6[:], 80, 2, 1), ipvs.RealServer{Address: netip.MustParseAddr("fd00::9"), Port: 80, Weight: 1, Forwarding: ipvs.Tunnel, ActiveConns: 3, InactiveConns: 4}},
		"IPv4, no family (<3.18)": {destReply(0, v4, 8080, 3, 0), ipvs.RealServer{Address: netip.MustParseAddr("10.1.0.9"), Port: 8080, Forwarding: ipvs.DirectRoute, ActiveConns: 3, InactiveConns: 4}},
		"IPv6, no family (<3.18)": {destReply(0, v6[:], 80, 0, 5), ipvs.RealServer{Address: netip.MustParseAddr("fd00::9"), Port: 80, Weight: 5, Forwarding: ipvs.Masquerade, ActiveConns: 3, InactiveConns: 4}},
	} {
		d, err := parseDest(c.reply)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := fromDest(&d); got != c.want {
			t.Errorf("%s: got %+v, want %+v", name, got, c.want)
		}
	}
	for name, reply := range map[string][]byte{
		"no destination":  nlattr.Attr(nil, ipvsCmdAttrService),
		"no address":      nested(nil, ipvsCmdAttrDest, func(b []byte) []byte { return nlattr.Attr(b, ipvsDestAttrPort, nlattr.BE16(80)...) }),
		"a short address": destReply(syscall.AF_INET6, v4[:4], 80, 0, 1),
		"a short weight":  nested(nil, ipvsCmdAttrDest, func(b []byte) []byte { return nlattr.Attr(b, ipvsDestAttrWeight, 1) }),
	} {
		if _, err := parseDest(reply); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want errMalformed", name, err)
		}
	}
}

// FuzzParseDump: no reply, however malformed, makes the parsers panic; a
// reply they accept has an address of its family.
func FuzzParseDump(f *testing.F) {
	v4 := make([]byte, 16)
	copy(v4, []byte{10, 96, 0, 1})
	f.Add(serviceReply(syscall.AF_INET, v4, 80, "rr", 0, 0, 0))
	f.Add(destReply(0, v4, 80, 0, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := parseService(b); err == nil && s.Address != nil {
			if (s.AddressFamily == syscall.AF_INET) != (len(s.Address) == 4) {
				t.Fatalf("service of family %d with a %d-byte address", s.AddressFamily, len(s.Address))
			}
			fromService(&s)
		}
		if d, err := parseDest(b); err == nil {
			if (d.AddressFamily == syscall.AF_INET) != (len(d.Address) == 4) {
				t.Fatalf("destination of family %d with a %d-byte address", d.AddressFamily, len(d.Address))
			}
			fromDest(&d)
		}
	})
}
