package ipvsnl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/internal/nlattr"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// Generic netlink numbers of the IPVS dumps (include/uapi/linux/ip_vs.h),
// beside those of the adds (batch_linux.go).
const (
	ipvsCmdGetService    = 4
	ipvsCmdGetDest       = 8
	ipvsSvcAttrFWMark    = 5
	ipvsDestAttrActive   = 7
	ipvsDestAttrInactive = 8
	ipvsDestAttrAF       = 11
)

// errMalformed is a dump reply that cannot be read as moby/ipvs reads it.
// The whole dump fails then: a virtual or real server left out of a
// listing would look missing, and Verify would write it again.
var errMalformed = errors.New("IPVS netlink: malformed dump reply")

// dumper sends IPVS dump requests on a socket of its own and parses the
// replies in place (nlattr.Each): moby/ipvs parses every reply with
// nl.ParseRouteAttr, which allocates a slice per attribute list; at 10,000
// virtual servers Verify's dumps were a quarter of the bytes the agent
// allocated (make bench's heap profile). Its user serializes the dumps
// (Netlink.rmu).
type dumper struct {
	family uint16
	fd     int // -1: closed; opened on the next dump
	seq    uint32
	rbuf   []byte
}

func newDumper(family uint16) *dumper { return &dumper{family: family, fd: -1} }

func (d *dumper) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// dump sends one request (cmd, with the attributes f writes) and calls
// each with the attributes of every reply, after the generic netlink
// header. After an error the socket, its state unknown, is closed, and
// the next dump opens another.
func (d *dumper) dump(cmd uint8, f func([]byte) []byte, each func([]byte) error) error {
	err := d.exchange(cmd, f, each)
	if err != nil {
		d.close()
	}
	return err
}

