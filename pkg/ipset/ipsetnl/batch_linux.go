package ipsetnl

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	lib "github.com/lrh3321/ipset-go"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/internal/nlattr"
	"github.com/kubelvs/kubelvs/pkg/ipset"
)

// The scratch set is filled with IPSET_CMD_ADD requests that each carry
// up to entriesPerMsg members in an IPSET_ATTR_ADT list (as `ipset restore`
// sends them), msgsPerSend requests per system call, each acknowledged.
const (
	entriesPerMsg = 1024
	msgsPerSend   = 4
)

func appendIP(b []byte, typ uint16, a net.IP) []byte {
	b, n := nlattr.BeginNest(b, typ)
	if a4 := a.To4(); a4 != nil {
		b = nlattr.Attr(b, nl.NLA_F_NET_BYTEORDER|nl.IPSET_ATTR_IPADDR_IPV4, a4...)
	} else {
		b = nlattr.Attr(b, nl.NLA_F_NET_BYTEORDER|nl.IPSET_ATTR_IPADDR_IPV6, a.To16()...)
	}
	return nlattr.EndNest(b, n)
}

// appendData appends one member as an IPSET_ATTR_DATA nest, encoded as
// the library encodes it.
func appendData(b []byte, e ipset.Entry, lineno uint32) []byte {
	le := toLib(e)
	b, d := nlattr.BeginNest(b, lib.IPSET_ATTR_DATA)
	if le.IP != nil {
		b = appendIP(b, nl.IPSET_ATTR_IP, le.IP)
	}
	if le.CIDR != 0 {
		b = nlattr.Attr(b, lib.IPSET_ATTR_CIDR, le.CIDR)
	}
	if le.IP2 != nil {
		b = appendIP(b, nl.IPSET_ATTR_IP2, le.IP2)
	}
	if le.CIDR2 != 0 {
		b = nlattr.Attr(b, lib.IPSET_ATTR_CIDR2, le.CIDR2)
	}
	if le.Port != nil {
		b = nlattr.Attr(b, lib.IPSET_ATTR_PROTO, *le.Protocol)
		b = nlattr.Attr(b, lib.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER, byte(*le.Port>>8), byte(*le.Port))
	}
	b = nlattr.Attr(b, lib.IPSET_ATTR_LINENO|nl.NLA_F_NET_BYTEORDER, binary.BigEndian.AppendUint32(nil, lineno)...)
	return nlattr.EndNest(b, d)
}

// appendAddMessage appends one IPSET_CMD_ADD request for es (without
// NLM_F_EXCL: a present member is success). The kernel adds the members of
// the IPSET_ATTR_ADT list in order and stops at the first error.
func appendAddMessage(b []byte, set string, es []ipset.Entry, seq uint32) []byte {
	b, off := nlattr.Begin(b, lib.IPSET_CMD_ADD|(unix.NFNL_SUBSYS_IPSET<<8), unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq)
	b = append(b, unix.AF_INET, nl.NFNETLINK_V0, 0, 0)
	b = nlattr.Attr(b, lib.IPSET_ATTR_PROTOCOL, lib.IPSET_PROTOCOL)
	b = nlattr.Attr(b, lib.IPSET_ATTR_SETNAME, append([]byte(set), 0)...)
	// The kernel requires a line number beside an IPSET_ATTR_ADT list.
	b = nlattr.Attr(b, lib.IPSET_ATTR_LINENO|nl.NLA_F_NET_BYTEORDER, 0, 0, 0, 0)
	b, adt := nlattr.BeginNest(b, lib.IPSET_ATTR_ADT)
	for i, e := range es {
		b = appendData(b, e, uint32(i+1))
	}
	b = nlattr.EndNest(b, adt)
	return nlattr.End(b, off)
}

// hashSizeFor sizes a scratch set's hash for n members, so that the kernel
// does not grow (rehash) it repeatedly while it is filled.
func hashSizeFor(n int, given uint32) uint32 {
	h := uint32(1024)
	for int(h) < n && h < 1<<20 {
		h <<= 1
	}
	return max(h, given)
}

// addEntries adds members to a set on a socket of its own: the library
// sends one member per request and waits for each reply, which makes
// filling a set of 20,000 members cost 40,000 system calls. Replace uses it
// to fill its scratch set.
func addEntries(set string, es []ipset.Entry) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("ipset netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ipset netlink socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 1<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	}
	rbuf := make([]byte, 1<<16)
	var buf []byte
	const perSend = entriesPerMsg * msgsPerSend
	for lo := 0; lo < len(es); lo += perSend {
		hi := min(lo+perSend, len(es))
		buf = buf[:0]
		msgs := 0
		for i := lo; i < hi; i += entriesPerMsg {
			// seq: index of the request's first member, plus one
			buf = appendAddMessage(buf, set, es[i:min(i+entriesPerMsg, hi)], uint32(i+1))
			msgs++
		}
		for {
			err = unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
			if err != unix.EINTR {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("add to ipset %s: %w", set, err)
		}
		for got := 0; got < msgs; {
			m, _, err := unix.Recvfrom(fd, rbuf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("add to ipset %s: %w", set, err)
			}
			replies, err := syscall.ParseNetlinkMessage(rbuf[:m])
			if err != nil {
				return fmt.Errorf("add to ipset %s: %w", set, err)
			}
			for _, msg := range replies {
				i := int(msg.Header.Seq) - 1
				if msg.Header.Type != unix.NLMSG_ERROR || i < lo || i >= hi || len(msg.Data) < 4 {
					continue
				}
				got++
				if e := -int32(binary.NativeEndian.Uint32(msg.Data)); e != 0 && e != lib.IPSET_ERR_EXIST {
					var err error = syscall.Errno(e)
					if e >= lib.IPSET_ERR_PRIVATE {
						err = lib.IPSetError(uintptr(e))
					}
					j := min(i+entriesPerMsg, hi)
					return fmt.Errorf("add %d members (%s .. %s) to ipset %s: %w", j-i, es[i], es[j-1], set, err)
				}
			}
		}
	}
	return nil
}
