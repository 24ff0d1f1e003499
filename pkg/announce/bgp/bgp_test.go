package bgp

// The tests run our Speaker against a plain GoBGP server playing the
// router, both in this process, on loopback: the router listens on a free
// port, the speaker dials it (announce.Peer.Port) and listens on none. No
// root, no kernel module. Every wait polls with a deadline.
//
// No test is parallel: GoBGP's StartBgp writes package globals (the route
// selection options), a data race between two servers started at once.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	bgppacket "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

const (
	ourASN    = 64512
	routerASN = 65000
	// deadline bounds every wait; a session takes 1-2 s to come up (the
	// first connect is after 1-2 s), or up to ~7 s after the router reset
	// it (GoBGP idles 5 s before it accepts again).
	deadline = 30 * time.Second
)

// router is a GoBGP server playing the node's upstream router.
type router struct {
	srv  *server.BgpServer
	addr string // listen address, and where the speaker connects
	port uint16
}

func newRouter(t *testing.T, asn uint32, addr string) *router {
	t.Helper()
	port := freePort(t, addr)
	srv := server.NewBgpServer(server.LoggerOption(logger{logr.Discard()}))
	go srv.Serve()
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn:             asn,
		RouterId:        "10.255.0.1",
		ListenPort:      int32(port),
		ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatalf("router: start: %v", err)
	}
	t.Cleanup(srv.Stop)
	return &router{srv: srv, addr: addr, port: port}
}

// accept configures the router to accept a session from the speaker at
// addr (passive: it never dials).
func (r *router) accept(t *testing.T, addr string, asn uint32, password string) {
	t.Helper()
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if netip.MustParseAddr(addr).Is6() {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: addr, PeerAsn: asn, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}})
	if err != nil {
		t.Fatalf("router: add peer %s: %v", addr, err)
	}
}

// peer is the router's view of its session with addr (nil if none).
func (r *router) peer(t *testing.T, addr string) *api.Peer {
	t.Helper()
	var got *api.Peer
	if err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: addr}, func(p *api.Peer) { got = p }); err != nil {
		t.Fatalf("router: list peer: %v", err)
	}
	return got
}

func (r *router) established(t *testing.T, addr string) bool {
	p := r.peer(t, addr)
	return p != nil && p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
}

// routes is the router's global RIB of a family: prefix → next hop.
func (r *router) routes(t *testing.T, v6 bool) map[string]string {
	t.Helper()
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if v6 {
		fam.Afi = api.Family_AFI_IP6
	}
	out := map[string]string{}
	err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
		for _, p := range d.GetPaths() {
			attrs, err := apiutil.GetNativePathAttributes(p)
			if err != nil {
				t.Errorf("router: path attributes of %s: %v", d.GetPrefix(), err)
				continue
			}
			for _, a := range attrs {
				switch a := a.(type) {
				case *bgppacket.PathAttributeNextHop:
					out[d.GetPrefix()] = a.Value.String()
				case *bgppacket.PathAttributeMpReachNLRI:
					out[d.GetPrefix()] = a.Nexthop.String()
				}
			}
		}
	})
	if err != nil {
		t.Fatalf("router: list path: %v", err)
	}
	return out
}

func freePort(t *testing.T, addr string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Skipf("no TCP on %s: %v", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func newSpeaker(t *testing.T, o Options) *Speaker {
	t.Helper()
	if !o.RouterID.IsValid() {
		o.RouterID = netip.MustParseAddr("10.0.0.1")
	}
	if o.ASN == 0 {
		o.ASN = ourASN
	}
	o.ListenPort = -1
	o.ConnectRetry = time.Second
	o.Logger = logr.Discard()
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// eventually polls cond until it holds, or fails the test at the deadline
// with what cond last said.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not after %s; last: %s", what, deadline, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func session(s *Speaker, addr netip.Addr) announce.Session {
	for _, x := range s.Sessions() {
		if x.Address == addr {
			return x
		}
	}
	return announce.Session{}
}

func waitEstablished(t *testing.T, s *Speaker, addr netip.Addr) {
	t.Helper()
	eventually(t, "session with "+addr.String()+" Established", func() (bool, string) {
		x := session(s, addr)
		return x.State == announce.Established, fmt.Sprintf("%+v", x)
	})
}

// localAddress is our end of the session with addr, as GoBGP reports it.
func localAddress(t *testing.T, s *Speaker, addr netip.Addr) string {
	t.Helper()
	var got string
	if err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
		got = p.GetTransport().GetLocalAddress()
	}); err != nil {
		t.Fatalf("list peer: %v", err)
	}
	if a, err := netip.ParseAddr(got); err != nil || a.IsUnspecified() {
		t.Fatalf("local address of the session with %s: %q", addr, got)
	}
	return got
}

