// Package announce is the model of how a node makes the VIPs it serves
// reachable from outside: host routes over BGP to the routers an
// administrator configures (BGPPeer), or answers to ARP and NDP from one
// node per address on the clients' link (layer 2). It holds the types the
// agent hands to a speaker and the choice of the node that answers for an
// address; the implementations live in sub-packages (bgp: GoBGP; layer2:
// raw ARP and NDP sockets) and the agent wires them (pkg/roles).
//
// It links no netlink library and opens no socket.
package announce

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
)

// Peer is one BGP session the node keeps, as configured by a BGPPeer.
type Peer struct {
	// Name is the BGPPeer's name.
	Name string
	// Address is the router's address; the session's family decides which
	// routes go to it: IPv4 host routes over an IPv4 session, IPv6 host
	// routes over an IPv6 one.
	Address netip.Addr
	// Port is the router's TCP port; 0 means 179.
	Port uint16
	// ASN is the router's autonomous system number; LocalASN ours. Equal
	// numbers make an internal (iBGP) session.
	ASN, LocalASN uint32
	// Password is the TCP MD5 password (RFC 2385); empty for none.
	Password string
	// HoldTime is the proposed hold time; 0 means 90 s. Keepalives are sent
	// every third of it.
	HoldTime time.Duration
}

// Session is the state of one BGP session.
type Session struct {
	Peer    string
	Address netip.Addr
	// State is the BGP finite state machine's state: Idle, Connect, Active,
	// OpenSent, OpenConfirm or Established.
	State string
	// Announced is how many routes the node advertises to the peer.
	Announced int
}

// Established is the State of a session that carries routes.
const Established = "Established"

// BGP is a BGP speaker as the agent uses it.
type BGP interface {
	// SetPeers makes the node's sessions exactly peers: it adds what is
	// new, removes what is gone and restarts a session whose configuration
	// changed.
	SetPeers(ctx context.Context, peers []Peer) error
	// Announce makes the host routes (/32, /128) advertised to every peer
	// of the address's family exactly addrs, with the node's own address
	// on each session as next hop: what is new is advertised, what is gone
	// withdrawn.
	Announce(ctx context.Context, addrs []netip.Addr) error
	// Sessions reports every session's state.
	Sessions() []Session
	// Stop withdraws every route, then closes every session.
	Stop(ctx context.Context) error
}

// Layer2 answers ARP (IPv4) and NDP (IPv6) requests for addresses on one
// interface, with that interface's hardware address.
type Layer2 interface {
	// Announce makes the addresses answered exactly addrs. An address new
	// to the set is also announced unsolicited (gratuitous ARP, unsolicited
	// neighbor advertisement), so that clients that cached another node's
	// hardware address move at once.
	Announce(ctx context.Context, addrs []netip.Addr) error
	// Stop stops answering.
	Stop()
}

// Owner is the node, among candidates, that answers for addr in layer-2
// mode: the one with the highest hash of (node, address) (rendezvous
// hashing). Every agent that sees the same candidates chooses the same
// node; when a candidate goes, only its addresses move, and when one comes
// back, only what it now wins moves to it. "" when there is no candidate.
func Owner(addr netip.Addr, candidates []string) string {
	var best string
	var bestScore uint64
	a := addr.AsSlice()
	for _, c := range candidates {
		h := sha256.New()
		h.Write([]byte(c))
		h.Write([]byte{0})
		h.Write(a)
		score := binary.BigEndian.Uint64(h.Sum(nil))
		if best == "" || score > bestScore || (score == bestScore && c < best) {
			best, bestScore = c, score
		}
	}
	return best
}
