// Package bgp is the node agent's BGP speaker: announce.BGP on GoBGP
// (github.com/osrg/gobgp/v3), run as a library in the agent's process. It
// advertises host routes (/32, /128) for the VIPs the node serves to the
// routers the BGPPeers name, with the node's own address on each session as
// next hop.
//
// What GoBGP does for us, and how it is configured:
//
//   - Sessions. Each announce.Peer is a GoBGP neighbor keyed by its address,
//     with one address family: ipv4-unicast for an IPv4 neighbor,
//     ipv6-unicast for an IPv6 one. Hold time (default 90 s), keepalive a
//     third of it, TCP MD5 password, connect-retry (Options.ConnectRetry,
//     default 5 s rather than GoBGP's 120 s), per-peer local AS. The
//     speaker dials out; with Options.ListenPort -1 it accepts nothing.
//     An eBGP session is single-hop (GoBGP sends with TTL 1).
//   - Routes. A route is added to GoBGP's global RIB as locally originated,
//     origin IGP, with an unspecified next hop (0.0.0.0, or :: in the
//     MP_REACH_NLRI of an IPv6 route). GoBGP replaces an unspecified next
//     hop of a local route with the session's local address when it sends
//     it, on eBGP and iBGP sessions alike (table.UpdatePathAttrs): that is
//     next-hop self, with no policy to configure.
//   - Families. IPv4 routes go only to IPv4 sessions, IPv6 routes only to
//     IPv6 sessions: a session negotiates only its own family. Advertising
//     IPv6 routes over an IPv4 session (MP-BGP with an IPv4-mapped or
//     configured IPv6 next hop) is not supported: a dual-stack node needs a
//     BGPPeer of each family.
//
// One Speaker per process: GoBGP's StartBgp writes package globals (route
// selection options), so two servers started concurrently race. GoBGP's
// calls do not honor a context (each waits for its server goroutine);
// SetPeers, Announce and Stop check ctx only between calls.
//
// The speaker watches GoBGP's peer-state events: it updates its metrics at
// once and calls Options.OnChange, so the agent can report a session that
// went down without polling.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	bgppacket "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

// Defaults.
const (
	// DefaultConnectRetry is how long a session waits between attempts to
	// connect to its peer.
	DefaultConnectRetry = 5 * time.Second
	// DefaultHoldTime is the hold time of a peer that sets none.
	DefaultHoldTime = 90 * time.Second
	// DefaultPort is the peer's TCP port when it sets none.
	DefaultPort = 179

	// stopWait bounds each of Stop's two waits: for the withdrawals to
	// leave GoBGP's RIB towards the peers, and for the sessions to close.
	stopWait = time.Second
)

// Options configure a Speaker.
type Options struct {
	// RouterID is the BGP identifier, an IPv4 address; required. The agent
	// passes the node's IPv4 address (or any unique IPv4 address on a
	// single-stack IPv6 node).
	RouterID netip.Addr
	// ASN is the local AS number; required. A peer's LocalASN overrides it
	// for that session.
	ASN uint32
	// ListenPort is the TCP port GoBGP accepts sessions on: -1 accepts none
	// (the speaker only dials out), 0 means 179.
	ListenPort int32
	// ConnectRetry is the time between connection attempts; 0 means
	// DefaultConnectRetry. It is rounded up to whole seconds.
	ConnectRetry time.Duration
	// Logger receives GoBGP's messages: its warnings at V(0), its
	// information (peer up and down) at V(1), its debug at V(4).
	Logger logr.Logger
	// Metrics registers the kubelvs_bgp_* metrics when it is not nil.
	Metrics prometheus.Registerer
	// OnChange, when not nil, is called after any session's state changed
	// (from GoBGP's event goroutine: it must not block for long, and must
	// not call Stop).
	OnChange func()
}

// Speaker is a BGP speaker: announce.BGP on an in-process GoBGP server.
type Speaker struct {
	srv         *server.BgpServer
	o           Options
	log         logr.Logger
	m           *metrics
	cancelWatch context.CancelFunc

	// mu serializes SetPeers, Announce and Stop, and guards routes.
	mu     sync.Mutex
	routes map[netip.Addr]struct{}

	// stateMu guards what the event goroutine reads and writes too.
	stateMu sync.Mutex
	peers   map[netip.Addr]announce.Peer // by Address, as configured in GoBGP
	states  map[netip.Addr]string        // last state seen in an event
	stopped bool
}

