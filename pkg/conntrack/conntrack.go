// Package conntrack lists and deletes netfilter conntrack flows of virtual
// services. Its job is to clear the flows that still point at a removed real
// server (above all UDP, where a client reusing its source port would
// otherwise be black-holed): one dump, a map lookup per flow, delete matches.
// This package holds the model (flows, targets, the matcher) and the
// Interface, free of netlink; package conntracknl implements it on the
// kernel, package conntracktest keeps flows in memory.
package conntrack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Interface is what kubelvs needs from conntrack.
type Interface interface {
	// ListFlows returns the flows whose original destination is
	// vip:port over proto, sorted.
	ListFlows(ctx context.Context, vip netip.Addr, proto uint8, port uint16) ([]Flow, error)
	// DeleteFlows deletes, in one pass over one dump per address family,
	// every flow matching one of the targets, and returns how many it
	// deleted. Flows already gone count as deleted.
	DeleteFlows(ctx context.Context, targets []Target) (int, error)
	// Close releases the netlink handle.
	Close() error
}

// Protocol numbers.
const (
	TCP  uint8 = 6
	UDP  uint8 = 17
	SCTP uint8 = 132
)

// Flow is one conntrack entry: the original direction (client to virtual
// address) and the reply direction (real server back to the client, after
// IPVS rewrote it). Flow is comparable and is its own key.
type Flow struct {
	Protocol uint8
	OrigSrc  netip.AddrPort
	OrigDst  netip.AddrPort
	ReplySrc netip.AddrPort
	ReplyDst netip.AddrPort
}

// Key returns the flow itself.
func (f Flow) Key() Flow { return f }

// Equal compares the tuples.
func (f Flow) Equal(o Flow) bool { return f == o }

// String formats the flow like "udp 10.0.0.5:1234->10.96.0.10:53 reply 10.99.2.2:5353->10.0.0.5:1234".
func (f Flow) String() string {
	return fmt.Sprintf("%s %s->%s reply %s->%s", ProtoName(f.Protocol), f.OrigSrc, f.OrigDst, f.ReplySrc, f.ReplyDst)
}

// Compare orders flows for sorted output.
func (f Flow) Compare(o Flow) int {
	for _, c := range []int{
		int(f.Protocol) - int(o.Protocol), f.OrigDst.Compare(o.OrigDst), f.OrigSrc.Compare(o.OrigSrc),
		f.ReplySrc.Compare(o.ReplySrc), f.ReplyDst.Compare(o.ReplyDst),
	} {
		if c != 0 {
			return c
		}
	}
	return 0
}

// SortFlows sorts flows in place.
func SortFlows(fs []Flow) { slices.SortFunc(fs, Flow.Compare) }

// ProtoName names an IP protocol number: tcp, udp, sctp, or the number.
func ProtoName(p uint8) string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// Target selects the flows of one virtual service that a real server
// answers: original destination VIP (address:port) over Protocol, reply
// source Backend. A Backend port of 0 matches any port of that address.
type Target struct {
	Protocol uint8
	VIP      netip.AddrPort
	Backend  netip.AddrPort
}

// String formats the target.
func (t Target) String() string {
	return fmt.Sprintf("%s %s via %s", ProtoName(t.Protocol), t.VIP, t.Backend)
}

// Matcher answers "does this flow belong to a target?" with map lookups, so
// a pass over N flows costs O(N) whatever the number of targets.
type Matcher struct {
	m map[Target]struct{}
}

// NewMatcher indexes the targets.
func NewMatcher(targets []Target) *Matcher {
	m := &Matcher{m: make(map[Target]struct{}, len(targets))}
	for _, t := range targets {
		t.VIP = netip.AddrPortFrom(t.VIP.Addr().Unmap(), t.VIP.Port())
		t.Backend = netip.AddrPortFrom(t.Backend.Addr().Unmap(), t.Backend.Port())
		m.m[t] = struct{}{}
	}
	return m
}

// Targets returns the indexed targets once each, addresses unmapped, in no
// particular order.
func (m *Matcher) Targets() []Target {
	out := make([]Target, 0, len(m.m))
	for t := range m.m {
		out = append(out, t)
	}
	return out
}

// Match reports whether the flow is one to delete.
func (m *Matcher) Match(f Flow) bool {
	t := Target{Protocol: f.Protocol, VIP: f.OrigDst, Backend: f.ReplySrc}
	if _, ok := m.m[t]; ok {
		return true
	}
	t.Backend = netip.AddrPortFrom(t.Backend.Addr(), 0)
	_, ok := m.m[t]
	return ok
}
