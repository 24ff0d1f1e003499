package ipsetnl

import (
	"net/netip"
	"reflect"
	"testing"

	lib "github.com/lrh3321/ipset-go"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/internal/nlattr"
	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// listReply is one reply of a list dump as the kernel words it: the
// netfilter header, the set's name and type, and its members in an
// IPSET_ATTR_ADT list of IPSET_ATTR_DATA nests, addresses in their own
// nests, ports big-endian.
func listReply(typ string, es ...ipset.Entry) []byte {
	b := []byte{unix.AF_INET, nl.NFNETLINK_V0, 0, 0}
	b = nlattr.Attr(b, lib.IPSET_ATTR_PROTOCOL, lib.IPSET_PROTOCOL)
	b = nlattr.Attr(b, lib.IPSET_ATTR_SETNAME, append([]byte("KUBELVS-T"), 0)...)
	b = nlattr.Attr(b, lib.IPSET_ATTR_TYPENAME, append([]byte(typ), 0)...)
	b, adt := nlattr.BeginNest(b, lib.IPSET_ATTR_ADT)
	for i, e := range es {
		b = appendData(b, e, uint32(i+1))
	}
	return nlattr.EndNest(b, adt)
}

func TestParseList(t *testing.T) {
	es := []ipset.Entry{
		{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 80},
		{IP: netip.MustParseAddr("fd00::1"), Protocol: ipset.ProtoUDP, Port: 53, Net: netip.MustParsePrefix("fd10::/64")},
		{Net: netip.MustParsePrefix("10.8.0.0/14")},
	}
	typ, got := parseList(listReply("hash:ip,port", es...), "", nil)
	if typ != "hash:ip,port" || len(got) != len(es) {
		t.Fatalf("type %q, %d members, want hash:ip,port and %d", typ, len(got), len(es))
	}
	for i, e := range es {
		want := toLib(e)
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("member %d: %+v, want %+v (as written)", i, got[i], want)
		}
	}
	// Replies add up; a short or empty one adds nothing.
	typ, got = parseList(listReply("hash:ip,port", es[0]), typ, got)
	typ, got = parseList([]byte{1, 2}, typ, got)
	if typ != "hash:ip,port" || len(got) != len(es)+1 {
		t.Fatalf("after two more replies: %q, %d members", typ, len(got))
	}
}

// Whatever the kernel (or a bug) sends, the parser does not panic or read
// past the reply.
func FuzzParseList(f *testing.F) {
	f.Add(listReply("hash:ip,port,net", ipset.Entry{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 443, Net: netip.MustParsePrefix("10.0.0.0/8")}))
	f.Add(listReply("hash:net", ipset.Entry{Net: netip.MustParsePrefix("fd00::/8")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, es := parseList(b, "", nil)
		for _, e := range es {
			if e.IP != nil && len(e.IP) != 4 && len(e.IP) != 16 {
				t.Fatalf("address of %d bytes", len(e.IP))
			}
		}
	})
}
