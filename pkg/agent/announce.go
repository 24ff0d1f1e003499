package agent

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/announce"
	"github.com/kubelvs/kubelvs/pkg/desired"
)

// Membership tells which agents are alive, for layer-2 announcement: the
// node that answers for an address is chosen among them.
type Membership interface {
	// Live returns the nodes whose agents are alive, with their labels,
	// and whether this node's own agent counts as alive (its heartbeat is
	// current). An agent that cannot renew its heartbeat stops answering
	// before the others take its addresses over.
	Live() (nodes map[string]map[string]string, self bool)
}

// Announcers are how the agent announces VIPs; a nil field turns that way
// off.
type Announcers struct {
	BGP    announce.BGP
	Layer2 announce.Layer2
	// Members is required with Layer2.
	Members Membership
}

// announcer keeps, for every VirtualService, what it asks to announce and
// whether this node serves it, and makes the speakers announce the union:
// by BGP every address of a group this node serves; by layer 2 the
// addresses this node owns (announce.Owner over the live, eligible nodes).
// Changes are coalesced: a burst of syncs is one computation.
type announcer struct {
	node    string
	out     Announcers
	requeue func(types.NamespacedName)
	// onChange, if set, is told when what the node announces changed.
	onChange func()
	kick     chan struct{}
	gauge    *prometheus.GaugeVec

	mu     sync.Mutex
	groups map[types.NamespacedName]*announced
	status map[types.NamespacedName][]lvsv1.AnnouncedAddress
	bgp    []netip.Addr
	l2     []netip.Addr
	synced bool // bgp and l2 are what the speakers have
}

type announced struct {
	an desired.Announcement
	// serving: this node programmed the group and is eligible for it.
	serving bool
	vips    map[netip.Addr]bool
	// labels are this node's, as the group was built with.
	labels map[string]string
}

func newAnnouncer(node string, out Announcers, reg prometheus.Registerer, requeue func(types.NamespacedName)) *announcer {
	a := &announcer{
		node: node, out: out, requeue: requeue, kick: make(chan struct{}, 1),
		groups: map[types.NamespacedName]*announced{},
		status: map[types.NamespacedName][]lvsv1.AnnouncedAddress{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "announced_addresses",
			Help: "Addresses this node announces, by mode (BGP: host routes to its BGP peers; Layer2: answered by ARP or NDP).",
		}, []string{"mode"}),
	}
	if reg != nil {
		reg.MustRegister(a.gauge)
	}
	return a
}

func (a *announcer) enabled() bool { return a != nil && (a.out.BGP != nil || a.out.Layer2 != nil) }

// set records a group after its sync. A group on hold, or whose sync
// failed, keeps what it announced: what the node serves is then not known,
// and the kernel keeps serving what it had.
func (a *announcer) set(key types.NamespacedName, g desired.Group, nodeLabels map[string]string, syncErr error) {
	if !a.enabled() || g.Hold || syncErr != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if g.Announce.Empty() {
		if _, ok := a.groups[key]; !ok {
			return
		}
		delete(a.groups, key)
		a.poke()
		return
	}
	n := &announced{an: g.Announce, serving: g.Selected && g.Announce.Eligible(a.node, nodeLabels), vips: map[netip.Addr]bool{}, labels: nodeLabels}
	for _, v := range g.VIPs {
		n.vips[v] = true
	}
	a.groups[key] = n
	a.poke()
}

// remove forgets a deleted VirtualService.
func (a *announcer) remove(key types.NamespacedName) {
	if !a.enabled() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.groups[key]; ok {
		delete(a.groups, key)
		a.poke()
	}
}

// changed is called when the live nodes change.
func (a *announcer) changed() {
	if a.enabled() {
		a.poke()
	}
}

func (a *announcer) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// statusOf is what this node announces of a VirtualService, for its entry
// in status.nodes.
func (a *announcer) statusOf(key types.NamespacedName) []lvsv1.AnnouncedAddress {
	if !a.enabled() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status[key]
}

// all is every address this node announces, and how, sorted.
func (a *announcer) all() []lvsv1.AnnouncedAddress {
	if !a.enabled() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []lvsv1.AnnouncedAddress
	for _, addr := range a.bgp {
		out = append(out, lvsv1.AnnouncedAddress{Address: addr.String(), Mode: lvsv1.AnnounceBGP})
	}
	for _, addr := range a.l2 {
		out = append(out, lvsv1.AnnouncedAddress{Address: addr.String(), Mode: lvsv1.AnnounceLayer2})
	}
	return out
}

