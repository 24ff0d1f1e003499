package layer2

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

var (
	ours   = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	theirs = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	vip    = netip.MustParseAddr("192.0.2.10")
	client = netip.MustParseAddr("192.0.2.2")
)

func frame(t *testing.T, src net.HardwareAddr, p *arp.Packet) []byte {
	t.Helper()
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := ethernet.Frame{Destination: ethernet.Broadcast, Source: src, EtherType: ethernet.EtherTypeARP, Payload: pb}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return append(b, make([]byte, 18)...) // the padding of a minimum-size frame
}

func TestARPQuestions(t *testing.T) {
	zero := make(net.HardwareAddr, 6)
	for _, c := range []struct {
		name string
		op   arp.Operation
		sha  net.HardwareAddr
		sip  netip.Addr
		tip  netip.Addr
		want bool
	}{
		{"who-has", arp.OperationRequest, theirs, client, vip, true},
		{"probe (RFC 5227, sender 0.0.0.0)", arp.OperationRequest, theirs, netip.IPv4Unspecified(), vip, true},
		{"reply", arp.OperationReply, theirs, client, vip, false},
		{"our own request", arp.OperationRequest, ours, client, vip, false},
		{"another node's announcement", arp.OperationRequest, theirs, vip, vip, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := arp.NewPacket(c.op, c.sha, c.sip, zero, c.tip)
			if err != nil {
				t.Fatal(err)
			}
			got, src, ok := parseARP(frame(t, c.sha, p))
			if !ok || src.String() != c.sha.String() {
				t.Fatalf("parse: %v %v", src, ok)
			}
			if q := arpQuestion(got, ours); q != c.want {
				t.Errorf("arpQuestion = %v, want %v (%+v)", q, c.want, got)
			}
		})
	}
	if _, _, ok := parseARP([]byte{1, 2, 3}); ok {
		t.Error("a short frame parsed")
	}
	ip := ethernet.Frame{Destination: ethernet.Broadcast, Source: theirs, EtherType: ethernet.EtherTypeIPv4, Payload: make([]byte, 46)}
	b, _ := ip.MarshalBinary()
	if _, _, ok := parseARP(b); ok {
		t.Error("an IPv4 frame parsed as ARP")
	}
}

func TestAdvertisement(t *testing.T) {
	target := netip.MustParseAddr("fd00::10")
	sll := &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: theirs}
	for _, c := range []struct {
		name          string
		src           netip.Addr
		opts          []ndp.Option
		ok, solicited bool
		dst           netip.Addr
	}{
		{"resolution", netip.MustParseAddr("fd00::2"), []ndp.Option{sll}, true, true, netip.MustParseAddr("fd00::2")},
		{"link-local source", netip.MustParseAddr("fe80::2"), []ndp.Option{sll}, true, true, netip.MustParseAddr("fe80::2")},
		{"unicast probe (NUD), no option", netip.MustParseAddr("fd00::2"), nil, true, true, netip.MustParseAddr("fd00::2")},
		{"duplicate address detection", netip.IPv6Unspecified(), nil, true, false, allNodes},
		{"source :: with a link-layer option", netip.IPv6Unspecified(), []ndp.Option{sll}, false, false, netip.Addr{}},
		{"our own", netip.MustParseAddr("fd00::1"), []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ours}}, false, false, netip.Addr{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			na, dst, ok := advertisement(&ndp.NeighborSolicitation{TargetAddress: target, Options: c.opts}, c.src, ours)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v", ok, c.ok)
			}
			if !ok {
				return
			}
			if dst != c.dst || na.Solicited != c.solicited || !na.Override || na.Router || na.TargetAddress != target {
				t.Errorf("got %+v to %s, want solicited=%v override to %s", na, dst, c.solicited, c.dst)
			}
			if len(na.Options) != 1 || fmt.Sprint(na.Options[0]) != fmt.Sprint(&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ours}) {
				t.Errorf("options %v, want our target link-layer address", na.Options)
			}
			if _, err := ndp.MarshalMessage(na); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNormalizeAndDiff(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.3")
	want, errs := normalize([]netip.Addr{netip.AddrFrom16(a.As16()), b.WithZone("eth0"), b, c, {}, netip.MustParseAddr("ff02::1")})
	if len(errs) != 2 || len(want) != 3 || !want[a] || !want[b] || !want[c] {
		t.Fatalf("normalize: %v %v", want, errs)
	}
	have := map[netip.Addr]*announcement{a: nil, netip.MustParseAddr("10.0.0.2"): nil}
	add, del := diff(have, want)
	if fmt.Sprint(add) != "[10.0.0.3 fd00::1]" || fmt.Sprint(del) != "[10.0.0.2]" {
		t.Errorf("diff: add %v del %v", add, del)
	}
}
