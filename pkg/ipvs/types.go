// Package ipvs is the model of the kernel's IPVS table — virtual servers,
// real servers, their keys — and the Interface kubelvs programs it through.
// It imports no netlink: the netlink implementation is package ipvsnl, the
// fake that keeps state is package ipvstest, and package ownership guards
// an Interface so that only virtual servers kubelvs created are changed.
package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

var (
	// ErrNotFound is returned when a virtual or real server does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when adding a virtual or real server that exists.
	ErrExists = errors.New("already exists")
	// ErrNotOwned is returned when a call would change a virtual server
	// kubelvs did not create.
	ErrNotOwned = errors.New("virtual server not owned by kubelvs")
	// ErrNoIPVS is returned by New when the kernel has no IPVS.
	ErrNoIPVS = errors.New("the kernel has no IPVS: load the ip_vs module (modprobe ip_vs) or use a kernel built with CONFIG_IP_VS")
)

// Interface is what kubelvs needs from IPVS. There is deliberately no
// "flush everything": other programs' virtual servers must survive.
type Interface interface {
	// ListVirtualServers returns every virtual server in the kernel (owned
	// or not) in one dump, sorted by key.
	ListVirtualServers(ctx context.Context) ([]VirtualServer, error)
	// GetVirtualServer returns one virtual server or ErrNotFound.
	GetVirtualServer(ctx context.Context, k Key) (VirtualServer, error)
	// AddVirtualServer creates a virtual server; ErrExists if present.
	AddVirtualServer(ctx context.Context, vs VirtualServer) error
	// UpdateVirtualServer changes scheduler, flags and persistence.
	UpdateVirtualServer(ctx context.Context, vs VirtualServer) error
	// DeleteVirtualServer deletes a virtual server and its real servers;
	// one already gone is success.
	DeleteVirtualServer(ctx context.Context, k Key) error
	// ListRealServers returns the real servers of a virtual server, sorted.
	ListRealServers(ctx context.Context, k Key) ([]RealServer, error)
	// AddRealServer adds a real server; ErrExists if present.
	AddRealServer(ctx context.Context, k Key, rs RealServer) error
	// UpdateRealServer changes weight and forwarding method.
	UpdateRealServer(ctx context.Context, k Key, rs RealServer) error
	// DeleteRealServer removes a real server; one already gone is success.
	DeleteRealServer(ctx context.Context, k Key, rk RealKey) error
	// Close releases kernel handles.
	Close() error
}

// RealServerBatcher is implemented by an Interface that can add many real
// servers of one virtual server with fewer kernel round trips than one
// AddRealServer each. Callers use it when present and fall back to
// AddRealServer otherwise (AddRealServers does that for them).
type RealServerBatcher interface {
	// AddRealServers adds each real server to k; errs[i] is what
	// AddRealServer(k, rss[i]) would have returned.
	AddRealServers(ctx context.Context, k Key, rss []RealServer) (errs []error)
}

// AddRealServers adds real servers to k through i's RealServerBatcher if
// it has one, else one AddRealServer each. errs has one entry per rss.
func AddRealServers(ctx context.Context, i Interface, k Key, rss []RealServer) []error {
	if b, ok := i.(RealServerBatcher); ok {
		return b.AddRealServers(ctx, k, rss)
	}
	errs := make([]error, len(rss))
	for j, rs := range rss {
		errs[j] = i.AddRealServer(ctx, k, rs)
	}
	return errs
}

// Protocol is an IP protocol number.
type Protocol uint16

// The protocols IPVS balances.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// String returns "TCP", "UDP" or "SCTP".
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// ParseProtocol parses "TCP", "UDP" or "SCTP" (any case).
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", s)
}

// Schedulers lists the IPVS schedulers kubelvs supports.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"}

// Flags are the scheduler flags of a virtual server, with the kernel's bit
// values (IP_VS_SVC_F_SCHED1/2 and ONEPACKET).
type Flags uint32

