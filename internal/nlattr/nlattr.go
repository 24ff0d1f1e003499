// Package nlattr encodes and walks netlink messages for kubelvs's
// hand-written paths — the IPVS adds (pkg/ipvs/ipvsnl), the ipset adds and
// listings (pkg/ipset/ipsetnl) and the conntrack dumps and deletes
// (pkg/conntrack/conntracknl) — so that they share one encoder: a
// message header whose length End fills in, attributes padded to 4 bytes,
// nested attributes. Headers are in host byte order, as netlink wants them;
// the payload of an attribute flagged NetByteOrder is the caller's to encode
// big-endian (BE16, BE32).
package nlattr

import "encoding/binary"

const (
	// HdrLen is the length of a netlink message header.
	HdrLen = 16
	// Nested flags an attribute whose payload is attributes (NLA_F_NESTED).
	Nested = 0x8000
	// NetByteOrder flags an attribute whose payload is big-endian
	// (NLA_F_NET_BYTEORDER).
	NetByteOrder = 0x4000
	// TypeMask strips Nested and NetByteOrder from an attribute's type.
	TypeMask = 0x3fff
)

// Begin appends a netlink message header of type typ with flags and seq,
// its length left for End, and returns where the message starts.
func Begin(b []byte, typ, flags uint16, seq uint32) ([]byte, int) {
	off := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel's
	return b, off
}

// End sets the length of the message that starts at off to reach the end
// of b.
func End(b []byte, off int) []byte {
	binary.NativeEndian.PutUint32(b[off:], uint32(len(b)-off))
	return b
}

// AddFlags sets more flags on the message that starts at off.
func AddFlags(b []byte, off int, flags uint16) {
	binary.NativeEndian.PutUint16(b[off+6:], binary.NativeEndian.Uint16(b[off+6:])|flags)
}

// Attr appends one attribute, padded to a multiple of 4 bytes.
func Attr(b []byte, typ uint16, data ...byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for l := 4 + len(data); l%4 != 0; l++ {
		b = append(b, 0)
	}
	return b
}

// BeginNest appends the header of a nested attribute of type typ and
// returns where it starts; EndNest sets its length.
func BeginNest(b []byte, typ uint16) ([]byte, int) {
	off := len(b)
	b = binary.NativeEndian.AppendUint16(b, 0)
	return binary.NativeEndian.AppendUint16(b, typ|Nested), off
}

// EndNest sets the length of the nested attribute that starts at off to
// reach the end of b.
func EndNest(b []byte, off int) []byte {
	binary.NativeEndian.PutUint16(b[off:], uint16(len(b)-off))
	return b
}

// U16 is v in host byte order.
func U16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

// U32 is v in host byte order.
func U32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// BE16 is v big-endian, for NetByteOrder attributes.
func BE16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// BE32 is v big-endian, for NetByteOrder attributes.
func BE32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// Each calls fn for each attribute of b, in order, with its type without
// flags (TypeMask) and its payload, and stops at the first malformed one (a
// length below 4 or beyond b). It walks b in place, without the goroutine
// and channel per list that vishvananda/netlink's ParseAttributes uses: in
// a dump of thousands of members those handoffs were the cost.
func Each(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&TypeMask, b[4:l])
		l = (l + 3) &^ 3
		if l > len(b) {
			return
		}
		b = b[l:]
	}
}
