package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

// The agent's event handlers keep its indexes (index.go) and queue the
// VirtualServices an event concerns; they never touch the kernel. They are
// registered on the manager's informers by watch, and the script tests
// call the same handlers with the objects they apply.

// watch registers the event handlers that queue VirtualServices.
func (a *Agent) watch(ctx context.Context) error {
	c := a.mgr.GetCache()
	vsInf, err := c.GetInformer(ctx, &lvsv1.VirtualService{})
	if err != nil {
		return fmt.Errorf("watch VirtualServices: %w", err)
	}
	reg, err := vsInf.AddEventHandler(a.watchEvents.counted(resourceVirtualServices, a.vsEvents()))
	if err != nil {
		return err
	}
	a.handlers = append(a.handlers, reg)

	sliceInf, err := c.GetInformer(ctx, &discoveryv1.EndpointSlice{})
	if err != nil {
		return fmt.Errorf("watch EndpointSlices: %w", err)
	}
	reg, err = sliceInf.AddEventHandler(a.watchEvents.counted(resourceEndpointSlices, a.sliceEvents()))
	if err != nil {
		return err
	}
	a.handlers = append(a.handlers, reg)

	// Which addresses a namespace may bind: the first full sync waits for
	// both (a.handlers), so nothing is programmed before the pools are known.
	poolInf, err := c.GetInformer(ctx, &lvsv1.AddressPool{})
	if err != nil {
		return fmt.Errorf("watch AddressPools: %w", err)
	}
	reg, err = poolInf.AddEventHandler(a.watchEvents.counted(resourceAddressPools, a.poolEvents(ctx)))
	if err != nil {
		return err
	}
	a.handlers = append(a.handlers, reg)

	nsInf, err := c.GetInformer(ctx, &corev1.Namespace{})
	if err != nil {
		return fmt.Errorf("watch Namespaces: %w", err)
	}
	reg, err = nsInf.AddEventHandler(a.watchEvents.counted(resourceNamespaces, a.namespaceEvents(ctx)))
	if err != nil {
		return err
	}
	a.handlers = append(a.handlers, reg)

	nodeInf, err := c.GetInformer(ctx, &corev1.Node{})
	if err != nil {
		return fmt.Errorf("watch Nodes: %w", err)
	}
	_, err = nodeInf.AddEventHandler(a.watchEvents.counted(resourceNodes, a.nodeEvents(ctx)))
	return err
}

// poolEvents handles AddressPool events: the pools are parsed again and,
// once the agent runs, every VirtualService is queued, since a pool may
// admit or refuse any of them. Status and metadata changes (a finalizer,
// the controller's status) change nothing.
func (a *Agent) poolEvents(ctx context.Context) toolscache.ResourceEventHandlerFuncs {
	changed := func(any) { a.loadPools(ctx) }
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { changed(obj) },
		DeleteFunc: changed,
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*lvsv1.AddressPool)
			n, ok2 := cur.(*lvsv1.AddressPool)
			if ok1 && ok2 && o.Generation == n.Generation {
				return
			}
			changed(cur)
		},
	}
}

// loadPools parses the cached AddressPools into the set every build
// checks addresses against, and queues every VirtualService when the
// agent runs. A pool that does not parse admits nothing and is logged.
func (a *Agent) loadPools(ctx context.Context) {
	var list lvsv1.AddressPoolList
	if err := a.client.List(ctx, &list); err != nil {
		// Which pools exist is not known: keep the last set and try again.
		ctrl.LoggerFrom(ctx).Error(err, "cannot list AddressPools; retrying", "in", queueAllRetry)
		time.AfterFunc(queueAllRetry, func() {
			if ctx.Err() == nil {
				a.loadPools(ctx)
			}
		})
		return
	}
	ps, errs := pools.Parse(list.Items)
	for _, err := range errs {
		ctrl.LoggerFrom(ctx).Info("an AddressPool is refused and admits nothing", "error", err.Error())
	}
	a.pools.Store(&ps)
	if a.ready.Load() {
		a.queueAll(ctx)
	}
}

// namespaceEvents handles Namespace events: a namespace's labels decide
// which pools admit its VirtualServices.
func (a *Agent) namespaceEvents(ctx context.Context) toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if ns, ok := obj.(*corev1.Namespace); ok && a.ready.Load() {
				a.queueNamespace(ctx, ns.Name)
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Namespace)
			n, ok2 := cur.(*corev1.Namespace)
			if ok1 && ok2 && !equalLabels(o.Labels, n.Labels) {
				a.queueNamespace(ctx, n.Name)
			}
		},
	}
}

// queueNamespace queues the VirtualServices of one namespace.
func (a *Agent) queueNamespace(ctx context.Context, ns string) {
	var list lvsv1.VirtualServiceList
	if err := a.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot list the VirtualServices of a namespace whose labels changed; retrying", "namespace", ns, "in", queueAllRetry)
		time.AfterFunc(queueAllRetry, func() {
			if ctx.Err() == nil {
				a.queueNamespace(ctx, ns)
			}
		})
		return
	}
	for i := range list.Items {
		a.event(types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name})
	}
}

