package ipvsnl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/internal/nlattr"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

var _ ipvs.RealServerBatcher = (*Netlink)(nil)

// Generic netlink numbers of IPVS (include/uapi/linux/ip_vs.h).
const (
	ipvsCmdNewService  = 1
	ipvsCmdNewDest     = 5
	ipvsCmdAttrService = 1
	ipvsCmdAttrDest    = 2
	ipvsSvcAttrAF      = 1
	ipvsSvcAttrProto   = 2
	ipvsSvcAttrAddr    = 3
	ipvsSvcAttrPort    = 4
	ipvsSvcAttrSched   = 6
	ipvsSvcAttrFlags   = 7
	ipvsSvcAttrTimeout = 8
	ipvsSvcAttrNetmask = 9
	ipvsDestAttrAddr   = 1
	ipvsDestAttrPort   = 2
	ipvsDestAttrFwd    = 3
	ipvsDestAttrWeight = 4
	ipvsDestAttrUpper  = 5
	ipvsDestAttrLower  = 6
	// maxBatch bounds the requests of one send, so that their answers
	// (one per failed request, at worst all of them) fit the socket's
	// receive buffer.
	maxBatch = 128
)

// batchSocket is a generic netlink socket that sends many IPVS requests in
// one sendmsg and reads the kernel's answers to all of them with as few
// receives as it can (see exchange): moby/ipvs waits for each reply before
// the next request, which costs three system calls per object (dominant in
// a guest kernel where every system call is slow).
type batchSocket struct {
	fd     int
	family uint16
	seq    uint32
	buf    []byte
	rbuf   []byte
	// lastReq is the offset in the buffer being built of its last
	// request, the one exchange asks an acknowledgement for.
	lastReq int
}

// openBatchSocket opens the batch socket in the handle's network
// namespace ns: it is opened on first use, maybe from a thread in another
// one (socketIn).
func openBatchSocket(ns netns.NsHandle, family uint16) (*batchSocket, error) {
	fd, err := socketIn(ns)
	if err != nil {
		return nil, err
	}
	// Errors are acknowledged with the request attached; keep them short.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &batchSocket{fd: fd, family: family, rbuf: make([]byte, 1<<16)}, nil
}

func (b *batchSocket) close() { unix.Close(b.fd) }

// nested appends an attribute whose payload f writes.
func nested(buf []byte, typ uint16, f func([]byte) []byte) []byte {
	buf, off := nlattr.BeginNest(buf, typ)
	return nlattr.EndNest(f(buf), off)
}

// request appends one generic netlink request of the IPVS family whose
// attributes f writes, with the next sequence number. It asks for no
// acknowledgement: the kernel then answers only if the request fails, and
// exchange asks one for the last request of a send.
func (b *batchSocket) request(buf []byte, cmd uint8, f func([]byte) []byte) []byte {
	b.seq++
	buf, b.lastReq = nlattr.Begin(buf, b.family, unix.NLM_F_REQUEST, b.seq)
	buf = append(buf, (&nl.Genlmsg{Command: cmd, Version: 1}).Serialize()...)
	return nlattr.End(f(buf), b.lastReq)
}

// appendServiceKey appends the attributes that name the service k.
func appendServiceKey(buf []byte, k ipvs.Key) []byte {
	buf = nlattr.Attr(buf, ipvsSvcAttrAF, nlattr.U16(family(k.Address))...)
	buf = nlattr.Attr(buf, ipvsSvcAttrProto, nlattr.U16(uint16(k.Protocol))...)
	buf = nlattr.Attr(buf, ipvsSvcAttrAddr, k.Address.AsSlice()...)
	return nlattr.Attr(buf, ipvsSvcAttrPort, nlattr.BE16(k.Port)...)
}

// appendNewService appends one IPVS_CMD_NEW_SERVICE request, with the
// attributes and values moby/ipvs sends for toService(vs).
func (b *batchSocket) appendNewService(buf []byte, vs ipvs.VirtualServer) []byte {
	s := toService(vs)
	return b.request(buf, ipvsCmdNewService, func(buf []byte) []byte {
		return nested(buf, ipvsCmdAttrService, func(buf []byte) []byte {
			buf = appendServiceKey(buf, vs.Key())
			buf = nlattr.Attr(buf, ipvsSvcAttrSched, append([]byte(s.SchedName), 0)...)
			// struct ip_vs_flags: the flags, and the mask of those to set.
			buf = nlattr.Attr(buf, ipvsSvcAttrFlags, append(nlattr.U32(s.Flags), nlattr.U32(^uint32(0))...)...)
			buf = nlattr.Attr(buf, ipvsSvcAttrTimeout, nlattr.U32(s.Timeout)...)
			return nlattr.Attr(buf, ipvsSvcAttrNetmask, nlattr.U32(s.Netmask)...)
		})
	})
}