func TestNewRefusesWhatGoBGPCannotRun(t *testing.T) {
	for name, o := range map[string]Options{
		"no router ID":   {ASN: ourASN},
		"IPv6 router ID": {ASN: ourASN, RouterID: netip.MustParseAddr("2001:db8::1")},
		"no AS number":   {RouterID: netip.MustParseAddr("10.0.0.1")},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	s := newSpeaker(t, Options{})
	ctx := context.Background()
	for name, peers := range map[string][]announce.Peer{
		"no address": {{Name: "r", ASN: 1}},
		"no ASN":     {{Name: "r", Address: netip.MustParseAddr("192.0.2.1")}},
		"twice": {
			{Name: "a", Address: netip.MustParseAddr("192.0.2.1"), ASN: 1},
			{Name: "b", Address: netip.MustParseAddr("192.0.2.1"), ASN: 1},
		},
	} {
		if err := s.SetPeers(ctx, peers); err == nil {
			t.Errorf("SetPeers(%s) succeeded", name)
		}
	}
	if len(s.Sessions()) != 0 {
		t.Errorf("refused peers left sessions: %+v", s.Sessions())
	}
}

// Host routes reach the router with our end of the session as next hop,
// on an eBGP and on an iBGP session; a withdrawn address disappears; an
// IPv6 route does not go over an IPv4 session.
func TestAnnounceReachesTheRouterWithNextHopSelf(t *testing.T) {
	for _, tc := range []struct {
		name      string
		routerASN uint32
		localASN  uint32 // the peer's; 0: Options.ASN
	}{
		{"eBGP", routerASN, 0},
		{"iBGP", ourASN, 0},
		{"eBGP with the peer's local AS", routerASN, 65010},
		{"iBGP with the peer's local AS", routerASN, routerASN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := newRouter(t, tc.routerASN, "127.0.0.1")
			r.accept(t, "127.0.0.1", cmp.Or(tc.localASN, ourASN), "")
			s := newSpeaker(t, Options{})
			addr := netip.MustParseAddr(r.addr)
			peer := announce.Peer{Name: "r1", Address: addr, Port: r.port, ASN: tc.routerASN, LocalASN: tc.localASN}
			if err := s.SetPeers(ctx, []announce.Peer{peer}); err != nil {
				t.Fatal(err)
			}
			vips := []netip.Addr{
				netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"),
				netip.MustParseAddr("2001:db8::10"),
			}
			if err := s.Announce(ctx, vips); err != nil {
				t.Fatal(err)
			}
			waitEstablished(t, s, addr)
			local := localAddress(t, s, addr)
			want := map[string]string{"192.0.2.10/32": local, "192.0.2.11/32": local}
			eventually(t, "the router has both /32 via "+local, func() (bool, string) {
				got := r.routes(t, false)
				return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got)
			})
			if got := r.routes(t, true); len(got) != 0 {
				t.Errorf("an IPv6 route went over the IPv4 session: %v", got)
			}
			if x := session(s, addr); x.Announced != 2 || x.Peer != "r1" {
				t.Errorf("session = %+v, want peer r1 with 2 routes announced", x)
			}

			// Withdraw one; the same set again changes nothing.
			for range 2 {
				if err := s.Announce(ctx, vips[:1]); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "192.0.2.11/32 withdrawn", func() (bool, string) {
				got := r.routes(t, false)
				return fmt.Sprint(got) == fmt.Sprint(map[string]string{"192.0.2.10/32": local}), fmt.Sprint(got)
			})
			if x := session(s, addr); x.Announced != 1 {
				t.Errorf("announced = %d after the withdrawal, want 1", x.Announced)
			}
		})
	}
}

