package roles

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/announce/bgp"
)

// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=bgppeers,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=bgppeers/status,verbs=patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;delete

// DefaultLayer2LeaseDuration is how long an agent that stopped renewing its
// heartbeat still counts as alive for layer-2 announcement: about the
// longest a failed node's addresses go unanswered.
const DefaultLayer2LeaseDuration = 5 * time.Second

// AnnounceOptions configure how the agent announces VIPs.
type AnnounceOptions struct {
	// BGP runs a BGP speaker once a BGPPeer selects this node.
	BGP bool
	// BGPRouterID is the speaker's BGP identifier; unset: the IPv4 address
	// of the interface of the node's default route.
	BGPRouterID netip.Addr
	// Layer2 answers ARP and NDP for the addresses this node owns, among
	// those of pools that ask for layer 2.
	Layer2 bool
	// Layer2Interface is the interface toward the clients; "": the
	// interface of the node's IPv4 default route (else its IPv6 one).
	Layer2Interface string
	// Layer2LeaseDuration: see DefaultLayer2LeaseDuration.
	Layer2LeaseDuration time.Duration
	// NewLayer2 overrides the ARP/NDP responder (tests).
	NewLayer2 func(ifname string) (announce.Layer2, error)
}

// announcers builds the agent's announcers and adds what runs beside it to
// mgr; a() is the agent, once it exists.
func announcers(mgr manager.Manager, o AgentOptions, reg prometheus.Registerer, a func() *agent.Agent) (agent.Announcers, error) {
	log := ctrl.Log.WithName("agent").WithName("announce")
	var out agent.Announcers
	if o.BGP {
		var ps *agent.PeerSync
		lazy := &agent.LazyBGP{New: func(peers []announce.Peer) (announce.BGP, error) {
			id := o.BGPRouterID
			if !id.IsValid() {
				_, v4, _, err := defaultRoute()
				if err != nil || !v4.IsValid() {
					return nil, fmt.Errorf("no BGP router ID: set --bgp-router-id (the node's default route has no IPv4 address: %v)", err)
				}
				id = v4
			}
			log.Info("starting the BGP speaker", "routerID", id, "asn", peers[0].LocalASN)
			return bgp.New(bgp.Options{
				RouterID: id, ASN: peers[0].LocalASN, ListenPort: -1,
				Logger: log.WithName("gobgp"), Metrics: reg, OnChange: func() { ps.Changed() },
			})
		}}
		ps = agent.NewPeerSync(lazy, mgr.GetClient(), mgr.GetAPIReader(), o.PodNamespace, o.NodeName)
		if err := mgr.Add(runnableFunc(func(ctx context.Context) error { return ps.Start(ctx, mgr.GetCache()) })); err != nil {
			return out, err
		}
		out.BGP = lazy
	}
	if o.Layer2 && o.PodNamespace == "" {
		log.Info("layer-2 announcement is off: it needs the agent's namespace ($POD_NAMESPACE) for its heartbeat Lease")
		o.Layer2 = false
	}
	if o.Layer2 {
		l2 := &agent.LazyLayer2{New: func() (announce.Layer2, error) {
			ifname := o.Layer2Interface
			if ifname == "" {
				name, _, _, err := defaultRoute()
				if err != nil {
					return nil, fmt.Errorf("layer-2 announcement: no interface toward the clients: set --layer2-interface (%w)", err)
				}
				ifname = name
			}
			newL2 := o.NewLayer2
			if newL2 == nil {
				newL2 = func(ifname string) (announce.Layer2, error) { return newLayer2(ifname, log.WithName("layer2"), reg) }
			}
			r, err := newL2(ifname)
			if err != nil {
				return nil, fmt.Errorf("layer-2 announcement on %s: %w", ifname, err)
			}
			log.Info("answering ARP and NDP for the addresses this node owns", "interface", ifname)
			return r, nil
		}}
		d := o.Layer2LeaseDuration
		if d <= 0 {
			d = DefaultLayer2LeaseDuration
		}
		members := agent.NewLeaseMembers(mgr.GetClient(), mgr.GetAPIReader(), o.PodNamespace, o.NodeName, d, clock.RealClock{},
			func() bool { return a() != nil && a().Layer2Wanted() },
			func() {
				if a() != nil {
					a().MembersChanged()
				}
			})
		if err := mgr.Add(runnableFunc(func(ctx context.Context) error { return members.Start(ctx, mgr.GetCache()) })); err != nil {
			return out, err
		}
		out.Layer2, out.Members = l2, members
	}
	return out, nil
}