// appendNewDest appends one IPVS_CMD_NEW_DEST request, with the same
// attributes moby/ipvs sends.
func (b *batchSocket) appendNewDest(buf []byte, k ipvs.Key, rs ipvs.RealServer, fwd uint32) []byte {
	return b.request(buf, ipvsCmdNewDest, func(buf []byte) []byte {
		buf = nested(buf, ipvsCmdAttrService, func(buf []byte) []byte { return appendServiceKey(buf, k) })
		return nested(buf, ipvsCmdAttrDest, func(buf []byte) []byte {
			buf = nlattr.Attr(buf, ipvsDestAttrAddr, rs.Address.AsSlice()...)
			buf = nlattr.Attr(buf, ipvsDestAttrPort, nlattr.BE16(rs.Port)...)
			buf = nlattr.Attr(buf, ipvsDestAttrFwd, nlattr.U32(fwd)...)
			buf = nlattr.Attr(buf, ipvsDestAttrWeight, nlattr.U32(uint32(rs.Weight))...)
			buf = nlattr.Attr(buf, ipvsDestAttrUpper, nlattr.U32(0)...)
			return nlattr.Attr(buf, ipvsDestAttrLower, nlattr.U32(0)...)
		})
	})
}

// exchange sends the requests in buf (sequence numbers first..first+n-1,
// the last one appended last) in one sendmsg and returns the kernel's
// answer to each. Only the last request asks for an acknowledgement: the
// kernel handles the requests of one send in order, within the sendmsg, and
// answers a request without NLM_F_ACK only when it fails; so once the last
// one's answer is read, every failure before it has been read too and the
// other requests succeeded. That is one receive per send, not one per
// request (plus one per failure).
func (b *batchSocket) exchange(buf []byte, first uint32, n int) ([]error, error) {
	last := first + uint32(n) - 1
	nlattr.AddFlags(buf, b.lastReq, unix.NLM_F_ACK)
	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	errs := make([]error, n)
	for {
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
		done := false
		for _, msg := range msgs {
			i := int(msg.Header.Seq - first)
			if msg.Header.Type != unix.NLMSG_ERROR || i < 0 || i >= n || len(msg.Data) < 4 {
				continue // not ours: a stale reply
			}
			if e := -int32(binary.NativeEndian.Uint32(msg.Data)); e != 0 {
				errs[i] = mapErr(syscall.Errno(e))
			}
			done = done || msg.Header.Seq == last
		}
		if done {
			return errs, nil
		}
	}
}

// batchLocked returns the batch socket, opened on first use. n.mu is held.
func (n *Netlink) batchLocked() (*batchSocket, error) {
	if n.h == nil {
		return nil, errors.New("IPVS handle closed")
	}
	if n.batch == nil {
		b, err := openBatchSocket(n.ns, n.dumps.family)
		if err != nil {
			return nil, err
		}
		n.batch = b
	}
	return n.batch, nil
}

// exchangeLocked is batchSocket.exchange; after an error the socket is in
// an unknown state and is dropped (a new one opens next time). n.mu is held.
func (n *Netlink) exchangeLocked(buf []byte, first uint32, count int) ([]error, error) {
	res, err := n.batch.exchange(buf, first, count)
	if err != nil {
		n.batch.close()
		n.batch = nil
	}
	return res, err
}

// addService sends one IPVS_CMD_NEW_SERVICE on the batch socket: two system
// calls, where moby/ipvs needs three (it asks for the socket's address on
// every request) and several allocations.
func (n *Netlink) addService(vs ipvs.VirtualServer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, err := n.batchLocked()
	if err != nil {
		return err
	}
	first := b.seq + 1
	b.buf = b.appendNewService(b.buf[:0], vs)
	res, err := n.exchangeLocked(b.buf, first, 1)
	if err != nil {
		return err
	}
	return res[0]
}

// AddRealServers adds real servers to one virtual server, up to maxBatch
// requests per system call. errs[i] is what AddRealServer would have
// returned for rss[i].
func (n *Netlink) AddRealServers(ctx context.Context, k ipvs.Key, rss []ipvs.RealServer) []error {
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
	if err := ctx.Err(); err != nil {
		return fail(0, err)
	}
	b, err := n.batchLocked()
	if err != nil {
		return fail(0, err)
	}
	for lo := 0; lo < len(rss); lo += maxBatch {
		hi := min(lo+maxBatch, len(rss))
		buf, first := b.buf[:0], b.seq+1
		idx := make([]int, 0, hi-lo) // requests sent, by index into rss
		for i := lo; i < hi; i++ {
			if err := checkFamily(k, rss[i]); err != nil {
				errs[i] = err
				continue
			}
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
		res, err := n.exchangeLocked(buf, first, len(idx))
		if err != nil {
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
