// Package agent is the node agent's engine: it watches VirtualServices,
// EndpointSlices and its Node through the manager's cache, builds each
// VirtualService's desired state and hands it to the syncer, one
// VirtualService at a time, so a change touches only its own kernel objects.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/health"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/syncer"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// Options configure the agent.
type Options struct {
	// NodeName is the node the agent programs.
	NodeName string
	// ResyncPeriod is how often everything is rebuilt and the kernel
	// verified (drift repaired).
	ResyncPeriod time.Duration
	// DrainInterval is how often draining real servers are checked.
	DrainInterval time.Duration
	// ReportStatus writes this node's entry into each VirtualService's
	// status; large clusters may turn it off.
	ReportStatus bool
	// Workers is how many VirtualServices are synced at once (default 4).
	// The kernel writes are serialized by the syncer and take about a
	// millisecond; what workers overlap is the status write, an API round
	// trip, so that a change never waits behind another VirtualService's
	// status write.
	Workers int
	// Metrics registers the agent's own metrics (nil: kept, not served).
	Metrics prometheus.Registerer
	// Announcers announce the VIPs this node serves (BGP, layer 2); zero:
	// nothing is announced.
	Announcers Announcers
	// NodeReports reports what this node programmed in its NodeReport (one
	// object per node) instead of an entry in every VirtualService's
	// status.nodes; ReportStatus must be set too.
	NodeReports bool
}

// Agent keeps the node's kernel equal to the VirtualServices.
type Agent struct {
	opts   Options
	client client.Client // cache-backed reads, direct writes
	mgr    manager.Manager
	syncer *syncer.Syncer
	health *health.Manager
	// Two lanes (lanes.go): queue for creates and the agent's own work,
	// changes for events of VirtualServices the kernel already has.
	queue   workqueue.TypedRateLimitingInterface[types.NamespacedName]
	changes workqueue.TypedRateLimitingInterface[types.NamespacedName]
	// programmed holds the VirtualServices the syncer has a group for.
	programmed sync.Map
	// creating admits one sync of the create lane into the syncer at a
	// time; keyLocks keep the two lanes off the same VirtualService.
	creating chan struct{}
	keyLocks [64]sync.Mutex
	ready    atomic.Bool
	lat      *eventLatency
	// watchEvents counts the events the handlers receive (metrics.go).
	watchEvents *watchEvents

	// Lookups kept by the event handlers (index.go): VirtualServices by
	// the keys they claim and by the Service they point at, EndpointSlices
	// by their Service.
	byKey    *index[lvsv1.ServiceKey]
	byRef    *index[serviceRef]
	slicesOf *index[serviceRef]
	handlers []toolscache.ResourceEventHandlerRegistration
	// pools are the parsed AddressPools (loadPools); nil until listed.
	pools atomic.Pointer[[]*pools.Pool]

	announce *announcer
	// wm and reports: NodeReports mode.
	wm      *watermark
	reports *nodeReporter

	mu       sync.Mutex
	reported map[types.NamespacedName]lvsv1.NodeStatus
}

var _ manager.Runnable = (*Agent)(nil)

// New wires the agent into mgr: cache indexes now, event handlers and the
// sync loop when the manager starts it. hm may be nil (no health checks).
func New(ctx context.Context, mgr manager.Manager, s *syncer.Syncer, hm *health.Manager, o Options) (*Agent, error) {
	a, err := newAgent(mgr.GetClient(), s, hm, o)
	if err != nil {
		return nil, err
	}
	a.mgr = mgr
	return a, nil
}