func TestIPv6HostRouteOverAnIPv6Session(t *testing.T) {
	ctx := context.Background()
	r := newRouter(t, routerASN, "::1")
	r.accept(t, "::1", ourASN, "")
	s := newSpeaker(t, Options{})
	addr := netip.MustParseAddr("::1")
	if err := s.SetPeers(ctx, []announce.Peer{{Name: "r6", Address: addr, Port: r.port, ASN: routerASN}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, []netip.Addr{netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.10")}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, addr)
	local := localAddress(t, s, addr)
	eventually(t, "the router has the /128 via "+local, func() (bool, string) {
		got := r.routes(t, true)
		return fmt.Sprint(got) == fmt.Sprint(map[string]string{"2001:db8::10/128": local}), fmt.Sprint(got)
	})
	if got := r.routes(t, false); len(got) != 0 {
		t.Errorf("an IPv4 route went over the IPv6 session: %v", got)
	}
	if x := session(s, addr); x.Announced != 1 {
		t.Errorf("announced = %d, want 1", x.Announced)
	}
	if err := s.Announce(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the /128 withdrawn", func() (bool, string) {
		got := r.routes(t, true)
		return len(got) == 0, fmt.Sprint(got)
	})
}

// SetPeers with the same peers does nothing; a changed hold time restarts
// the session (the router then negotiates the new one); a peer left out is
// closed. The metrics follow.
func TestSetPeersRestartsAChangedPeerAndClosesARemovedOne(t *testing.T) {
	ctx := context.Background()
	r := newRouter(t, routerASN, "127.0.0.1")
	r.accept(t, "127.0.0.1", ourASN, "")
	reg := prometheus.NewRegistry()
	var changes atomic.Int64
	s := newSpeaker(t, Options{Metrics: reg, OnChange: func() { changes.Add(1) }})
	addr := netip.MustParseAddr(r.addr)
	p := announce.Peer{Name: "r1", Address: addr, Port: r.port, ASN: routerASN, HoldTime: 90 * time.Second}
	if err := s.SetPeers(ctx, []announce.Peer{p}); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, []netip.Addr{netip.MustParseAddr("192.0.2.10")}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, addr)
	eventually(t, "router Established", func() (bool, string) { return r.established(t, r.addr), "" })
	if got := r.peer(t, r.addr).GetTimers().GetState().GetNegotiatedHoldTime(); got != 90 {
		t.Errorf("negotiated hold time %d, want 90", got)
	}

	// Metrics: up, one route, some transitions (Idle … Established), and a
	// call of OnChange for them.
	eventually(t, "metrics of an Established session", func() (bool, string) {
		up := testutil.ToFloat64(s.m.up.WithLabelValues("r1"))
		n := testutil.ToFloat64(s.m.announced.WithLabelValues("r1"))
		return up == 1 && n == 1, fmt.Sprintf("up %v announced %v", up, n)
	})
	transitions := testutil.ToFloat64(s.m.transitions.WithLabelValues("r1"))
	if transitions < 1 || changes.Load() < 1 {
		t.Errorf("transitions %v, OnChange calls %d: want at least 1 each", transitions, changes.Load())
	}

	// The same peers (with defaults spelt out or not): no call, no restart.
	same := p
	same.Port = r.port
	if err := s.SetPeers(ctx, []announce.Peer{same}); err != nil {
		t.Fatal(err)
	}
	if !r.established(t, r.addr) || testutil.ToFloat64(s.m.transitions.WithLabelValues("r1")) != transitions {
		t.Errorf("SetPeers with the same peer restarted the session")
	}

	// A new hold time: the session restarts and the router negotiates it.
	p.HoldTime = 30 * time.Second
	if err := s.SetPeers(ctx, []announce.Peer{p}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the router negotiates the new hold time", func() (bool, string) {
		rp := r.peer(t, r.addr)
		ok := rp.GetState().GetSessionState() == api.PeerState_ESTABLISHED &&
			rp.GetTimers().GetState().GetNegotiatedHoldTime() == 30
		return ok, rp.GetState().GetSessionState().String()
	})
	eventually(t, "the route again at the router", func() (bool, string) {
		got := r.routes(t, false)
		return len(got) == 1, fmt.Sprint(got)
	})

	// Removed: the router sees the session close; no session, no series.
	if err := s.SetPeers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the router's session down", func() (bool, string) {
		return !r.established(t, r.addr), r.peer(t, r.addr).GetState().GetSessionState().String()
	})
	if ss := s.Sessions(); len(ss) != 0 {
		t.Errorf("sessions after removing every peer: %+v", ss)
	}
	if n := testutil.CollectAndCount(reg); n != 0 {
		t.Errorf("%d series left after removing every peer", n)
	}
}

