package ipvs

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

var _ RealServerBatcher = (*Netlink)(nil)

// Generic netlink numbers of IPVS (include/uapi/linux/ip_vs.h).
const (
	ipvsCmdNewDest     = 5
	ipvsCmdAttrService = 1
	ipvsCmdAttrDest    = 2
	ipvsSvcAttrAF      = 1
	ipvsSvcAttrProto   = 2
	ipvsSvcAttrAddr    = 3
	ipvsSvcAttrPort    = 4
	ipvsDestAttrAddr   = 1
	ipvsDestAttrPort   = 2
	ipvsDestAttrFwd    = 3
	ipvsDestAttrWeight = 4
	ipvsDestAttrUpper  = 5
	ipvsDestAttrLower  = 6
	// maxBatch bounds the requests of one send, so that their
	// acknowledgements fit the socket's receive buffer.
	maxBatch = 128
)

// batchSocket is a generic netlink socket that sends many IPVS requests in
// one sendmsg and reads their acknowledgements together: moby/ipvs waits
// for each reply before the next request, which costs two system calls per
// object (dominant in a guest kernel where every system call is slow).
type batchSocket struct {
	fd     int
	family uint16
	seq    uint32
	buf    []byte
	rbuf   []byte
}

func openBatchSocket() (*batchSocket, error) {
	fam, err := netlink.GenlFamilyGet("IPVS")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoIPVS, err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("IPVS netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("IPVS netlink socket: %w", err)
	}
	// Errors are acknowledged with the request attached; keep them short.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &batchSocket{fd: fd, family: fam.ID, rbuf: make([]byte, 1<<16)}, nil
}

func (b *batchSocket) close() { unix.Close(b.fd) }

// appendAttr appends one netlink attribute (4-byte aligned).
func appendAttr(buf []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	buf = binary.NativeEndian.AppendUint16(buf, uint16(l))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = append(buf, data...)
	for ; l%4 != 0; l++ {
		buf = append(buf, 0)
	}
	return buf
}

func u16(v uint16) []byte  { return binary.NativeEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte  { return binary.NativeEndian.AppendUint32(nil, v) }
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// nested appends an attribute whose payload f writes.
func nested(buf []byte, typ uint16, f func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	buf = f(buf)
	binary.NativeEndian.PutUint16(buf[start:], uint16(len(buf)-start))
	binary.NativeEndian.PutUint16(buf[start+2:], typ|unix.NLA_F_NESTED)
	return buf
}

// appendNewDest appends one IPVS_CMD_NEW_DEST request, with the same
// attributes moby/ipvs sends.
func (b *batchSocket) appendNewDest(buf []byte, k Key, rs RealServer, fwd uint32) []byte {
	start := len(buf)
	b.seq++
	buf = append(buf, make([]byte, unix.NLMSG_HDRLEN)...)
	buf = append(buf, (&nl.Genlmsg{Command: ipvsCmdNewDest, Version: 1}).Serialize()...)
	buf = nested(buf, ipvsCmdAttrService, func(buf []byte) []byte {
		buf = appendAttr(buf, ipvsSvcAttrAF, u16(family(k.Address)))
		buf = appendAttr(buf, ipvsSvcAttrProto, u16(uint16(k.Protocol)))
		buf = appendAttr(buf, ipvsSvcAttrAddr, k.Address.AsSlice())
		return appendAttr(buf, ipvsSvcAttrPort, be16(k.Port))
	})
	buf = nested(buf, ipvsCmdAttrDest, func(buf []byte) []byte {
		buf = appendAttr(buf, ipvsDestAttrAddr, rs.Address.AsSlice())
		buf = appendAttr(buf, ipvsDestAttrPort, be16(rs.Port))
		buf = appendAttr(buf, ipvsDestAttrFwd, u32(fwd))
		buf = appendAttr(buf, ipvsDestAttrWeight, u32(uint32(rs.Weight)))
		buf = appendAttr(buf, ipvsDestAttrUpper, u32(0))
		return appendAttr(buf, ipvsDestAttrLower, u32(0))
	})
	h := buf[start:]
	binary.NativeEndian.PutUint32(h[0:], uint32(len(buf)-start))
	binary.NativeEndian.PutUint16(h[4:], b.family)
	binary.NativeEndian.PutUint16(h[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(h[8:], b.seq)
	return buf
}

// exchange sends the requests in buf (sequence numbers first..first+n-1)
// in one sendmsg and returns the kernel's answer to each.
func (b *batchSocket) exchange(buf []byte, first uint32, n int) ([]error, error) {
	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	errs := make([]error, n)
	for got := 0; got < n; {
		m, _, err := unix.Recvfrom(b.fd, b.rbuf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(b.rbuf[:m])
		if err != nil {
			return nil, err
		}
		for _, msg := range msgs {
			i := int(msg.Header.Seq - first)
			if msg.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= n || len(msg.Data) < 4 {
				continue // not ours: a stale reply
			}
			if e := -int32(binary.NativeEndian.Uint32(msg.Data)); e != 0 {
				errs[i] = mapErr(syscall.Errno(e))
			}
			got++
		}
	}
	return errs, nil
}

// AddRealServers adds real servers to one virtual server, up to maxBatch
// requests per system call. errs[i] is what AddRealServer would have
// returned for rss[i].
func (n *Netlink) AddRealServers(k Key, rss []RealServer) []error {
	errs := make([]error, len(rss))
	n.mu.Lock()
	defer n.mu.Unlock()
	fail := func(from int, err error) []error {
		for i := from; i < len(rss); i++ {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("add real server %s to %s: %w", rss[i], k, err)
			}
		}
		return errs
	}
	if n.h == nil {
		return fail(0, fmt.Errorf("IPVS handle closed"))
	}
	if n.batch == nil {
		b, err := openBatchSocket()
		if err != nil {
			return fail(0, err)
		}
		n.batch = b
	}
	b := n.batch
	for lo := 0; lo < len(rss); lo += maxBatch {
		hi := min(lo+maxBatch, len(rss))
		buf, first := b.buf[:0], b.seq+1
		idx := make([]int, 0, hi-lo) // requests sent, by index into rss
		for i := lo; i < hi; i++ {
			f, ok := fwdToKernel[rss[i].Forwarding]
			if !ok {
				errs[i] = fmt.Errorf("real server %s: unknown forwarding %s", rss[i].Key(), rss[i].Forwarding)
				continue
			}
			buf = b.appendNewDest(buf, k, rss[i], f)
			idx = append(idx, i)
		}
		b.buf = buf
		if len(idx) == 0 {
			continue
		}
		res, err := b.exchange(buf, first, len(idx))
		if err != nil {
			// The socket is in an unknown state: start afresh next time.
			b.close()
			n.batch = nil
			return fail(lo, err)
		}
		for j, i := range idx {
			if res[j] != nil {
				errs[i] = fmt.Errorf("add real server %s to %s: %w", rss[i], k, res[j])
			}
		}
	}
	return errs
}