var _ announce.BGP = (*Speaker)(nil)

// New starts a GoBGP server (its goroutines run until the process ends,
// Stop only idles it) and returns a speaker with no peers and no routes.
func New(o Options) (*Speaker, error) {
	if !o.RouterID.Is4() {
		return nil, fmt.Errorf("bgp: the router ID must be an IPv4 address, not %q", o.RouterID)
	}
	if o.ASN == 0 {
		return nil, errors.New("bgp: the local AS number is required")
	}
	if o.ConnectRetry <= 0 {
		o.ConnectRetry = DefaultConnectRetry
	}
	s := &Speaker{
		o:      o,
		log:    o.Logger,
		routes: map[netip.Addr]struct{}{},
		peers:  map[netip.Addr]announce.Peer{},
		states: map[netip.Addr]string{},
	}
	if o.Metrics != nil {
		m, err := newMetrics(o.Metrics)
		if err != nil {
			return nil, err
		}
		s.m = m
	}
	s.srv = server.NewBgpServer(server.LoggerOption(logger{o.Logger.WithName("gobgp")}))
	go s.srv.Serve()
	ctx := context.Background()
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        o.ASN,
		RouterId:   o.RouterID.String(),
		ListenPort: o.ListenPort,
	}}); err != nil {
		s.unregister()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	s.cancelWatch = cancel
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		cancel()
		_ = s.srv.StopBgp(ctx, &api.StopBgpRequest{})
		s.unregister()
		return nil, fmt.Errorf("bgp: watch peer events: %w", err)
	}
	return s, nil
}

// unregister takes the metrics of a speaker that failed to start back, so
// that the next attempt can register them.
func (s *Speaker) unregister() {
	if s.m == nil {
		return
	}
	for _, c := range []prometheus.Collector{s.m.up, s.m.announced, s.m.transitions} {
		s.o.Metrics.Unregister(c)
	}
}

// SetPeers makes the speaker's sessions exactly peers, keyed by address:
// it adds the new ones, deletes those gone (NOTIFICATION Cease, peer
// de-configured) and deletes and adds again one whose configuration
// changed (any field, the name included). The same peers again change
// nothing. GoBGP's calls do not take ctx: it is checked between them.
func (s *Speaker) SetPeers(ctx context.Context, peers []announce.Peer) error {
	want := make(map[netip.Addr]announce.Peer, len(peers))
	for _, p := range peers {
		p, err := s.normalize(p)
		if err != nil {
			return err
		}
		if _, dup := want[p.Address]; dup {
			return fmt.Errorf("bgp: peer %s is listed twice", p.Address)
		}
		want[p.Address] = p
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopped() {
		return errors.New("bgp: speaker stopped")
	}
	s.stateMu.Lock()
	have := maps.Clone(s.peers)
	s.stateMu.Unlock()

	var errs []error
	for _, a := range sortedKeys(have) {
		old := have[a]
		if p, ok := want[a]; ok && p == old {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: delete peer %s: %w", a, err))
			continue
		}
		s.log.V(1).Info("BGP peer deleted", "peer", label(old), "address", a)
		s.forget(old)
	}
	for _, a := range sortedKeys(want) {
		p := want[a]
		if old, ok := have[a]; ok && old == p {
			continue
		}
		s.stateMu.Lock()
		_, present := s.peers[a]
		s.stateMu.Unlock()
		if present { // its deletion failed above
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Known before GoBGP's first event about it arrives.
		s.stateMu.Lock()
		s.peers[a] = p
		s.states[a] = "Idle"
		s.stateMu.Unlock()
		s.m.add(label(p))
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			s.forget(p)
			errs = append(errs, fmt.Errorf("bgp: add peer %s: %w", a, err))
			continue
		}
		s.log.V(1).Info("BGP peer added", "peer", label(p), "address", a, "asn", p.ASN, "localASN", p.LocalASN)
	}
	s.refresh(ctx)
	return errors.Join(errs...)
}

// Announce makes the host routes advertised exactly addrs: it adds to
// GoBGP's RIB what is new and withdraws what is gone.
func (s *Speaker) Announce(ctx context.Context, addrs []netip.Addr) error {
	want := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("bgp: cannot announce %q", a)
		}
		want[a] = struct{}{}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopped() {
		return errors.New("bgp: speaker stopped")
	}
	var errs []error
	for _, a := range sortedKeys(s.routes) {
		if _, ok := want[a]; ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.withdraw(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.routes, a)
	}
	for _, a := range sortedKeys(want) {
		if _, ok := s.routes[a]; ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := hostRoute(a, false)
		if err == nil {
			_, err = s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", a, err))
			continue
		}
		s.routes[a] = struct{}{}
	}
	s.refresh(ctx)
	return errors.Join(errs...)
}