// vsEvents handles VirtualService events: index the VirtualService, then
// queue it and whoever shares a key with it.
func (a *Agent) vsEvents() toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { a.indexVS(nil, obj); a.sawVS(obj); a.onVS(obj) },
		DeleteFunc: func(obj any) {
			obj = finalState(obj)
			a.indexVS(obj, nil)
			a.sawVS(obj)
			a.onVS(obj)
		},
		UpdateFunc: func(old, cur any) {
			a.indexVS(old, cur)
			if o, ok := old.(*lvsv1.VirtualService); ok && !a.needsSync(o, cur) {
				// A status write (often our own): nothing to program, so
				// handled as it comes.
				if vs, ok := cur.(*lvsv1.VirtualService); ok {
					key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
					a.wm.saw(key, vs.ResourceVersion)
					a.wm.handled(key, a.wm.start(key))
				}
				return
			}
			a.sawVS(cur)
			a.onVS(old)
			a.onVS(cur)
		},
	}
}

// sawVS counts an event of a VirtualService for the watermark.
func (a *Agent) sawVS(obj any) {
	if vs, ok := obj.(*lvsv1.VirtualService); ok {
		a.wm.saw(types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}, vs.ResourceVersion)
	}
}

func (a *Agent) indexVS(old, cur any) {
	name := objectName(old, cur)
	a.byKey.update(name, old, cur)
	a.byRef.update(name, old, cur)
}

// onVS queues a VirtualService and those that share one of its keys:
// whoever shares a key may win or lose it now. They are queued behind it
// in its lane, so that a VirtualService taking a key over is synced
// before the one losing it (an in-place takeover, not a delete and a
// create of the virtual server).
func (a *Agent) onVS(obj any) {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	change := a.isProgrammed(key)
	a.eventIn(key, change)
	for _, k := range vs.ServiceKeys() {
		for _, r := range a.byKey.lookup(k) {
			if r != key {
				a.eventIn(r, change)
			}
		}
	}
}

// sliceEvents handles EndpointSlice events.
func (a *Agent) sliceEvents() toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onSlice(nil, obj) },
		DeleteFunc: func(obj any) { a.onSlice(finalState(obj), nil) },
		UpdateFunc: a.onSlice,
	}
}

// onSlice indexes a slice's change and queues the VirtualServices of the
// Service it belonged to and the one it belongs to now.
func (a *Agent) onSlice(old, cur any) {
	a.slicesOf.update(objectName(old, cur), old, cur)
	var svcs []serviceRef
	for _, o := range []any{old, cur} {
		for _, svc := range sliceService(o) {
			if !slices.Contains(svcs, svc) {
				svcs = append(svcs, svc)
			}
		}
	}
	for _, svc := range svcs {
		for _, vs := range a.byRef.lookup(svc) {
			a.event(vs)
		}
	}
}

// nodeEvents handles the events of the agent's Node: a change of its
// labels may change which VirtualServices select it.
func (a *Agent) nodeEvents(ctx context.Context) toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if ok1 && ok2 && n.Name == a.opts.NodeName && !equalLabels(o.Labels, n.Labels) {
				a.queueAll(ctx)
			}
		},
	}
}

// objectName is the name of the object an event handler got (cur, or old
// when it was deleted).
func objectName(old, cur any) types.NamespacedName {
	for _, o := range []any{cur, old} {
		if m, ok := o.(client.Object); ok {
			return types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}
		}
	}
	return types.NamespacedName{}
}

// finalState unwraps the last known state of a deleted object whose
// deletion the watch missed.
func finalState(obj any) any {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// needsSync tells whether an update of a VirtualService can change what
// this node programs or reports: a new generation (spec), deletion, new
// allocated addresses (status.addresses), or this node's status entry
// differing from what the agent last wrote (someone else's write removed
// it). Other status updates, including the agent's own reports and the
// controller's conditions, are skipped.
func (a *Agent) needsSync(old *lvsv1.VirtualService, cur any) bool {
	vs, ok := cur.(*lvsv1.VirtualService)
	if !ok || old.Generation != vs.Generation || !vs.DeletionTimestamp.IsZero() {
		return true
	}
	if !slices.Equal(old.EffectiveAddresses(), vs.EffectiveAddresses()) {
		return true // the controller allocated or moved its addresses
	}
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	a.mu.Lock()
	last, reported := a.reported[key]
	a.mu.Unlock()
	switch {
	case !a.opts.ReportStatus || a.reports != nil:
		return false
	case !reported:
		return true // not reported yet: let the sync report
	default:
		return !a.mine(vs, last)
	}
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// queueAllRetry is how long queueAll waits to try a failed List again.
var queueAllRetry = time.Second

// queueAll queues every VirtualService after an event that concerns them
// all (the node's labels or the AddressPools changed).
func (a *Agent) queueAll(ctx context.Context) {
	var list lvsv1.VirtualServiceList
	if err := a.client.List(ctx, &list); err != nil {
		// Which VirtualServices select the node now is not known: say so,
		// and try again rather than wait for the periodic resync.
		ctrl.LoggerFrom(ctx).Error(err, "cannot list VirtualServices after the node's labels changed; retrying", "in", queueAllRetry)
		time.AfterFunc(queueAllRetry, func() {
			if ctx.Err() == nil {
				a.queueAll(ctx)
			}
		})
		return
	}
	for i := range list.Items {
		a.event(types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name})
	}
}
