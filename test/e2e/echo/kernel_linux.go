package echo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	lib "github.com/lrh3321/ipset-go"
	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
)

// These talk to the kernel with the netlink libraries kubelvs uses, but not
// through kubelvs's packages: the foreign objects must be made the way
// another program makes them, and the dump must not share kubelvs's bugs.

// foreignService is the i-th foreign virtual service (0: ForeignService,
// then the same address on ports 10001, 10002...).
func foreignService(i int) *moby.Service {
	port := ForeignService.Port()
	if i > 0 {
		port = uint16(10000 + i)
	}
	return &moby.Service{
		Address:       net.IP(ForeignService.Addr().AsSlice()),
		Protocol:      syscall.IPPROTO_TCP,
		Port:          port,
		AddressFamily: syscall.AF_INET,
		SchedName:     "wlc",
		Netmask:       0xffffffff,
	}
}

// foreignSet is the name of the i-th foreign ipset.
func foreignSet(i int) string {
	if i == 0 {
		return ForeignSet
	}
	return fmt.Sprintf("%s-%d", ForeignSet, i)
}

// openIPVS opens an IPVS handle, or fails if the kernel has no IPVS:
// moby/ipvs only logs that, and its calls then "succeed" doing nothing.
func openIPVS() (*moby.Handle, error) {
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		return nil, fmt.Errorf("no IPVS in this kernel (generic netlink family IPVS: %w)", err)
	}
	h, err := moby.New("")
	if err != nil {
		return nil, fmt.Errorf("IPVS netlink: %w", err)
	}
	return h, nil
}

// openIPSet opens an ipset handle, or fails if the kernel has no ipset.
func openIPSet() (*lib.Handle, error) {
	h, err := lib.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("ipset netlink: %w", err)
	}
	if _, _, err := h.Protocol(); err != nil {
		h.Close()
		return nil, fmt.Errorf("no ipset in this kernel (protocol query: %w)", err)
	}
	return h, nil
}

// withHandles runs f with an IPVS and an ipset handle.
func withHandles(f func(*moby.Handle, *lib.Handle) error) error {
	h, err := openIPVS()
	if err != nil {
		return err
	}
	defer h.Close()
	sets, err := openIPSet()
	if err != nil {
		return err
	}
	defer sets.Close()
	return f(h, sets)
}

// AddForeign creates the ForeignCount foreign IPVS virtual services, each
// with a real server, and the foreign ipsets, replacing leftovers of an
// earlier run.
func AddForeign() error {
	if err := DeleteForeign(); err != nil {
		return err
	}
	return withHandles(addForeign)
}

func addForeign(h *moby.Handle, sets *lib.Handle) error {
	for i := range ForeignCount {
		svc := foreignService(i)
		if err := h.NewService(svc); err != nil {
			return fmt.Errorf("add IPVS service %s:%d: %w", ForeignService.Addr(), svc.Port, err)
		}
		dst := &moby.Destination{Address: net.IP(ForeignReal.Addr().AsSlice()), Port: ForeignReal.Port(), Weight: 3,
			ConnectionFlags: moby.ConnectionFlagMasq, AddressFamily: syscall.AF_INET}
		if err := h.NewDestination(svc, dst); err != nil {
			return fmt.Errorf("add IPVS real server %s: %w", ForeignReal, err)
		}
		if err := sets.Create(foreignSet(i), lib.TypeHashIPPort, lib.CreateOptions{Family: lib.FamilyIPV4}); err != nil {
			return fmt.Errorf("create ipset %s: %w", foreignSet(i), err)
		}
		proto, port := uint8(syscall.IPPROTO_TCP), svc.Port
		if err := sets.Add(foreignSet(i), &lib.Entry{IP: net.IP(ForeignService.Addr().AsSlice()), Protocol: &proto, Port: &port}); err != nil {
			return fmt.Errorf("add to ipset %s: %w", foreignSet(i), err)
		}
	}
	return nil
}

