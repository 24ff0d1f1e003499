package v1alpha1

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
)

// ServiceKey identifies one IPVS virtual service: an address, a port and a
// protocol. Two VirtualServices must never claim the same key.
//
// +kubebuilder:object:generate=false
type ServiceKey struct {
	Address  netip.Addr
	Port     int32
	Protocol Protocol
}

// String renders the key as address:port/protocol, e.g. 10.0.0.1:80/TCP or
// [2001:db8::1]:53/UDP.
func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Address, uint16(k.Port)), k.Protocol)
}

// ServiceKeys lists the address:port:protocol keys the VirtualService
// claims (on its EffectiveAddresses), sorted. Addresses that do not parse (the CRD rejects them, so only
// objects that bypassed validation have them) are skipped.
func (vs *VirtualService) ServiceKeys() []ServiceKey {
	var keys []ServiceKey
	for _, a := range vs.EffectiveAddresses() {
		addr, err := netip.ParseAddr(string(a))
		if err != nil {
			continue
		}
		for _, p := range vs.Spec.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = ProtocolTCP
			}
			keys = append(keys, ServiceKey{Address: addr.Unmap(), Port: p.Port, Protocol: proto})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	return keys
}

// Less orders keys by address, port, then protocol.
func (k ServiceKey) Less(o ServiceKey) bool {
	if c := k.Address.Compare(o.Address); c != 0 {
		return c < 0
	}
	if k.Port != o.Port {
		return k.Port < o.Port
	}
	return k.Protocol < o.Protocol
}

// Precedes reports whether a wins over b when both claim the same key: the
// older object wins; equal creation times fall back to namespace/name, so
// every node and the controller pick the same winner.
func Precedes(a, b *VirtualService) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// EffectiveAddresses returns the virtual IPs the VirtualService holds:
// spec.addresses when it names them; with spec.addressFamilies, the
// addresses the controller allocated (status.addresses) of a family it
// asks for, the first of each family. Until the controller allocated them
// it holds none. An allocated address that does not parse is kept, so that
// validation refuses it rather than have it vanish unnoticed.
func (vs *VirtualService) EffectiveAddresses() []IPAddress {
	if len(vs.Spec.Addresses) > 0 || len(vs.Spec.AddressFamilies) == 0 {
		return vs.Spec.Addresses
	}
	var out []IPAddress
	seen := map[AddressFamily]bool{}
	for _, a := range vs.Status.Addresses {
		addr, err := netip.ParseAddr(string(a))
		if err != nil {
			out = append(out, a)
			continue
		}
		f := FamilyOf(addr)
		if !seen[f] && slices.Contains(vs.Spec.AddressFamilies, f) {
			seen[f] = true
			out = append(out, a)
		}
	}
	return out
}

// FamilyOf returns the IP family of an address; an IPv4-mapped IPv6
// address counts as IPv4.
func FamilyOf(a netip.Addr) AddressFamily {
	if a.Unmap().Is4() {
		return AddressFamilyIPv4
	}
	return AddressFamilyIPv6
}
