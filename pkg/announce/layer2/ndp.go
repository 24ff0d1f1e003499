package layer2

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// allNodes is the link-local all-nodes multicast group, ff02::1.
var allNodes = netip.MustParseAddr("ff02::1")

// listenNDP opens an ICMPv6 socket that reads the neighbor solicitations
// reaching the node and writes advertisements out of ifi. It is bound to
// the unspecified address, not to ifi's link-local one: a socket bound to an
// address reads only the unicast packets sent to that address, and a
// client probing a stale entry (NUD) sends its solicitation to the VIP
// itself. As it is not bound to ifi either, every read reports its
// interface and hop limit, and what did not come in on ifi with a hop limit
// of 255 is dropped. The kernel filters all but neighbor solicitations.
func listenNDP(ifi *net.Interface) (*ndp.Conn, error) {
	c, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return nil, err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	err = errors.Join(
		c.SetICMPFilter(&f),
		c.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true),
	)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// readNDP answers neighbor solicitations until the socket closes.
func (r *Responder) readNDP() {
	defer r.wg.Done()
	buf := make([]byte, max(r.ifi.MTU, 1500))
	for {
		// ReadRaw, not ReadFrom: ReadFrom drops what comes from the
		// socket's own address, here ::, the source of every solicitation
		// of duplicate address detection.
		n, cm, src, err := r.ndp.ReadRaw(buf)
		if err != nil {
			if r.backoff("ndp", err) {
				continue
			}
			return
		}
		m, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		ns, ok := m.(*ndp.NeighborSolicitation)
		if !ok || cm == nil || cm.IfIndex != r.ifi.Index || cm.HopLimit != ndp.HopLimit || !r.has(ns.TargetAddress) {
			continue
		}
		na, dst, ok := advertisement(ns, src, r.mac)
		if !ok {
			continue
		}
		if err := r.ndp.WriteTo(na, nil, dst); err != nil {
			if !r.isStopped() {
				r.log.Error(err, "Neighbor advertisement failed", "address", ns.TargetAddress, "to", dst)
			}
			continue
		}
		r.m.answers.WithLabelValues("ipv6").Inc()
	}
}

// advertisement is the answer to ns, received from src, and where it goes
// (RFC 4861, 7.2.4): to the solicitation's source with the Solicited flag,
// or, for duplicate address detection (source ::), to all-nodes without
// it. Override is set (we are the address's owner) and the target
// link-layer address option carries mac. It refuses a solicitation that
// carries mac as its source link-layer address (our own node's) or an
// invalid one (source :: with a source link-layer address option).
func advertisement(ns *ndp.NeighborSolicitation, src netip.Addr, mac net.HardwareAddr) (*ndp.NeighborAdvertisement, netip.Addr, bool) {
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			if bytes.Equal(lla.Addr, mac) || src.IsUnspecified() {
				return nil, netip.Addr{}, false
			}
		}
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ns.TargetAddress,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	if src.IsUnspecified() {
		return na, allNodes, true
	}
	if src.IsMulticast() {
		return nil, netip.Addr{}, false
	}
	na.Solicited = true
	return na, src, true
}

// unsolicitedNA advertises a to all-nodes with the Override flag, so that
// neighbors that have an entry for a replace its hardware address with
// ours (RFC 4861, 7.2.6); neighbors without one create none.
func (r *Responder) unsolicitedNA(a netip.Addr) error {
	if r.ndp == nil {
		return errors.New("no NDP socket")
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: a,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.mac}},
	}
	return r.ndp.WriteTo(na, nil, allNodes)
}

// join makes the NDP socket a member of a's solicited-node multicast group
// on the interface, unless another address of the set has made it one:
// the node then receives the multicast solicitations for a (and the switch,
// if it snoops MLD, forwards them). r.mu is held.
func (r *Responder) join(a netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return err
	}
	if r.groups[g] == 0 {
		if err := r.ndp.JoinGroup(g); err != nil {
			return fmt.Errorf("layer2: join %s for %s: %w", g, a, err)
		}
	}
	r.groups[g]++
	return nil
}

// leave undoes join. r.mu is held.
func (r *Responder) leave(a netip.Addr) {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return
	}
	switch r.groups[g] {
	case 0:
		return
	case 1:
		delete(r.groups, g)
		if err := r.ndp.LeaveGroup(g); err != nil {
			r.log.Error(err, "Leaving a solicited-node multicast group failed", "group", g, "address", a)
		}
	default:
		r.groups[g]--
	}
}
