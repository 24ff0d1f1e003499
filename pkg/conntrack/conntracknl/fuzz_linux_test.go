package conntracknl

import (
	"net/netip"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/conntrack"
)

// FuzzParseFlow: whatever bytes a conntrack dump holds, parseFlow neither
// panics nor reads past them; and a flow encoded the way the kernel sends
// it reads back as itself.
func FuzzParseFlow(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0}, uint8(17), []byte{10, 0, 0, 5}, uint16(40000), []byte{10, 96, 0, 10}, uint16(53), []byte{10, 1, 0, 2}, uint16(5353))
	f.Add([]byte{}, uint8(6), make([]byte, 16), uint16(1), make([]byte, 16), uint16(2), make([]byte, 16), uint16(3))
	f.Fuzz(func(t *testing.T, raw []byte, proto uint8, src []byte, sport uint16, vip []byte, vport uint16, backend []byte, bport uint16) {
		parseFlow(raw) // arbitrary input: must not panic

		s, ok1 := netip.AddrFromSlice(src)
		v, ok2 := netip.AddrFromSlice(vip)
		b, ok3 := netip.AddrFromSlice(backend)
		if !ok1 || !ok2 || !ok3 || sport == 0 || vport == 0 || bport == 0 || s.Is4() != v.Is4() || v.Is4() != b.Is4() {
			return
		}
		want := conntrack.Flow{Protocol: proto,
			OrigSrc: netip.AddrPortFrom(s, sport), OrigDst: netip.AddrPortFrom(v, vport),
			ReplySrc: netip.AddrPortFrom(b, bport), ReplyDst: netip.AddrPortFrom(s, sport)}
		c := &conn{}
		off := c.msg(0, 0, 2)
		c.tuple(ctaTupleOrig, want.Protocol, want.OrigSrc, want.OrigDst)
		c.tuple(ctaTupleReply, want.Protocol, want.ReplySrc, want.ReplyDst)
		c.end(off)
		got, ok := parseFlow(c.wbuf[off+16:]) // after the netlink header
		if !ok || got != want {
			t.Fatalf("parsed %+v (%t), want %+v", got, ok, want)
		}
		// Truncated at any point: no panic.
		for n := 0; n < len(c.wbuf)-off-16; n++ {
			parseFlow(c.wbuf[off+16 : off+16+n])
		}
	})
}