// compute returns the addresses to announce each way and every group's
// status.
func (a *announcer) compute() (bgp, l2 []netip.Addr, status map[types.NamespacedName][]lvsv1.AnnouncedAddress) {
	var live map[string]map[string]string
	selfLive := false
	if a.out.Members != nil {
		live, selfLive = a.out.Members.Live()
	}
	bgpSet := map[netip.Addr]bool{}
	candidates := map[netip.Addr][]string{}
	serves := map[netip.Addr]bool{} // a group this node serves has it
	for _, g := range a.groups {
		if g.serving {
			for _, addr := range g.an.BGP {
				if g.vips[addr] && a.out.BGP != nil {
					bgpSet[addr] = true
				}
			}
		}
		if a.out.Layer2 == nil {
			continue
		}
		for _, addr := range g.an.Layer2 {
			if g.serving && g.vips[addr] && g.an.EligibleLayer2(addr, a.node, g.labels) {
				serves[addr] = true
			}
			for n, labels := range live {
				if g.an.EligibleLayer2(addr, n, labels) && !slices.Contains(candidates[addr], n) {
					candidates[addr] = append(candidates[addr], n)
				}
			}
		}
	}
	mine := map[netip.Addr]bool{}
	if selfLive {
		for addr, c := range candidates {
			if serves[addr] && announce.Owner(addr, c) == a.node {
				mine[addr] = true
			}
		}
	}
	status = map[types.NamespacedName][]lvsv1.AnnouncedAddress{}
	for key, g := range a.groups {
		var st []lvsv1.AnnouncedAddress
		for _, addr := range g.an.BGP {
			if g.serving && bgpSet[addr] {
				st = append(st, lvsv1.AnnouncedAddress{Address: addr.String(), Mode: lvsv1.AnnounceBGP})
			}
		}
		for _, addr := range g.an.Layer2 {
			if g.serving && mine[addr] {
				st = append(st, lvsv1.AnnouncedAddress{Address: addr.String(), Mode: lvsv1.AnnounceLayer2})
			}
		}
		if st != nil {
			status[key] = st
		}
	}
	return sortedAddrs(bgpSet), sortedAddrs(mine), status
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// run announces until ctx ends, then withdraws: BGP routes first, so that
// routers move flows to other nodes while this one still serves (its
// kernel keeps the VIPs after the agent stops), then layer 2.
func (a *announcer) run(ctx context.Context) {
	if !a.enabled() {
		return
	}
	log := ctrl.LoggerFrom(ctx).WithName("announce")
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			a.stop(log)
			return
		case <-a.kick:
		case <-retry.C:
		}
		err := a.apply(ctx)
		switch {
		case err == nil:
			backoff = time.Second
		case ctx.Err() == nil:
			log.Error(err, "announcing failed; retrying", "in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 30*time.Second)
		}
	}
}

// apply computes and hands the result to the speakers; the groups whose
// status changed are queued for their report.
func (a *announcer) apply(ctx context.Context) error {
	a.mu.Lock()
	bgp, l2, status := a.compute()
	var changed []types.NamespacedName
	for key, st := range status {
		if !slices.Equal(st, a.status[key]) {
			changed = append(changed, key)
		}
	}
	for key := range a.status {
		if _, ok := status[key]; !ok {
			changed = append(changed, key)
		}
	}
	same := a.synced && slices.Equal(bgp, a.bgp) && slices.Equal(l2, a.l2)
	a.mu.Unlock()
	if !same {
		if a.out.BGP != nil {
			if err := a.out.BGP.Announce(ctx, bgp); err != nil {
				return err
			}
		}
		if a.out.Layer2 != nil {
			if err := a.out.Layer2.Announce(ctx, l2); err != nil {
				return err
			}
		}
		a.gauge.WithLabelValues(string(lvsv1.AnnounceBGP)).Set(float64(len(bgp)))
		a.gauge.WithLabelValues(string(lvsv1.AnnounceLayer2)).Set(float64(len(l2)))
	}
	a.mu.Lock()
	a.bgp, a.l2, a.status, a.synced = bgp, l2, status, true
	a.mu.Unlock()
	if !same && a.onChange != nil {
		a.onChange()
	}
	for _, key := range changed {
		a.requeue(key)
	}
	return nil
}

func (a *announcer) stop(log interface{ Info(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a.out.BGP != nil {
		if err := a.out.BGP.Stop(ctx); err != nil {
			log.Info("withdrawing BGP routes on shutdown failed", "error", err.Error())
		} else {
			log.Info("withdrew every BGP route and closed the sessions")
		}
	}
	if a.out.Layer2 != nil {
		a.out.Layer2.Stop()
	}
}
