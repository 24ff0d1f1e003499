// Package ipvsnl implements ipvs.Interface on the kernel through netlink:
// moby/ipvs for single reads and changes, raw generic netlink sockets for
// batched adds and for dumps. Only the agent's wiring (package roles) and kernel tests
// import it.
package ipvsnl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

// Netlink implements ipvs.Interface with moby/ipvs on one long-lived handle,
// except the adds of virtual and real servers, which a cold sync issues by
// the thousand: those go through a raw socket of its own (batch_linux.go).
// moby/ipvs sends one ACKed request per call and drops replies whose
// sequence number does not match, so concurrent use of one socket would lose
// replies: every call holds the mutex. The reads (dumps of every virtual
// server or of one's real servers, on a socket of their own parsed in
// place, and single gets on a second handle) go under rmu, apart from the
// writes: a dump of 10,000 virtual servers is many replies to parse, and
// on one handle every write (a change's, holding the syncer's lock)
// waited behind the periodic resync's dumps.
type Netlink struct {
	mu    sync.Mutex
	h     *moby.Handle
	batch *batchSocket // opened on first batched call
	rmu   sync.Mutex
	rh    *moby.Handle
	// dumps lists on a socket of its own, under rmu, and parses the
	// replies in place (dump_linux.go).
	dumps *dumper
	// ns is the network namespace New was called in, where the raw
	// sockets (batch, dumps) are opened.
	ns netns.NsHandle
}

var _ ipvs.Interface = (*Netlink)(nil)

// New opens an IPVS handle in the current network namespace. It returns an
// error wrapping ErrNoIPVS if the kernel has no IPVS: moby/ipvs itself only
// logs that case and then fails every later call obscurely.
func New() (*Netlink, error) {
	if err := CheckKernel(); err != nil {
		return nil, err
	}
	fam, err := netlink.GenlFamilyGet("IPVS")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ipvs.ErrNoIPVS, err)
	}
	h, err := moby.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink handle: %w", err)
	}
	rh, err := moby.New("")
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open IPVS netlink handle for reads: %w", err)
	}
	ns, err := netns.Get()
	if err != nil {
		h.Close()
		rh.Close()
		return nil, fmt.Errorf("the IPVS handle's network namespace: %w", err)
	}
	dumps, err := newDumper(ns, fam.ID)
	if err != nil {
		h.Close()
		rh.Close()
		ns.Close()
		return nil, err
	}
	return &Netlink{h: h, rh: rh, dumps: dumps, ns: ns}, nil
}

// CheckKernel returns an error wrapping ErrNoIPVS unless the kernel answers
// for the IPVS generic netlink family. Resolving the family by name lets the
// kernel autoload ip_vs where module autoloading works.
func CheckKernel() error {
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		_, perr := os.Stat("/proc/net/ip_vs")
		return fmt.Errorf("%w (IPVS generic netlink family: %v; /proc/net/ip_vs: %v)", ipvs.ErrNoIPVS, err, perr)
	}
	return nil
}

// Close releases the handle.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	if n.batch != nil {
		n.batch.close()
		n.batch = nil
	}
	n.rmu.Lock()
	defer n.rmu.Unlock()
	if n.rh != nil {
		n.rh.Close()
		n.rh = nil
	}
	n.dumps.close()
	n.ns.Close()
	return nil
}

// do runs a write on the write handle.
func (n *Netlink) do(f func(h *moby.Handle) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h == nil {
		return errors.New("IPVS handle closed")
	}
	return mapErr(f(n.h))
}

// read runs a read on the read handle.
func (n *Netlink) read(f func(h *moby.Handle) error) error {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	if n.rh == nil {
		return errors.New("IPVS handle closed")
	}
	return mapErr(f(n.rh))
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%w: %w", ipvs.ErrExists, err)
	case errors.Is(err, syscall.ESRCH), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: %w", ipvs.ErrNotFound, err)
	}
	return err
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return syscall.AF_INET
	}
	return syscall.AF_INET6
}

// keyService is the part of a service the kernel uses to find it.
func keyService(k ipvs.Key) *moby.Service {
	return &moby.Service{
		Address:       net.IP(k.Address.AsSlice()),
		Protocol:      uint16(k.Protocol),
		Port:          k.Port,
		AddressFamily: family(k.Address),
		Netmask:       fullNetmask(k.Address),
	}
}

