package nlattr

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestAttrPadsToFourBytes(t *testing.T) {
	for n, want := range map[int]int{0: 4, 1: 8, 3: 8, 4: 8, 5: 12} {
		b := Attr(nil, 7, make([]byte, n)...)
		if len(b) != want {
			t.Errorf("attribute with %d bytes: %d bytes long, want %d", n, len(b), want)
		}
		if l := binary.NativeEndian.Uint16(b); int(l) != 4+n {
			t.Errorf("attribute with %d bytes: length field %d, want %d (padding is not counted)", n, l, 4+n)
		}
	}
}

func TestMessageWithNestedAttributes(t *testing.T) {
	b := []byte{0xaa} // something before: offsets are relative
	b, msg := Begin(b, 0x0102, 0x0001, 42)
	b = Attr(b, 1, 0x0a, 0x00, 0x00, 0x01)
	b, nest := BeginNest(b, 2)
	b = Attr(b, 3, BE16(80)...)
	b = EndNest(b, nest)
	b = End(b, msg)
	AddFlags(b, msg, 0x0004)

	m := b[msg:]
	if got := binary.NativeEndian.Uint32(m); int(got) != len(m) || len(m) != HdrLen+8+4+8 {
		t.Fatalf("message length field %d, %d bytes, want %d", got, len(m), HdrLen+8+4+8)
	}
	if typ, flags, seq := binary.NativeEndian.Uint16(m[4:]), binary.NativeEndian.Uint16(m[6:]), binary.NativeEndian.Uint32(m[8:]); typ != 0x0102 || flags != 0x0005 || seq != 42 {
		t.Fatalf("header type %#x flags %#x seq %d", typ, flags, seq)
	}
	n := m[HdrLen+8:]
	if l, typ := binary.NativeEndian.Uint16(n), binary.NativeEndian.Uint16(n[2:]); l != 12 || typ != 2|Nested {
		t.Fatalf("nest length %d type %#x, want 12 and %#x", l, typ, 2|Nested)
	}
	if !bytes.Equal(n[8:10], []byte{0, 80}) {
		t.Fatalf("big-endian payload %x", n[8:10])
	}
}

// Each walks what Attr and BeginNest wrote, flags stripped, and stops at a
// malformed attribute rather than read past it.
func TestEachWalksAttributes(t *testing.T) {
	b := Attr(nil, 1|NetByteOrder, BE16(80)...)
	b, nest := BeginNest(b, 2)
	b = Attr(b, 3, 7)
	b = EndNest(b, nest)
	b = Attr(b, 4)
	type attr struct {
		typ uint16
		v   string
	}
	var got []attr
	Each(b, func(typ uint16, v []byte) { got = append(got, attr{typ, string(v)}) })
	want := []attr{{1, "\x00\x50"}, {2, string(Attr(nil, 3, 7))}, {4, ""}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("attribute %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range [][]byte{
		{3, 0, 1, 0},               // length below 4
		{9, 0, 1, 0, 0},            // length beyond the buffer
		append(Attr(nil, 5), 8, 0), // a good one, then a truncated header
	} {
		n := 0
		Each(bad, func(typ uint16, v []byte) {
			if typ != 5 || len(v) != 0 {
				t.Errorf("%x: read attribute %d %x", bad, typ, v)
			}
			n++
		})
		if n > 1 {
			t.Errorf("%x: %d attributes", bad, n)
		}
	}
}
