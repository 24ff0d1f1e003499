package ipvsnl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"

	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
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
// (Netlink.rmu). A netlink socket belongs to the network namespace it
// was opened in, and the handle is that of the namespace New was called
// in (test/multinode keeps one per simulated node), whatever thread calls
// it later: so the socket is opened in that namespace (socketIn).
type dumper struct {
	ns     netns.NsHandle
	family uint16
	fd     int // -1 after a failed dump: opened again, in ns
	seq    uint32
	rbuf   []byte
}

func newDumper(ns netns.NsHandle, family uint16) (*dumper, error) {
	d := &dumper{ns: ns, family: family, fd: -1}
	return d, d.open()
}

// open opens the socket, in the handle's namespace.
func (d *dumper) open() error {
	fd, err := socketIn(d.ns)
	if err != nil {
		return err
	}
	// A dump's replies are at most 32 KiB each (netlink_dump).
	d.fd, d.rbuf = fd, make([]byte, 1<<16)
	return nil
}

func (d *dumper) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// dump sends one request (cmd, with the attributes f writes) and calls
// each with the attributes of every reply, after the generic netlink
// header. A dump is read to its end even after an error of each (the
// kernel refuses another dump on the socket until then); after a failed
// send or receive the socket is closed, and the next dump opens another.
func (d *dumper) dump(cmd uint8, f func([]byte) []byte, each func([]byte) error) (err error) {
	if d.fd < 0 {
		if err := d.open(); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && !errors.Is(err, errMalformed) && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.ENOENT) {
			// A failed send or receive: the socket's state is unknown.
			d.close()
		}
	}()
	d.seq++
	seq := d.seq
	b, off := nlattr.Begin(nil, d.family, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b = append(b, (&nl.Genlmsg{Command: cmd, Version: 1}).Serialize()...)
	if f != nil {
		b = f(b)
	}
	b = nlattr.End(b, off)
	for {
		err = unix.Sendto(d.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return err
	}
	var failed error
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
				return failed
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errMalformed
				}
				if e := -int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return syscall.Errno(e)
				}
				return fmt.Errorf("%w: an acknowledgement before the end of a dump", errMalformed)
			}
			// After a malformed reply the dump is read to its end, without
			// parsing: the kernel refuses another dump on the socket
			// (EBUSY) until this one is done.
			switch {
			case failed != nil:
			case len(m.Data) < nl.SizeofGenlmsg:
				failed = errMalformed
			default:
				failed = each(m.Data[nl.SizeofGenlmsg:])
			}
		}
	}
}

// attrReader reads fixed-size attribute values, and remembers whether
// any was too short to read.
type attrReader struct{ short bool }

func (r *attrReader) u16(v []byte) uint16 {
	if len(v) < 2 {
		r.short = true
		return 0
	}
	return binary.NativeEndian.Uint16(v)
}

func (r *attrReader) u32(v []byte) uint32 {
	if len(v) < 4 {
		r.short = true
		return 0
	}
	return binary.NativeEndian.Uint32(v)
}

// port reads a port, which the kernel sends in network byte order.
func (r *attrReader) port(v []byte) uint16 {
	if len(v) < 2 {
		r.short = true
		return 0
	}
	return binary.BigEndian.Uint16(v)
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
	var r attrReader
	nlattr.Each(body, func(t uint16, v []byte) {
		switch t {
		case ipvsSvcAttrAF:
			s.AddressFamily = r.u16(v)
		case ipvsSvcAttrProto:
			s.Protocol = r.u16(v)
		case ipvsSvcAttrAddr:
			addr = v
		case ipvsSvcAttrPort:
			s.Port = r.port(v)
		case ipvsSvcAttrFWMark:
			s.FWMark = r.u32(v)
		case ipvsSvcAttrSched:
			if i := bytes.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			s.SchedName = schedName(v)
		case ipvsSvcAttrFlags:
			s.Flags = r.u32(v) // struct ip_vs_flags: the flags, then a mask
		case ipvsSvcAttrTimeout:
			s.Timeout = r.u32(v)
		case ipvsSvcAttrNetmask:
			s.Netmask = r.u32(v)
		}
	})
	if r.short {
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
	var r attrReader
	nlattr.Each(body, func(t uint16, v []byte) {
		switch t {
		case ipvsDestAttrAF:
			d.AddressFamily = r.u16(v)
		case ipvsDestAttrAddr:
			addr = v
		case ipvsDestAttrPort:
			d.Port = r.port(v)
		case ipvsDestAttrFwd:
			d.ConnectionFlags = r.u32(v)
		case ipvsDestAttrWeight:
			d.Weight = int(r.u32(v))
		case ipvsDestAttrUpper:
			d.UpperThreshold = r.u32(v)
		case ipvsDestAttrLower:
			d.LowerThreshold = r.u32(v)
		case ipvsDestAttrActive:
			d.ActiveConnections = int(r.u32(v))
		case ipvsDestAttrInactive:
			d.InactiveConnections = int(r.u32(v))
		}
	})
	if r.short {
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

// virtualServers lists every virtual server of ours' kind (no
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

// realServers lists the real servers of k, as fromDest reads them.
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

// socketIn opens and binds a generic netlink socket in the network
// namespace ns, from a thread of its own while it switches.
func socketIn(ns netns.NsHandle) (int, error) {
	type opened struct {
		fd  int
		err error
	}
	done := make(chan opened, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- opened{-1, fmt.Errorf("IPVS netlink socket: %w", err)}
			return
		}
		defer cur.Close()
		if !cur.Equal(ns) {
			if err := netns.Set(ns); err != nil {
				runtime.UnlockOSThread()
				done <- opened{-1, fmt.Errorf("IPVS netlink socket: enter the handle's network namespace: %w", err)}
				return
			}
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
		if err == nil {
			if err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
				unix.Close(fd)
			}
		}
		if !cur.Equal(ns) && netns.Set(cur) != nil {
			// The thread stays locked and ends with this goroutine: it
			// is in another namespace than the runtime expects.
			done <- opened{-1, errors.New("IPVS netlink socket: cannot return to the thread's network namespace")}
			if err == nil {
				unix.Close(fd)
			}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			done <- opened{-1, fmt.Errorf("IPVS netlink socket: %w", err)}
			return
		}
		done <- opened{fd, nil}
	}()
	o := <-done
	return o.fd, o.err
}
