package agent

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

// LazyBGP is a BGP speaker started only when this node first has a peer:
// an agent with no BGPPeer runs no BGP at all. It keeps what it is asked
// to announce until then.
type LazyBGP struct {
	// New starts the speaker, given the first peers (their local ASN is
	// the speaker's own).
	New func(peers []announce.Peer) (announce.BGP, error)

	mu      sync.Mutex
	speaker announce.BGP
	addrs   []netip.Addr
	stopped bool
}

var _ announce.BGP = (*LazyBGP)(nil)

// SetPeers implements announce.BGP.
func (l *LazyBGP) SetPeers(ctx context.Context, peers []announce.Peer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil
	}
	if l.speaker == nil {
		if len(peers) == 0 {
			return nil
		}
		s, err := l.New(peers)
		if err != nil {
			return err
		}
		if err := s.Announce(ctx, l.addrs); err != nil {
			_ = s.Stop(ctx)
			return err
		}
		l.speaker = s
	}
	return l.speaker.SetPeers(ctx, peers)
}

// Announce implements announce.BGP.
func (l *LazyBGP) Announce(ctx context.Context, addrs []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil
	}
	l.addrs = slices.Clone(addrs)
	if l.speaker == nil {
		return nil
	}
	return l.speaker.Announce(ctx, addrs)
}

// Sessions implements announce.BGP.
func (l *LazyBGP) Sessions() []announce.Session {
	l.mu.Lock()
	s := l.speaker
	l.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Sessions()
}

// Stop implements announce.BGP.
func (l *LazyBGP) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.speaker == nil {
		return nil
	}
	return l.speaker.Stop(ctx)
}

// LazyLayer2 is an ARP/NDP responder opened only when this node first has
// an address to answer for: until a pool asks for layer 2, the agent opens
// no raw socket and needs no interface toward the clients.
type LazyLayer2 struct {
	// New opens the responder.
	New func() (announce.Layer2, error)

	mu        sync.Mutex
	responder announce.Layer2
	stopped   bool
}

var _ announce.Layer2 = (*LazyLayer2)(nil)

// Announce implements announce.Layer2.
func (l *LazyLayer2) Announce(ctx context.Context, addrs []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil
	}
	if l.responder == nil {
		if len(addrs) == 0 {
			return nil
		}
		r, err := l.New()
		if err != nil {
			return err
		}
		l.responder = r
	}
	return l.responder.Announce(ctx, addrs)
}

// Stop implements announce.Layer2.
func (l *LazyLayer2) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.responder != nil {
		l.responder.Stop()
	}
}