const (
	// FlagOnePacket schedules each UDP datagram on its own.
	FlagOnePacket Flags = 0x0004
	// FlagFallback is sh-fallback / mh-fallback: pick another real server
	// when the hashed one is unavailable.
	FlagFallback Flags = 0x0008
	// FlagPort is sh-port / mh-port: hash the source port as well.
	FlagPort Flags = 0x0010

	// FlagPersistent is set by the implementation when Timeout > 0.
	FlagPersistent Flags = 0x0001
	// UserFlags are the bits a VirtualServer may carry.
	UserFlags = FlagOnePacket | FlagFallback | FlagPort
)

// ParseSchedulerFlag maps "sh-fallback", "sh-port", "mh-fallback",
// "mh-port" and "ops" to flags.
func ParseSchedulerFlag(s string) (Flags, error) {
	switch s {
	case "sh-fallback", "mh-fallback":
		return FlagFallback, nil
	case "sh-port", "mh-port":
		return FlagPort, nil
	case "ops":
		return FlagOnePacket, nil
	}
	return 0, fmt.Errorf("unknown scheduler flag %q", s)
}

// String lists the flags as "fallback|port|ops".
func (f Flags) String() string {
	var s []string
	if f&FlagFallback != 0 {
		s = append(s, "fallback")
	}
	if f&FlagPort != 0 {
		s = append(s, "port")
	}
	if f&FlagOnePacket != 0 {
		s = append(s, "ops")
	}
	return strings.Join(s, "|")
}

// Key identifies a virtual server.
type Key struct {
	Address  netip.Addr
	Protocol Protocol
	Port     uint16
}

// String formats the key as "TCP/10.0.0.1:80" or "UDP/[fd00::1]:53".
func (k Key) String() string {
	return k.Protocol.String() + "/" + netip.AddrPortFrom(k.Address, k.Port).String()
}

// Compare orders keys by address, protocol, port.
func (k Key) Compare(o Key) int {
	if c := k.Address.Compare(o.Address); c != 0 {
		return c
	}
	if k.Protocol != o.Protocol {
		return int(k.Protocol) - int(o.Protocol)
	}
	return int(k.Port) - int(o.Port)
}

// VirtualServer is an IPVS service.
type VirtualServer struct {
	Address   netip.Addr
	Protocol  Protocol
	Port      uint16
	Scheduler string
	Flags     Flags
	// Timeout is the persistence timeout in seconds; 0 disables persistence.
	Timeout uint32
	// NetmaskBits groups clients for persistence: a prefix length (24 puts a
	// whole /24 on one real server). 0 means a single address (32 or 128).
	NetmaskBits int
}

// Key returns the identity of the virtual server.
func (v VirtualServer) Key() Key { return Key{v.Address, v.Protocol, v.Port} }

// Netmask returns NetmaskBits with 0 resolved to the full address length.
func (v VirtualServer) Netmask() int {
	if v.NetmaskBits == 0 {
		return v.Address.BitLen()
	}
	return v.NetmaskBits
}

// Equal compares everything the kernel stores.
func (v VirtualServer) Equal(o VirtualServer) bool {
	return v.Key() == o.Key() && v.Scheduler == o.Scheduler && v.Flags&UserFlags == o.Flags&UserFlags &&
		v.Timeout == o.Timeout && (v.Timeout == 0 || v.Netmask() == o.Netmask())
}

// String formats the virtual server like "TCP/10.0.0.1:80 wrr flags=port persistent=300s/24".
func (v VirtualServer) String() string {
	s := v.Key().String() + " " + v.Scheduler
	if f := v.Flags & UserFlags; f != 0 {
		s += " flags=" + f.String()
	}
	if v.Timeout > 0 {
		s += fmt.Sprintf(" persistent=%ds/%d", v.Timeout, v.Netmask())
	}
	return s
}