func (s *Speaker) withdraw(ctx context.Context, a netip.Addr) error {
	p, err := hostRoute(a, true)
	if err == nil {
		err = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Path: p})
	}
	if err != nil {
		return fmt.Errorf("bgp: withdraw %s: %w", a, err)
	}
	return nil
}

// Sessions reports every configured peer's session, in address order.
// Announced is GoBGP's count of the routes it advertises to the peer (its
// best paths of the peer's family that pass the export filters: its
// adj-rib-out), and 0 while the session is not Established.
func (s *Speaker) Sessions() []announce.Session {
	if s.isStopped() {
		return nil
	}
	sessions, err := s.list(context.Background())
	if err != nil {
		s.log.Error(err, "List BGP sessions")
	}
	return sessions
}

// Stop withdraws every route, waits (at most a second) until GoBGP
// advertises nothing to any Established peer, shuts every session down
// with a NOTIFICATION Cease (administrative shutdown) queued behind the
// withdrawals, waits (at most a second, or until ctx is done) until no
// session is Established, and stops GoBGP. A second call does nothing.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isStopped() {
		return nil
	}
	var errs []error
	for _, a := range sortedKeys(s.routes) {
		if err := s.withdraw(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.routes, a)
	}
	s.waitUntil(ctx, func(ss []announce.Session) bool {
		for _, x := range ss {
			if x.State == announce.Established && x.Announced > 0 {
				return false
			}
		}
		return true
	})
	s.stateMu.Lock()
	addrs := sortedKeys(s.peers)
	s.stateMu.Unlock()
	for _, a := range addrs {
		// Sent through the session's outgoing queue, after the UPDATEs.
		if err := s.srv.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: a.String(), Communication: "kubelvs agent stopping"}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: shut down peer %s: %w", a, err))
		}
	}
	s.waitUntil(ctx, func(ss []announce.Session) bool {
		for _, x := range ss {
			if x.State == announce.Established {
				return false
			}
		}
		return true
	})

	s.stateMu.Lock()
	s.stopped = true
	peers := s.peers
	s.peers = map[netip.Addr]announce.Peer{}
	s.stateMu.Unlock()
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("bgp: stop: %w", err))
	}
	s.cancelWatch()
	for _, p := range peers {
		s.m.state(label(p), "Idle", false)
		s.m.setAnnounced(label(p), 0)
	}
	return errors.Join(errs...)
}

// waitUntil polls the sessions until done is true, stopWait has passed or
// ctx is done.
func (s *Speaker) waitUntil(ctx context.Context, done func([]announce.Session) bool) {
	ctx, cancel := context.WithTimeout(ctx, stopWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ss, err := s.list(ctx)
		if err == nil && done(ss) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// list asks GoBGP for the sessions and updates the announced-routes gauge.
func (s *Speaker) list(ctx context.Context) ([]announce.Session, error) {
	got := map[netip.Addr]*api.Peer{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.GetConf() == nil {
			return
		}
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			got[a.Unmap()] = p
		}
	})
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	out := make([]announce.Session, 0, len(s.peers))
	for _, a := range sortedKeys(s.peers) {
		x := announce.Session{Peer: label(s.peers[a]), Address: a, State: s.states[a]}
		if p, ok := got[a]; ok {
			x.State = stateName(p.GetState().GetSessionState())
			if x.State == announce.Established {
				for _, af := range p.GetAfiSafis() {
					x.Announced += int(af.GetState().GetAdvertised())
				}
			}
		}
		if x.State == "" {
			x.State = "Idle"
		}
		s.m.setAnnounced(x.Peer, x.Announced)
		out = append(out, x)
	}
	return out, err
}