// The router resets the session: the speaker sees it at once (metric,
// OnChange), without polling.
func TestASessionGoingDownIsSeenAtOnce(t *testing.T) {
	ctx := context.Background()
	r := newRouter(t, routerASN, "127.0.0.1")
	r.accept(t, "127.0.0.1", ourASN, "")
	reg := prometheus.NewRegistry()
	var changes atomic.Int64
	s := newSpeaker(t, Options{Metrics: reg, OnChange: func() { changes.Add(1) }})
	addr := netip.MustParseAddr(r.addr)
	if err := s.SetPeers(ctx, []announce.Peer{{Name: "r1", Address: addr, Port: r.port, ASN: routerASN}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "up metric", func() (bool, string) {
		return testutil.ToFloat64(s.m.up.WithLabelValues("r1")) == 1, ""
	})
	before := changes.Load()
	if err := r.srv.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: r.addr}); err != nil {
		t.Fatal(err)
	}
	// The metric moves from the event: Sessions (which asks GoBGP) is not
	// called until it has.
	eventually(t, "up metric 0", func() (bool, string) {
		return testutil.ToFloat64(s.m.up.WithLabelValues("r1")) == 0, ""
	})
	if changes.Load() == before {
		t.Errorf("OnChange not called for the session going down")
	}
	if x := session(s, addr); x.State == announce.Established {
		t.Errorf("session %+v still Established", x)
	}
}

