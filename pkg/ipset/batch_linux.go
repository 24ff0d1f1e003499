package ipset

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	lib "github.com/lrh3321/ipset-go"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// maxBatch bounds the add requests of one send, so that their
// acknowledgements fit the socket's receive buffer.
const maxBatch = 256

// addMessage serializes one IPSET_CMD_ADD request for e, encoded as the
// library encodes it, without NLM_F_EXCL: a present member is success.
func addMessage(set string, e Entry, seq uint32) []byte {
	req := nl.NewNetlinkRequest(lib.IPSET_CMD_ADD|(unix.NFNL_SUBSYS_IPSET<<8), unix.NLM_F_ACK)
	req.Seq = seq
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(unix.AF_INET), Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(lib.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(lib.IPSET_PROTOCOL)))
	req.AddData(nl.NewRtAttr(lib.IPSET_ATTR_SETNAME, nl.ZeroTerminated(set)))
	le := toLib(e)
	data := nl.NewRtAttr(lib.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	ip := func(typ int, a net.IP) {
		t := int(nl.NLA_F_NET_BYTEORDER) | nl.IPSET_ATTR_IPADDR_IPV6
		if a4 := a.To4(); a4 != nil {
			t, a = int(nl.NLA_F_NET_BYTEORDER)|nl.IPSET_ATTR_IPADDR_IPV4, a4
		}
		data.AddChild(nl.NewRtAttr(typ|int(nl.NLA_F_NESTED), nl.NewRtAttr(t, a).Serialize()))
	}
	if le.IP != nil {
		ip(nl.IPSET_ATTR_IP, le.IP)
	}
	if le.CIDR != 0 {
		data.AddChild(nl.NewRtAttr(lib.IPSET_ATTR_CIDR, nl.Uint8Attr(le.CIDR)))
	}
	if le.IP2 != nil {
		ip(nl.IPSET_ATTR_IP2, le.IP2)
	}
	if le.CIDR2 != 0 {
		data.AddChild(nl.NewRtAttr(lib.IPSET_ATTR_CIDR2, nl.Uint8Attr(le.CIDR2)))
	}
	if le.Port != nil {
		data.AddChild(nl.NewRtAttr(lib.IPSET_ATTR_PROTO, nl.Uint8Attr(*le.Protocol)))
		data.AddChild(nl.NewRtAttr(int(lib.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER), binary.BigEndian.AppendUint16(nil, *le.Port)))
	}
	data.AddChild(&nl.Uint32Attribute{Type: lib.IPSET_ATTR_LINENO | nl.NLA_F_NET_BYTEORDER, Value: 0})
	req.AddData(data)
	return req.Serialize()
}

// addEntries adds members to a set with up to maxBatch requests per system
// call on a socket of its own: the library waits for each reply before the
// next request, which makes filling a set of 20,000 members cost 40,000
// system calls. Replace uses it to fill its scratch set.
func addEntries(set string, es []Entry) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("ipset netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ipset netlink socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	rbuf := make([]byte, 1<<16)
	var buf []byte
	for lo := 0; lo < len(es); lo += maxBatch {
		hi := min(lo+maxBatch, len(es))
		buf = buf[:0]
		for i := lo; i < hi; i++ {
			buf = append(buf, addMessage(set, es[i], uint32(i+1))...)
		}
		if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("add to ipset %s: %w", set, err)
		}
		for got := 0; got < hi-lo; {
			m, _, err := unix.Recvfrom(fd, rbuf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("add to ipset %s: %w", set, err)
			}
			msgs, err := syscall.ParseNetlinkMessage(rbuf[:m])
			if err != nil {
				return fmt.Errorf("add to ipset %s: %w", set, err)
			}
			for _, msg := range msgs {
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
					return fmt.Errorf("add %s to ipset %s: %w", es[i], set, err)
				}
			}
		}
	}
	return nil
}