func (d *dumper) exchange(cmd uint8, f func([]byte) []byte, each func([]byte) error) error {
	if d.fd < 0 {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
		if err != nil {
			return fmt.Errorf("IPVS netlink socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("IPVS netlink socket: %w", err)
		}
		// A dump's replies are at most 32 KiB each (netlink_dump).
		d.fd, d.rbuf = fd, make([]byte, 1<<16)
	}
	d.seq++
	seq := d.seq
	b, off := nlattr.Begin(nil, d.family, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b = append(b, (&nl.Genlmsg{Command: cmd, Version: 1}).Serialize()...)
	if f != nil {
		b = f(b)
	}
	b = nlattr.End(b, off)
	var err error
	for {
		err = unix.Sendto(d.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.rbuf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(d.rbuf[:n])
		if err != nil {
			return err
		}
		for i := range msgs {
			m := &msgs[i]
			if m.Header.Seq != seq {
				continue // a stale reply
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errMalformed
				}
				if e := -int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return syscall.Errno(e)
				}
				return fmt.Errorf("%w: an acknowledgement before the end of a dump", errMalformed)
			}
			if len(m.Data) < nl.SizeofGenlmsg {
				return errMalformed
			}
			if err := each(m.Data[nl.SizeofGenlmsg:]); err != nil {
				return err
			}
		}
	}
}

// nestedOf returns the payload of the attribute of type typ among attrs.
func nestedOf(attrs []byte, typ uint16) ([]byte, bool) {
	var v []byte
	found := false
	nlattr.Each(attrs, func(t uint16, p []byte) {
		if t == typ && !found {
			v, found = p, true
		}
	})
	return v, found
}

// parseService reads one reply of a service dump as moby/ipvs's
// assembleService does, into the moby.Service fromService takes (its
// address points into the reply).
func parseService(attrs []byte) (moby.Service, error) {
	var s moby.Service
	body, ok := nestedOf(attrs, ipvsCmdAttrService)
	if !ok {
		return s, fmt.Errorf("%w: no service", errMalformed)
	}
	var addr []byte
	bad := false
	u16 := func(v []byte) uint16 {
		if len(v) < 2 {
			bad = true
			return 0
		}
		return binary.NativeEndian.Uint16(v)
	}
	u32 := func(v []byte) uint32 {
		if len(v) < 4 {
			bad = true
			return 0
		}
		return binary.NativeEndian.Uint32(v)
	}
	nlattr.Each(body, func(t uint16, v []byte) {
		switch t {
		case ipvsSvcAttrAF:
			s.AddressFamily = u16(v)
		case ipvsSvcAttrProto:
			s.Protocol = u16(v)
		case ipvsSvcAttrAddr:
			addr = v
		case ipvsSvcAttrPort:
			if len(v) < 2 {
				bad = true
				return
			}
			s.Port = binary.BigEndian.Uint16(v)
		case ipvsSvcAttrFWMark:
			s.FWMark = u32(v)
		case ipvsSvcAttrSched:
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			s.SchedName = schedName(v)
		case ipvsSvcAttrFlags:
			s.Flags = u32(v) // struct ip_vs_flags: the flags, then a mask
		case ipvsSvcAttrTimeout:
			s.Timeout = u32(v)
		case ipvsSvcAttrNetmask:
			s.Netmask = u32(v)
		}
	})
	if bad {
		return s, fmt.Errorf("%w: a short service attribute", errMalformed)
	}
	if addr != nil {
		ip, err := addressOf(addr, s.AddressFamily)
		if err != nil {
			return s, err
		}
		s.Address = ip
	}
	return s, nil
}

// parseDest reads one reply of a destination dump as moby/ipvs's
// assembleDestination does, but for the weight, which it reads as 16 of
// the kernel's 32 bits (the same for every weight we write: 0-65535).
func parseDest(attrs []byte) (moby.Destination, error) {
	var d moby.Destination
	body, ok := nestedOf(attrs, ipvsCmdAttrDest)
	if !ok {
		return d, fmt.Errorf("%w: no destination", errMalformed)
	}
	var addr []byte
	bad := false
	u32 := func(v []byte) uint32 {
		if len(v) < 4 {
			bad = true
			return 0
		}
		return binary.NativeEndian.Uint32(v)
	}
	nlattr.Each(body, func(t uint16, v []byte) {
		switch t {
		case ipvsDestAttrAF:
			if len(v) < 2 {
				bad = true
				return
			}
			d.AddressFamily = binary.NativeEndian.Uint16(v)
		case ipvsDestAttrAddr:
			addr = v
		case ipvsDestAttrPort:
			if len(v) < 2 {
				bad = true
				return
			}
			d.Port = binary.BigEndian.Uint16(v)
		case ipvsDestAttrFwd:
			d.ConnectionFlags = u32(v)
		case ipvsDestAttrWeight:
			d.Weight = int(u32(v))
		case ipvsDestAttrUpper:
			d.UpperThreshold = u32(v)
		case ipvsDestAttrLower:
			d.LowerThreshold = u32(v)
		case ipvsDestAttrActive:
			d.ActiveConnections = int(u32(v))
		case ipvsDestAttrInactive:
			d.InactiveConnections = int(u32(v))
		}
	})
	if bad {
		return d, fmt.Errorf("%w: a short destination attribute", errMalformed)
	}
	if addr == nil {
		return d, fmt.Errorf("%w: a destination without an address", errMalformed)
	}
	if d.AddressFamily == 0 {
		// Kernels before 3.18 do not send it: guess it from the address
		// as moby/ipvs does (an IPv4 address fills the first 4 of 16
		// bytes).
		d.AddressFamily = syscall.AF_INET6
		if len(addr) == 4 || (len(addr) >= 4 && !allZero(addr[:4]) && allZero(addr[4:])) {
			d.AddressFamily = syscall.AF_INET
		}
	}
	ip, err := addressOf(addr, d.AddressFamily)
	if err != nil {
		return d, err
	}
	d.Address = ip
	return d, nil
}

// addressOf is the address of family af that the kernel sends in a union
// nf_inet_addr (16 bytes; an IPv4 address in the first 4).
func addressOf(v []byte, af uint16) (net.IP, error) {
	switch {
	case af == syscall.AF_INET && len(v) >= 4:
		return net.IP(v[:4]), nil
	case af == syscall.AF_INET6 && len(v) >= 16:
		return net.IP(v[:16]), nil
	}
	return nil, fmt.Errorf("%w: address of %d bytes, family %d", errMalformed, len(v), af)
}

// schedName is the scheduler's name v, without an allocation for the
// kernel's own schedulers (one per virtual server of a dump otherwise).
func schedName(v []byte) string {
	switch string(v) {
	case "rr":
		return "rr"
	case "wrr":
		return "wrr"
	case "lc":
		return "lc"
	case "wlc":
		return "wlc"
	case "lblc":
		return "lblc"
	case "lblcr":
		return "lblcr"
	case "dh":
		return "dh"
	case "sh":
		return "sh"
	case "sed":
		return "sed"
	case "nq":
		return "nq"
	case "fo":
		return "fo"
	case "ovf":
		return "ovf"
	case "mh":
		return "mh"
	case "twos":
		return "twos"
	}
	return string(v)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// dumpVirtualServers lists every virtual server of ours' kind (no
// firewall marks), as fromService reads them.
func (d *dumper) virtualServers() ([]ipvs.VirtualServer, error) {
	var out []ipvs.VirtualServer
	err := d.dump(ipvsCmdGetService, nil, func(attrs []byte) error {
		s, err := parseService(attrs)
		if err != nil {
			return err
		}
		if vs, ok := fromService(&s); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out, err
}

// dumpRealServers lists the real servers of k, as fromDest reads them.
func (d *dumper) realServers(k ipvs.Key) ([]ipvs.RealServer, error) {
	var out []ipvs.RealServer
	err := d.dump(ipvsCmdGetDest, func(b []byte) []byte {
		return nested(b, ipvsCmdAttrService, func(b []byte) []byte { return appendServiceKey(b, k) })
	}, func(attrs []byte) error {
		dst, err := parseDest(attrs)
		if err != nil {
			return err
		}
		out = append(out, fromDest(&dst))
		return nil
	})
	return out, err
}