// newAgent returns an agent that reads through c (the manager's cache in
// the binary, a fake client in the script tests) and has no informers of
// its own: its event handlers are called by whoever watches.
func newAgent(c client.Client, s *syncer.Syncer, hm *health.Manager, o Options) (*Agent, error) {
	if o.NodeName == "" {
		return nil, errors.New("agent: node name is empty")
	}
	if o.ResyncPeriod <= 0 {
		o.ResyncPeriod = 5 * time.Minute
	}
	if o.DrainInterval <= 0 {
		o.DrainInterval = time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	a := &Agent{
		opts: o, client: c, syncer: s, health: hm,
		queue:       newLane("kubelvs-agent"),
		changes:     newLane("kubelvs-agent-changes"),
		creating:    make(chan struct{}, 1),
		reported:    map[types.NamespacedName]lvsv1.NodeStatus{},
		lat:         newEventLatency(o.Metrics, clock.RealClock{}),
		watchEvents: newWatchEvents(o.Metrics),
		byKey:       newIndex(vsServiceKeys),
		byRef:       newIndex(vsServiceRef),
		slicesOf:    newIndex(sliceService),
	}
	if o.Announcers.Layer2 != nil && o.Announcers.Members == nil {
		return nil, errors.New("agent: layer-2 announcement needs a Membership")
	}
	a.announce = newAnnouncer(o.NodeName, o.Announcers, o.Metrics, func(key types.NamespacedName) { a.queue.Add(key) })
	a.wm = newWatermark()
	if o.ReportStatus && o.NodeReports {
		a.reports = newNodeReporter(o.NodeName, c, a.wm, clock.RealClock{})
		a.reports.announced = a.announce.all
		a.announce.onChange = a.reports.announcedChanged
	}
	return a, nil
}

// Layer2Wanted reports whether some AddressPool asks for layer-2
// announcement: until one does, the agent keeps no heartbeat.
func (a *Agent) Layer2Wanted() bool {
	ps := a.pools.Load()
	if ps == nil {
		return false
	}
	for _, p := range *ps {
		if p.Layer2 {
			return true
		}
	}
	return false
}

// MembersChanged is the Membership's callback: the live nodes changed, so
// the node that answers for an address in layer-2 mode may too.
func (a *Agent) MembersChanged() { a.announce.changed() }

// HealthChanged is the health manager's callback: rebuild that group.
func (a *Agent) HealthChanged(group string) {
	if ns, name, err := toolscache.SplitMetaNamespaceKey(group); err == nil {
		a.event(types.NamespacedName{Namespace: ns, Name: name})
	}
}

// Ready is a readiness check: true once the first full sync is done.
func (a *Agent) Ready(*http.Request) error {
	if !a.ready.Load() {
		return errors.New("first full sync not done")
	}
	return nil
}

// Start runs the agent until ctx ends. It leaves the kernel as it is when
// it stops: traffic keeps flowing across restarts and upgrades.
func (a *Agent) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("agent")
	ctx = ctrl.LoggerInto(ctx, log)
	if err := a.watch(ctx); err != nil {
		if ctx.Err() != nil {
			// Stopped while waiting for its caches (e.g. the API server
			// refusing its lists): nothing was written to the kernel.
			log.Info("stopped before the first full sync; the kernel is as it was")
			return nil
		}
		return err
	}
	if !a.mgr.GetCache().WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			log.Info("stopped before the first full sync; the kernel is as it was")
			return nil
		}
		return errors.New("agent: caches did not sync")
	}
	// The first full sync builds from the indexes: they must hold every
	// object the caches do, or it would program services without their
	// endpoints.
	for _, h := range a.handlers {
		if !toolscache.WaitForCacheSync(ctx.Done(), h.HasSynced) {
			return errors.New("agent: event handlers did not sync")
		}
	}
	// With no pool at all no event has loaded them: the empty set is known
	// now.
	a.loadPools(ctx)
	if err := a.firstSync(ctx); err != nil {
		return err
	}

	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	run(func() { a.syncer.RunFlusher(ctx) })
	run(func() { a.periodic(ctx) })
	run(func() { a.announce.run(ctx) })
	if a.reports != nil {
		run(func() { a.reports.run(ctx) })
	}
	// Each lane hands a VirtualService to one of its workers at a time.
	for range a.opts.Workers {
		run(func() {
			for a.processNext(ctx, a.queue) {
			}
		})
	}
	for range changeWorkers {
		run(func() {
			for a.processNext(ctx, a.changes) {
			}
		})
	}
	<-ctx.Done()
	a.queue.ShutDown()
	a.changes.ShutDown()
	wg.Wait()
	return nil
}