// DeleteForeign removes what AddForeign made; what is gone already is fine.
func DeleteForeign() error {
	return withHandles(deleteForeign)
}

func deleteForeign(h *moby.Handle, sets *lib.Handle) error {
	var errs []error
	for i := range ForeignCount {
		svc := foreignService(i)
		if err := h.DelService(svc); err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("delete IPVS service %s:%d: %w", ForeignService.Addr(), svc.Port, err))
		}
		if err := sets.Destroy(foreignSet(i)); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, lib.ErrSetNotExist) {
			errs = append(errs, fmt.Errorf("destroy ipset %s: %w", foreignSet(i), err))
		}
	}
	return errors.Join(errs...)
}

// DumpKernel lists every IPVS virtual service with its real servers, every
// ipset with its members, and kubelvs0 if it exists, sorted (see kernel.go).
func DumpKernel() ([]string, error) {
	var lines []string
	h, err := openIPVS()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	for _, s := range svcs {
		key := fmt.Sprintf("fwmark %d", s.FWMark)
		if s.FWMark == 0 {
			key = serviceKey(s.Protocol, addrPort(s.Address, s.Port))
		}
		lines = append(lines, fmt.Sprintf("ipvs %s %s flags=%#x timeout=%d", key, s.SchedName, s.Flags, s.Timeout))
		dsts, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("list real servers of %s: %w", key, err)
		}
		for _, d := range dsts {
			lines = append(lines, fmt.Sprintf("ipvs %s -> %s %s w=%d", key, addrPort(d.Address, d.Port), forwarding(d.ConnectionFlags), d.Weight))
		}
	}
	sets, err := openIPSet()
	if err != nil {
		return nil, err
	}
	defer sets.Close()
	all, err := sets.ListAll()
	if err != nil {
		return nil, fmt.Errorf("list ipsets: %w", err)
	}
	for _, s := range all {
		// A large set comes in several messages: its header line repeats,
		// and Compact below keeps one.
		lines = append(lines, fmt.Sprintf("ipset %s %s family=%d", s.SetName, s.TypeName, s.Family))
		for _, e := range s.Entries {
			lines = append(lines, fmt.Sprintf("ipset %s member %s", s.SetName, member(&e)))
		}
	}
	if _, err := netlink.LinkByName("kubelvs0"); err == nil {
		lines = append(lines, LinkLine)
	}
	slices.Sort(lines)
	return slices.Compact(lines), nil
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

func forwarding(flags uint32) string {
	switch flags & moby.ConnectionFlagFwdMask {
	case moby.ConnectionFlagMasq:
		return "masq"
	case moby.ConnectionFlagLocalNode:
		return "local"
	case moby.ConnectionFlagTunnel:
		return "tunnel"
	case moby.ConnectionFlagDirectRoute:
		return "route"
	}
	return fmt.Sprintf("fwd=%d", flags&moby.ConnectionFlagFwdMask)
}

// member prints an ipset member as the ipset tool does: "ADDR",
// "ADDR,PROTO:PORT", "ADDR,PROTO:PORT,NET", "NET".
func member(e *lib.Entry) string {
	ip := func(ip net.IP, cidr uint8) string {
		a, _ := netip.AddrFromSlice(ip)
		a = a.Unmap()
		if cidr == 0 || int(cidr) == a.BitLen() {
			return a.String()
		}
		return netip.PrefixFrom(a, int(cidr)).String()
	}
	var parts []string
	if e.IP != nil {
		parts = append(parts, ip(e.IP, e.CIDR))
	}
	if e.Port != nil {
		proto := uint16(0)
		if e.Protocol != nil {
			proto = uint16(*e.Protocol)
		}
		parts = append(parts, fmt.Sprintf("%s:%d", protoName(proto), *e.Port))
	}
	if e.IP2 != nil {
		parts = append(parts, ip(e.IP2, e.CIDR2))
	}
	return strings.Join(parts, ",")
}