// fullNetmask is the persistence netmask of one client address: the kernel
// wants an IPv4 mask as a big-endian word and an IPv6 one as a prefix length.
func fullNetmask(a netip.Addr) uint32 { return netmask(a, a.BitLen()) }

func netmask(a netip.Addr, n int) uint32 {
	if a.Is6() {
		return uint32(n)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^uint32(0)<<(32-n))
	// moby/ipvs writes the attribute in host order: hand it the word whose
	// host-order bytes are the big-endian mask.
	return binary.NativeEndian.Uint32(b[:])
}

func netmaskBits(a netip.Addr, m uint32) int {
	if a.Is6() {
		return int(m)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], m)
	return bits.LeadingZeros32(^binary.BigEndian.Uint32(b[:]))
}

func toService(vs ipvs.VirtualServer) *moby.Service {
	s := keyService(vs.Key())
	s.SchedName = vs.Scheduler
	s.Flags = uint32(vs.Flags & ipvs.UserFlags)
	if vs.Timeout > 0 {
		s.Flags |= uint32(ipvs.FlagPersistent)
		s.Timeout = vs.Timeout
		s.Netmask = netmask(vs.Address, vs.Netmask())
	}
	return s
}

func fromService(s *moby.Service) (ipvs.VirtualServer, bool) {
	a, ok := netip.AddrFromSlice(s.Address)
	if s.FWMark != 0 || !ok {
		return ipvs.VirtualServer{}, false // firewall-mark services are never ours
	}
	a = a.Unmap()
	if s.AddressFamily == syscall.AF_INET6 && a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	vs := ipvs.VirtualServer{
		Address:   a,
		Protocol:  ipvs.Protocol(s.Protocol),
		Port:      s.Port,
		Scheduler: s.SchedName,
		Flags:     ipvs.Flags(s.Flags) & ipvs.UserFlags,
	}
	if ipvs.Flags(s.Flags)&ipvs.FlagPersistent != 0 {
		vs.Timeout = s.Timeout
		vs.NetmaskBits = netmaskBits(a, s.Netmask)
	}
	return vs, true
}

var fwdToKernel = map[ipvs.Forwarding]uint32{
	ipvs.Masquerade:  moby.ConnectionFlagMasq,
	ipvs.DirectRoute: moby.ConnectionFlagDirectRoute,
	ipvs.Tunnel:      moby.ConnectionFlagTunnel,
}

// checkFamily refuses a real server of the other address family than its
// virtual server's. Neither moby/ipvs nor the batch socket sends the
// destination's family (IPVS_DEST_ATTR_ADDR_FAMILY), so the kernel would
// read the address as one of the virtual server's family: an IPv6 real
// server of an IPv4 virtual server became the IPv4 address of its first
// four bytes.
func checkFamily(k ipvs.Key, rs ipvs.RealServer) error {
	if rs.Address.Is4() != k.Address.Is4() {
		return fmt.Errorf("real server %s of %s: not of the virtual server's address family", rs.Key(), k)
	}
	return nil
}

func toDest(rs ipvs.RealServer) (*moby.Destination, error) {
	f, ok := fwdToKernel[rs.Forwarding]
	if !ok {
		return nil, fmt.Errorf("real server %s: unknown forwarding %s", rs.Key(), rs.Forwarding)
	}
	return &moby.Destination{
		Address:         net.IP(rs.Address.AsSlice()),
		Port:            rs.Port,
		Weight:          rs.Weight,
		ConnectionFlags: f,
		AddressFamily:   family(rs.Address),
	}, nil
}

func fromDest(d *moby.Destination) ipvs.RealServer {
	a, _ := netip.AddrFromSlice(d.Address)
	rs := ipvs.RealServer{
		Address:       a.Unmap(),
		Port:          d.Port,
		Weight:        d.Weight,
		ActiveConns:   d.ActiveConnections,
		InactiveConns: d.InactiveConnections,
		Forwarding:    ipvs.Forwarding(100 + d.ConnectionFlags&moby.ConnectionFlagFwdMask), // shows as unknown
	}
	for f, k := range fwdToKernel {
		if k == d.ConnectionFlags&moby.ConnectionFlagFwdMask {
			rs.Forwarding = f
		}
	}
	return rs
}