// refresh updates the announced-routes gauge.
func (s *Speaker) refresh(ctx context.Context) {
	if s.m == nil {
		return
	}
	if _, err := s.list(ctx); err != nil {
		s.log.Error(err, "List BGP sessions")
	}
}

// onEvent handles GoBGP's peer events, from its watch goroutine.
func (s *Speaker) onEvent(r *api.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	a, err := netip.ParseAddr(ev.GetPeer().GetState().GetNeighborAddress())
	if err != nil {
		return
	}
	a = a.Unmap()
	state := stateName(ev.GetPeer().GetState().GetSessionState())
	s.stateMu.Lock()
	p, ok := s.peers[a]
	if !ok || s.stopped {
		s.stateMu.Unlock()
		return
	}
	old := s.states[a]
	s.states[a] = state
	s.stateMu.Unlock()
	changed := old != state
	s.m.state(label(p), state, changed)
	if changed {
		s.log.V(1).Info("BGP session", "peer", label(p), "address", a, "from", old, "to", state)
	}
	s.refresh(context.Background())
	if changed && s.o.OnChange != nil {
		s.o.OnChange()
	}
}

// forget drops a peer deleted from GoBGP.
func (s *Speaker) forget(p announce.Peer) {
	s.stateMu.Lock()
	delete(s.peers, p.Address)
	delete(s.states, p.Address)
	s.stateMu.Unlock()
	s.m.remove(label(p))
}

func (s *Speaker) isStopped() bool {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.stopped
}

// normalize validates a peer and fills its defaults, so that two
// configurations that mean the same compare equal.
func (s *Speaker) normalize(p announce.Peer) (announce.Peer, error) {
	p.Address = p.Address.Unmap()
	if !p.Address.IsValid() || p.Address.IsUnspecified() {
		return p, fmt.Errorf("bgp: peer %q has no address", p.Name)
	}
	if p.ASN == 0 {
		return p, fmt.Errorf("bgp: peer %s (%q) has no AS number", p.Address, p.Name)
	}
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if p.LocalASN == 0 {
		p.LocalASN = s.o.ASN
	}
	if p.HoldTime == 0 {
		p.HoldTime = DefaultHoldTime
	}
	if p.HoldTime < 0 {
		return p, fmt.Errorf("bgp: peer %s (%q) has a negative hold time", p.Address, p.Name)
	}
	return p, nil
}

func (s *Speaker) apiPeer(p announce.Peer) *api.Peer {
	hold := seconds(p.HoldTime)
	if hold < 3 { // RFC 4271 4.2: 0 or at least 3 s
		hold = 3
	}
	retry := seconds(s.o.ConnectRetry)
	return &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			Description:     p.Name,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           retry,
			HoldTime:               hold,
			KeepaliveInterval:      hold / 3,
			IdleHoldTimeAfterReset: retry,
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family(p.Address), Enabled: true}}},
	}
}

// hostRoute is the /32 or /128 of a, locally originated, origin IGP, with
// an unspecified next hop that GoBGP replaces with each session's local
// address.
func hostRoute(a netip.Addr, withdraw bool) (*api.Path, error) {
	origin := bgppacket.NewPathAttributeOrigin(bgppacket.BGP_ORIGIN_ATTR_TYPE_IGP)
	if a.Is4() {
		nlri := bgppacket.NewIPAddrPrefix(32, a.String())
		return apiutil.NewPath(nlri, withdraw, []bgppacket.PathAttributeInterface{
			origin, bgppacket.NewPathAttributeNextHop("0.0.0.0"),
		}, time.Now())
	}
	nlri := bgppacket.NewIPv6AddrPrefix(128, a.String())
	return apiutil.NewPath(nlri, withdraw, []bgppacket.PathAttributeInterface{
		origin, bgppacket.NewPathAttributeMpReachNLRI("::", []bgppacket.AddrPrefixInterface{nlri}),
	}, time.Now())
}

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

func stateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return announce.Established
	default:
		return "Idle"
	}
}

// label is a peer's metric label and Session.Peer: its name, or its
// address when it has none.
func label(p announce.Peer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.Address.String()
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) uint64 {
	return uint64(math.Ceil(d.Seconds()))
}

func sortedKeys[V any](m map[netip.Addr]V) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, netip.Addr.Compare)
	return keys
}