// Validate checks the fields the kernel would reject less clearly.
func (v VirtualServer) Validate() error {
	if !v.Address.IsValid() || v.Address.Zone() != "" || v.Address.Is4In6() {
		return fmt.Errorf("virtual server %s: bad address", v.Key())
	}
	switch v.Protocol {
	case TCP, UDP, SCTP:
	default:
		return fmt.Errorf("virtual server %s: unsupported protocol", v.Key())
	}
	if !slices.Contains(Schedulers, v.Scheduler) {
		return fmt.Errorf("virtual server %s: unknown scheduler %q", v.Key(), v.Scheduler)
	}
	if v.Flags&^UserFlags != 0 {
		return fmt.Errorf("virtual server %s: unknown flags %#x", v.Key(), uint32(v.Flags))
	}
	if n := v.NetmaskBits; n < 0 || n > v.Address.BitLen() {
		return fmt.Errorf("virtual server %s: bad persistence netmask /%d", v.Key(), n)
	}
	return nil
}

// Forwarding is how IPVS sends packets to a real server.
type Forwarding uint8

// Forwarding methods.
const (
	Masquerade Forwarding = iota
	DirectRoute
	Tunnel
)

// String returns "Masquerade", "DirectRoute" or "Tunnel".
func (f Forwarding) String() string {
	switch f {
	case Masquerade:
		return "Masquerade"
	case DirectRoute:
		return "DirectRoute"
	case Tunnel:
		return "Tunnel"
	}
	return "forwarding(" + strconv.Itoa(int(f)) + ")"
}

// ParseForwarding parses the API names of the forwarding methods.
func ParseForwarding(s string) (Forwarding, error) {
	for _, f := range []Forwarding{Masquerade, DirectRoute, Tunnel} {
		if f.String() == s {
			return f, nil
		}
	}
	return 0, fmt.Errorf("unknown forwarding method %q", s)
}

// RealKey identifies a real server within a virtual server.
type RealKey struct {
	Address netip.Addr
	Port    uint16
}

// String formats the key as "10.0.0.2:8080".
func (k RealKey) String() string { return netip.AddrPortFrom(k.Address, k.Port).String() }

// RealServer is an IPVS destination.
type RealServer struct {
	Address    netip.Addr
	Port       uint16
	Weight     int
	Forwarding Forwarding
	// ActiveConns and InactiveConns are read from the kernel and ignored
	// when writing or comparing.
	ActiveConns   int
	InactiveConns int
}

// Key returns the identity of the real server.
func (r RealServer) Key() RealKey { return RealKey{r.Address, r.Port} }

// Equal compares the configured fields (not the connection counters).
func (r RealServer) Equal(o RealServer) bool {
	return r.Key() == o.Key() && r.Weight == o.Weight && r.Forwarding == o.Forwarding
}

// String formats the real server like "10.0.0.2:8080 w=3 Masquerade".
func (r RealServer) String() string {
	return fmt.Sprintf("%s w=%d %s", r.Key(), r.Weight, r.Forwarding)
}

// Service is a virtual server with its real servers, as List returns it.
type Service struct {
	VirtualServer
	RealServers []RealServer
}

// SortVirtualServers sorts by key.
func SortVirtualServers(vs []VirtualServer) {
	slices.SortFunc(vs, func(a, b VirtualServer) int { return a.Key().Compare(b.Key()) })
}

// SortRealServers sorts by address then port.
func SortRealServers(rs []RealServer) {
	slices.SortFunc(rs, func(a, b RealServer) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
}

// List returns the virtual servers for which keep is true (all if keep is
// nil) with their real servers: one dump of the virtual servers plus one per
// kept virtual server, which is the fewest the kernel allows (it only dumps
// destinations of one named service).
func List(ctx context.Context, i Interface, keep func(Key) bool) ([]Service, error) {
	vss, err := i.ListVirtualServers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(vss))
	for _, vs := range vss {
		if keep != nil && !keep(vs.Key()) {
			continue
		}
		rss, err := i.ListRealServers(ctx, vs.Key())
		if errors.Is(err, ErrNotFound) {
			continue // deleted between the two dumps
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Service{VirtualServer: vs, RealServers: rss})
	}
	return out, nil
}