// firstSync adopts what the kernel holds and syncs every VirtualService
// once, queueing them all for their status and health targets. Only now,
// with the whole picture, may owned objects nobody wants go.
func (a *Agent) firstSync(ctx context.Context) error {
	if err := a.syncer.Adopt(ctx); err != nil {
		return err
	}
	log := ctrl.LoggerFrom(ctx)
	if err := a.fullSync(ctx, false); err != nil {
		log.Error(err, "first full sync had errors; retrying per VirtualService")
	}
	a.ready.Store(true)
	log.Info("first full sync done", "node", a.opts.NodeName)
	return nil
}

// rivals lists the other VirtualServices that claim one of vs's keys.
func (a *Agent) rivals(ctx context.Context, vs *lvsv1.VirtualService) ([]lvsv1.VirtualService, error) {
	self := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	var out []lvsv1.VirtualService
	var seen []types.NamespacedName
	for _, k := range vs.ServiceKeys() {
		for _, name := range a.byKey.lookup(k) {
			if name == self || slices.Contains(seen, name) {
				continue
			}
			seen = append(seen, name)
			var r lvsv1.VirtualService
			if err := a.client.Get(ctx, name, &r); err != nil {
				if apierrors.IsNotFound(err) {
					continue // deleted since it was indexed
				}
				return nil, fmt.Errorf("get %s: %w", name, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// periodic drains and resyncs.
func (a *Agent) periodic(ctx context.Context) {
	drain := time.NewTicker(a.opts.DrainInterval)
	defer drain.Stop()
	resync := time.NewTicker(a.opts.ResyncPeriod)
	defer resync.Stop()
	log := ctrl.LoggerFrom(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-drain.C:
			a.drain(ctx)
		case <-resync.C:
			if err := a.fullSync(ctx, true); err != nil {
				log.Error(err, "periodic resync")
			}
		}
	}
}

// drain deletes the drained real servers and queues the VirtualServices
// whose status counts changed.
func (a *Agent) drain(ctx context.Context) {
	changed, err := a.syncer.Drain(ctx)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "drain")
	}
	for _, n := range changed {
		a.queue.Add(n)
	}
}

// fullSync rebuilds every VirtualService and syncs them all; verify also
// compares the kernel with what was programmed and repairs drift.
func (a *Agent) fullSync(ctx context.Context, verify bool) error {
	// Taken before anything is read: the VirtualServices' own syncs that
	// read after it and are applied first are not undone (syncer.Resync).
	read := a.syncer.ReadToken()
	var list lvsv1.VirtualServiceList
	if err := a.client.List(ctx, &list); err != nil {
		return fmt.Errorf("list VirtualServices: %w", err)
	}
	node, err := a.node(ctx)
	if err != nil {
		return err
	}
	groups, errs := groupsOf(list.Items, func(vs *lvsv1.VirtualService) (desired.Group, error) {
		if a.ready.Load() {
			a.syncer.GiveWay(ctx) // a change or create in the syncer goes first
		}
		return a.build(ctx, vs, node)
	})
	// Once the lanes run (after the first full sync), a full sync leaves
	// VirtualServices new to the kernel to the create lane
	// (syncer.Resync), so that it never programs a burst of creates under
	// the syncer's lock while changes wait, and does not undo what their
	// own syncs applied since it read. The deferred ones are queued there
	// already, and again here in case an event was missed.
	var res syncer.Result
	if a.ready.Load() {
		res, err = a.syncer.Resync(ctx, groups, read)
	} else {
		res, err = a.syncer.SyncAll(ctx, groups)
	}
	if err != nil {
		errs = append(errs, err)
	}
	deferred := make(map[types.NamespacedName]bool, len(res.Deferred))
	for _, name := range res.Deferred {
		deferred[name] = true
		a.queue.Add(name)
	}
	for _, g := range groups {
		if !deferred[g.Name] {
			a.programmed.Store(g.Name, struct{}{})
		}
	}
	if verify {
		if n, err := a.syncer.Verify(ctx); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			ctrl.LoggerFrom(ctx).Info("repaired kernel drift", "repairs", n)
		}
	}
	if !verify || len(errs) > 0 {
		// After the first sync, status and health targets follow per
		// VirtualService; after a failed resync, a per-VirtualService pass
		// retries with backoff. A clean periodic resync queues nothing, so
		// changes never wait behind thousands of no-op passes.
		for i := range list.Items {
			a.queue.Add(types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name})
		}
	}
	return errors.Join(errs...)
}