// Stop withdraws every route before it closes the sessions: the router
// receives an UPDATE withdrawing the route (its adj-rib-in watch) before
// its session leaves Established; afterwards it has no route and no
// session.
func TestStopWithdrawsBeforeClosing(t *testing.T) {
	ctx := context.Background()
	r := newRouter(t, routerASN, "127.0.0.1")
	r.accept(t, "127.0.0.1", ourASN, "")
	s := newSpeaker(t, Options{})
	addr := netip.MustParseAddr(r.addr)
	if err := s.SetPeers(ctx, []announce.Peer{{Name: "r1", Address: addr, Port: r.port, ASN: routerASN}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both routes at the router", func() (bool, string) {
		got := r.routes(t, false)
		return len(got) == 2, fmt.Sprint(got)
	})

	// One watcher for both kinds of event keeps their order.
	var mu sync.Mutex
	var events []string
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := r.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Peer:  &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN}}},
	}, func(ev *api.WatchEventResponse) {
		mu.Lock()
		defer mu.Unlock()
		if pe := ev.GetPeer(); pe != nil && pe.GetType() == api.WatchEventResponse_PeerEvent_STATE {
			events = append(events, "state "+pe.GetPeer().GetState().GetSessionState().String())
		}
		for _, p := range ev.GetTable().GetPaths() {
			nlri, err := apiutil.GetNativeNlri(p)
			if err != nil {
				continue
			}
			if p.GetIsWithdraw() {
				events = append(events, "withdraw "+nlri.String())
			} else {
				events = append(events, "update "+nlri.String())
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop again: %v", err)
	}
	eventually(t, "the router's session down", func() (bool, string) {
		return !r.established(t, r.addr), ""
	})
	if got := r.routes(t, false); len(got) != 0 {
		t.Errorf("routes at the router after Stop: %v", got)
	}
	mu.Lock()
	got := slices.Clone(events)
	mu.Unlock()
	down := slices.IndexFunc(got, func(e string) bool { return strings.HasPrefix(e, "state ") })
	for _, route := range []string{"192.0.2.10/32", "192.0.2.11/32"} {
		w := slices.Index(got, "withdraw "+route)
		if w < 0 || down < 0 || w > down {
			t.Errorf("the router saw %v: want the withdrawal of %s before the session's state changed", got, route)
		}
	}
	if ss := s.Sessions(); ss != nil {
		t.Errorf("Sessions after Stop: %+v", ss)
	}
	if err := s.Announce(ctx, nil); err == nil {
		t.Errorf("Announce after Stop succeeded")
	}
}

// What SetPeers configures in GoBGP, whatever the host's kernel: the
// family of the peer's address only, hold time and keepalive, connect
// retry, port, local AS, password.
func TestPeerConfiguration(t *testing.T) {
	ctx := context.Background()
	s := newSpeaker(t, Options{})
	peers := []announce.Peer{
		{Name: "v4", Address: netip.MustParseAddr("192.0.2.1"), ASN: routerASN, Password: "s3cret", HoldTime: 30 * time.Second},
		{Name: "v6", Address: netip.MustParseAddr("2001:db8::1"), Port: 1179, ASN: ourASN, LocalASN: 65010},
	}
	if err := s.SetPeers(ctx, peers); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	if err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		var fams []string
		for _, af := range p.GetAfiSafis() {
			fams = append(fams, af.GetConfig().GetFamily().GetAfi().String())
		}
		tc := p.GetTimers().GetConfig()
		got[p.GetConf().GetNeighborAddress()] = fmt.Sprintf("as %d local %d password %q port %d hold %d keepalive %d retry %d families %v",
			p.GetConf().GetPeerAsn(), p.GetConf().GetLocalAsn(), p.GetConf().GetAuthPassword(), p.GetTransport().GetRemotePort(),
			tc.GetHoldTime(), tc.GetKeepaliveInterval(), tc.GetConnectRetry(), fams)
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"192.0.2.1":   `as 65000 local 64512 password "s3cret" port 179 hold 30 keepalive 10 retry 1 families [AFI_IP]`,
		"2001:db8::1": `as 64512 local 65010 password "" port 1179 hold 90 keepalive 30 retry 1 families [AFI_IP6]`,
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("peer %s:\n got %s\nwant %s", a, got[a], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("GoBGP has %d peers, want %d: %v", len(got), len(want), got)
	}
}

// TCP MD5 (RFC 2385) on loopback, where the kernel has TCP_MD5SIG.
func TestMD5Password(t *testing.T) {
	if err := md5Supported(); err != nil {
		t.Skipf("the kernel refuses TCP_MD5SIG on loopback (%v): no MD5 session to test", err)
	}
	ctx := context.Background()
	r := newRouter(t, routerASN, "127.0.0.1")
	r.accept(t, "127.0.0.1", ourASN, "s3cret")
	s := newSpeaker(t, Options{})
	addr := netip.MustParseAddr(r.addr)
	if err := s.SetPeers(ctx, []announce.Peer{{Name: "r1", Address: addr, Port: r.port, ASN: routerASN, Password: "s3cret"}}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, addr)
}

// md5Supported sets TCP_MD5SIG for 127.0.0.1 where GoBGP does: on a
// socket about to dial and on a listening socket (some kernels and
// sandboxes accept the first and refuse the second).
func md5Supported() error {
	sig := unix.TCPMD5Sig{Keylen: 6}
	copy(sig.Key[:], "s3cret")
	// struct sockaddr_storage holding a sockaddr_in: family, port, address.
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:6], []byte{127, 0, 0, 1})

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig); err != nil {
		return fmt.Errorf("setsockopt on a dialing socket: %w", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	sc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt on a listening socket: %w", serr)
	}
	return nil
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	newSpeaker(t, Options{Metrics: reg})
	_, err := New(Options{RouterID: netip.MustParseAddr("10.0.0.2"), ASN: ourASN, ListenPort: -1, Metrics: reg})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("a second speaker on the same registry: %v, want AlreadyRegisteredError", err)
	}
}

// A speaker that fails to start (here: its listening port is taken) gives
// its metrics back, so that the agent's next attempt can start one.
func TestAFailedStartCanBeRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := int32(l.Addr().(*net.TCPAddr).Port)
	reg := prometheus.NewRegistry()
	if _, err := New(Options{RouterID: netip.MustParseAddr("10.0.0.3"), ASN: ourASN, ListenPort: port, Metrics: reg}); err == nil {
		t.Skip("GoBGP started on a port in use (it listens on every address, not only 127.0.0.1): nothing to retry")
	}
	s := newSpeaker(t, Options{Metrics: reg})
	if s.m == nil {
		t.Fatal("the retried speaker has no metrics")
	}
}