// ListVirtualServers dumps all services in one request.
func (n *Netlink) ListVirtualServers(ctx context.Context) ([]ipvs.VirtualServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []ipvs.VirtualServer
	if err := n.read(func(*moby.Handle) (err error) { out, err = n.dumps.virtualServers(); return err }); err != nil {
		return nil, fmt.Errorf("list virtual servers: %w", err)
	}
	ipvs.SortVirtualServers(out)
	return out, nil
}

// GetVirtualServer reads one service.
func (n *Netlink) GetVirtualServer(ctx context.Context, k ipvs.Key) (ipvs.VirtualServer, error) {
	if err := ctx.Err(); err != nil {
		return ipvs.VirtualServer{}, err
	}
	var s *moby.Service
	err := n.read(func(h *moby.Handle) (err error) { s, err = h.GetService(keyService(k)); return err })
	if err != nil {
		return ipvs.VirtualServer{}, fmt.Errorf("get virtual server %s: %w", k, err)
	}
	vs, _ := fromService(s)
	return vs, nil
}

// AddVirtualServer creates a service (through the batch socket: the add
// is on the path of every new virtual server).
func (n *Netlink) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := vs.Validate(); err != nil {
		return err
	}
	if err := n.addService(vs); err != nil {
		return fmt.Errorf("add virtual server %s: %w", vs, err)
	}
	return nil
}

// UpdateVirtualServer edits a service.
func (n *Netlink) UpdateVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := vs.Validate(); err != nil {
		return err
	}
	if err := n.do(func(h *moby.Handle) error { return h.UpdateService(toService(vs)) }); err != nil {
		return fmt.Errorf("update virtual server %s: %w", vs, err)
	}
	return nil
}

// DeleteVirtualServer deletes a service; a missing one is success.
func (n *Netlink) DeleteVirtualServer(ctx context.Context, k ipvs.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := n.do(func(h *moby.Handle) error { return h.DelService(keyService(k)) })
	if err != nil && !errors.Is(err, ipvs.ErrNotFound) {
		return fmt.Errorf("delete virtual server %s: %w", k, err)
	}
	return nil
}

// ListRealServers dumps the destinations of one service.
func (n *Netlink) ListRealServers(ctx context.Context, k ipvs.Key) ([]ipvs.RealServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []ipvs.RealServer
	if err := n.read(func(*moby.Handle) (err error) { out, err = n.dumps.realServers(k); return err }); err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", k, err)
	}
	if len(out) == 0 {
		// The kernel answers a dump of the destinations of a service that
		// does not exist with none, not with an error: tell an empty
		// virtual server from a missing one.
		if _, err := n.GetVirtualServer(ctx, k); err != nil {
			return nil, fmt.Errorf("list real servers of %s: %w", k, err)
		}
	}
	ipvs.SortRealServers(out)
	return out, nil
}

// AddRealServer adds a destination.
func (n *Netlink) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkFamily(k, rs); err != nil {
		return err
	}
	d, err := toDest(rs)
	if err != nil {
		return err
	}
	if err := n.do(func(h *moby.Handle) error { return h.NewDestination(keyService(k), d) }); err != nil {
		return fmt.Errorf("add real server %s to %s: %w", rs, k, err)
	}
	return nil
}

// UpdateRealServer edits a destination.
func (n *Netlink) UpdateRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkFamily(k, rs); err != nil {
		return err
	}
	d, err := toDest(rs)
	if err != nil {
		return err
	}
	if err := n.do(func(h *moby.Handle) error { return h.UpdateDestination(keyService(k), d) }); err != nil {
		return fmt.Errorf("update real server %s of %s: %w", rs, k, err)
	}
	return nil
}

// DeleteRealServer deletes a destination; a missing one is success.
func (n *Netlink) DeleteRealServer(ctx context.Context, k ipvs.Key, rk ipvs.RealKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := &moby.Destination{Address: net.IP(rk.Address.AsSlice()), Port: rk.Port, AddressFamily: family(rk.Address)}
	err := n.do(func(h *moby.Handle) error { return h.DelDestination(keyService(k), d) })
	if err != nil && !errors.Is(err, ipvs.ErrNotFound) {
		return fmt.Errorf("delete real server %s of %s: %w", rk, k, err)
	}
	return nil
}