// groupsOf builds the group of every VirtualService. One whose build fails
// is not known: it gets a group on hold, so that the full sync keeps what
// the kernel has for it rather than remove it as unwanted.
func groupsOf(items []lvsv1.VirtualService, build func(*lvsv1.VirtualService) (desired.Group, error)) ([]desired.Group, []error) {
	groups := make([]desired.Group, 0, len(items))
	var errs []error
	for i := range items {
		vs := &items[i]
		g, err := build(vs)
		if err != nil {
			errs = append(errs, err)
			g = desired.Group{Name: types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}, Hold: true, Problems: []string{err.Error()}}
		}
		groups = append(groups, g)
	}
	return groups, errs
}

func (a *Agent) node(ctx context.Context) (desired.Node, error) {
	var n corev1.Node
	if err := a.client.Get(ctx, types.NamespacedName{Name: a.opts.NodeName}, &n); err != nil {
		if apierrors.IsNotFound(err) {
			// Without a Node object (e.g. an agent outside the cluster)
			// only VirtualServices without a node selector apply.
			return desired.Node{Name: a.opts.NodeName}, nil
		}
		return desired.Node{}, fmt.Errorf("get node %s: %w", a.opts.NodeName, err)
	}
	return desired.Node{Name: n.Name, Labels: n.Labels}, nil
}

// build computes one VirtualService's desired state from the cache.
func (a *Agent) build(ctx context.Context, vs *lvsv1.VirtualService, node desired.Node) (desired.Group, error) {
	ps := a.pools.Load()
	if ps == nil {
		return desired.Group{}, errors.New("the AddressPools are not loaded yet")
	}
	// Which pools admit a namespace's VirtualServices depends on its
	// labels; one that cannot be read is not known: keep the kernel as it
	// is.
	nsLabels := func(name string) (map[string]string, error) {
		var ns corev1.Namespace
		if err := a.client.Get(ctx, types.NamespacedName{Name: name}, &ns); err != nil {
			return nil, fmt.Errorf("get namespace %s: %w", name, err)
		}
		return ns.Labels, nil
	}
	labels, err := nsLabels(vs.Namespace)
	if err != nil {
		return desired.Group{}, err
	}
	rivals, err := a.rivals(ctx, vs)
	if err != nil {
		return desired.Group{}, err
	}
	// A rival that may not bind its addresses wins nothing (the
	// controller decides the same).
	allowed, err := vsstatus.Admitted(rivals, func(r *lvsv1.VirtualService) ([]string, error) {
		l, err := nsLabels(r.Namespace)
		if err != nil {
			return nil, err
		}
		return pools.Check(*ps, r.Namespace, l, r.EffectiveAddresses()), nil
	})
	if err != nil {
		return desired.Group{}, err
	}
	lost := map[lvsv1.ServiceKey]bool{}
	for _, c := range vsstatus.Conflicts(vs, allowed) {
		lost[c.Key] = true
	}
	in := desired.Input{VS: vs, Node: node, Lost: lost, Pools: *ps, NamespaceLabels: labels}
	if ref := vs.Spec.Backends.ServiceRef; ref != nil {
		for _, name := range a.slicesOf.lookup(serviceRef{Namespace: vs.Namespace, Name: ref.Name}) {
			s := &discoveryv1.EndpointSlice{}
			if err := a.client.Get(ctx, name, s); err != nil {
				if apierrors.IsNotFound(err) {
					continue // deleted since it was indexed
				}
				return desired.Group{}, fmt.Errorf("get EndpointSlice %s: %w", name, err)
			}
			in.Slices = append(in.Slices, s)
		}
	}
	if a.health != nil && vs.Spec.HealthCheck != nil {
		group := vs.Namespace + "/" + vs.Name
		snap := a.health.Snapshot(group)
		in.Healthy = func(addr netip.Addr, port uint16) bool {
			ok, known := snap[health.Target{Group: group, Address: addr, Port: port}]
			return !known || ok
		}
	}
	return desired.Build(in), nil
}
