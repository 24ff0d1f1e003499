package ipsetnl

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"syscall"

	lib "github.com/lrh3321/ipset-go"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/internal/nlattr"
)

// dumpEntries lists a set's members on a socket of its own and returns its
// type name and members as the library's List would, parsing the replies
// in place (nlattr.Each). The library parses a dump through
// vishvananda/netlink's ParseAttributes, a goroutine and an unbuffered
// channel per attribute list: two goroutine switches per attribute, which
// made the periodic resync's listing of a set of thousands of members take
// seconds on a busy CPU (make bench's execution trace).
func dumpEntries(set string) (string, []lib.Entry, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return "", nil, fmt.Errorf("ipset netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return "", nil, fmt.Errorf("ipset netlink socket: %w", err)
	}
	const seq = 1
	b, off := nlattr.Begin(nil, lib.IPSET_CMD_LIST|(unix.NFNL_SUBSYS_IPSET<<8), unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b = append(b, unix.AF_INET, nl.NFNETLINK_V0, 0, 0)
	b = nlattr.Attr(b, lib.IPSET_ATTR_PROTOCOL, lib.IPSET_PROTOCOL)
	b = nlattr.Attr(b, lib.IPSET_ATTR_SETNAME, append([]byte(set), 0)...)
	b = nlattr.End(b, off)
	for {
		err = unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return "", nil, err
	}
	// A dump's replies are at most 32 KiB each (netlink_dump).
	rbuf := make([]byte, 1<<16)
	var typ string
	var entries []lib.Entry
	for {
		n, _, err := unix.Recvfrom(fd, rbuf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(rbuf[:n])
		if err != nil {
			return "", nil, err
		}
		for i := range msgs {
			m := &msgs[i]
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return typ, entries, nil
			case unix.NLMSG_ERROR:
				return "", nil, errnoOf(m.Data)
			}
			typ, entries = parseList(m.Data, typ, entries)
		}
	}
}

// errnoOf is the error of an NLMSG_ERROR reply, as the library words it:
// ipset's own codes as lib.IPSetError, others as syscall.Errno.
func errnoOf(data []byte) error {
	if len(data) < 4 {
		return fmt.Errorf("ipset netlink: short error reply")
	}
	e := -int32(binary.NativeEndian.Uint32(data))
	switch {
	case e == 0:
		return fmt.Errorf("ipset netlink: acknowledgement before the end of a dump")
	case e >= lib.IPSET_ERR_PRIVATE:
		return lib.IPSetError(uintptr(e))
	}
	return syscall.Errno(e)
}

// parseList adds what one reply of a list dump holds (the netfilter
// header, then the set's attributes) to typ and entries. Attributes it does
// not know are skipped; a malformed one ends the walk of its list.
func parseList(data []byte, typ string, entries []lib.Entry) (string, []lib.Entry) {
	if len(data) < 4 {
		return typ, entries
	}
	nlattr.Each(data[4:], func(t uint16, v []byte) {
		switch t {
		case lib.IPSET_ATTR_TYPENAME:
			// Up to its terminating zero (nl.BytesToString panics on an
			// empty value: FuzzParseList).
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			typ = string(v)
		case lib.IPSET_ATTR_ADT:
			nlattr.Each(v, func(t uint16, v []byte) {
				if t == lib.IPSET_ATTR_DATA {
					entries = append(entries, parseEntry(v))
				}
			})
		}
	})
	return typ, entries
}

// parseEntry reads one member's IPSET_ATTR_DATA: what our set types hold
// (addresses, prefix lengths, protocol and port).
func parseEntry(v []byte) lib.Entry {
	var e lib.Entry
	addr := func(v []byte) net.IP {
		var ip net.IP
		nlattr.Each(v, func(t uint16, v []byte) {
			if (t == nl.IPSET_ATTR_IPADDR_IPV4 && len(v) == net.IPv4len) || (t == nl.IPSET_ATTR_IPADDR_IPV6 && len(v) == net.IPv6len) {
				ip = net.IP(slices.Clone(v))
			}
		})
		return ip
	}
	nlattr.Each(v, func(t uint16, v []byte) {
		switch {
		case t == nl.IPSET_ATTR_IP:
			e.IP = addr(v)
		case t == nl.IPSET_ATTR_IP2:
			e.IP2 = addr(v)
		case t == lib.IPSET_ATTR_CIDR && len(v) >= 1:
			e.CIDR = v[0]
		case t == lib.IPSET_ATTR_CIDR2 && len(v) >= 1:
			e.CIDR2 = v[0]
		case t == lib.IPSET_ATTR_PORT && len(v) >= 2:
			p := binary.BigEndian.Uint16(v)
			e.Port = &p
		case t == lib.IPSET_ATTR_PROTO && len(v) >= 1:
			p := v[0]
			e.Protocol = &p
		}
	})
	return e
}
