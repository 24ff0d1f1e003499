package controllers

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=nodereports,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// serviceRefIndex indexes VirtualServices by the Service whose
// EndpointSlices they use.
const serviceRefIndex = "spec.backends.serviceRef.name"

func indexServiceRef(obj client.Object) []string {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok || vs.Spec.Backends.ServiceRef == nil {
		return nil
	}
	return []string{vs.Spec.Backends.ServiceRef.Name}
}

// waitingIndex indexes the VirtualServices whose Programmed condition is
// not True (value "true"): a NodeReport's change can concern only those
// (and the ones it lists as failed), so its handler lists them alone
// rather than every VirtualService, once per report event, N times per
// change on N nodes.
const waitingIndex = "status.waitingForNodes"

func indexWaiting(obj client.Object) []string {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok || meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionProgrammed) {
		return nil
	}
	return []string{"true"}
}

// backendCounts counts a VirtualService's backends as the API shows them,
// for the nodes that report in NodeReports (which carry no per-
// VirtualService counts): its EndpointSlices' endpoints (ready, or
// terminating: draining) and its static backends (ready unless weight 0).
// Health checks run on each node and are not counted.
func (r *VirtualServiceReconciler) backendCounts(ctx context.Context, vs *lvsv1.VirtualService) (lvsv1.BackendCounts, error) {
	var c lvsv1.BackendCounts
	for _, s := range vs.Spec.Backends.Static {
		c.Total++
		if s.Weight == nil || *s.Weight > 0 {
			c.Ready++
		}
	}
	ref := vs.Spec.Backends.ServiceRef
	if ref == nil {
		return c, nil
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &slices, client.InNamespace(vs.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: ref.Name}); err != nil {
		return c, fmt.Errorf("list EndpointSlices of %s: %w", ref.Name, err)
	}
	seen := map[string]bool{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 || seen[e.Addresses[0]] {
				continue
			}
			seen[e.Addresses[0]] = true
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			switch {
			case ready && !terminating:
				c.Total++
				c.Ready++
			case terminating:
				c.Total++
				c.Draining++
			default:
				c.Total++
			}
		}
	}
	return c, nil
}

// sliceUsers maps an EndpointSlice to the VirtualServices of its Service.
func (r *VirtualServiceReconciler) sliceUsers(ctx context.Context, obj client.Object) []reconcile.Request {
	svc := obj.GetLabels()[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil
	}
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{serviceRefIndex: svc}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot find the VirtualServices of an EndpointSlice", "endpointslice", client.ObjectKeyFromObject(obj))
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// generations remembers, per VirtualService, the resourceVersion at which
// the controller first saw its current generation: a node whose report's
// watermark is at or past it has synced that generation. Reading it at
// reconcile time, rather than at the spec's own write, can only make it
// later (a status write in between), which asks a little more of the
// nodes, never less: their watermarks pass status-only events at once.
type generations struct {
	mu sync.Mutex
	m  map[types.NamespacedName]genRV
}

type genRV struct {
	gen int64
	rv  uint64
}

// rvOf returns the resourceVersion at which vs's generation was first
// seen, recording it now if it is new. A generation whose status already
// says Programmed (a controller before this one, e.g. before a restart or
// a change of leader, saw every node program it) is recorded at 0: every
// node that reports has programmed it, unless it lists it as failed (a
// node writes its first report only after its first full sync). Else a
// restarted controller would wait for every node's watermark to pass its
// own last status write, which the nodes report only every few minutes.
func (g *generations) rvOf(vs *lvsv1.VirtualService) (uint64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[types.NamespacedName]genRV{}
	}
	key := client.ObjectKeyFromObject(vs)
	if cur, ok := g.m[key]; ok && cur.gen == vs.Generation {
		return cur.rv, true
	}
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed); c != nil &&
		c.Status == metav1.ConditionTrue && c.ObservedGeneration == vs.Generation {
		g.m[key] = genRV{gen: vs.Generation}
		return 0, true
	}
	rv, err := strconv.ParseUint(vs.ResourceVersion, 10, 64)
	if err != nil {
		return 0, false
	}
	g.m[key] = genRV{gen: vs.Generation, rv: rv}
	return rv, true
}

func (g *generations) forget(key types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, key)
}

// reportedNodes turns the NodeReports of the live nodes that vs's
// nodeSelector selects into per-node results: programmed (the node's
// watermark passed vs's generation), failed (the node lists vs at its
// generation, with why), or behind.
func (r *VirtualServiceReconciler) reportedNodes(ctx context.Context, vs *lvsv1.VirtualService, live map[string]map[string]string) ([]lvsv1.NodeStatus, error) {
	// Read only: the cache's objects as they are, not a copy of every
	// node's report per reconcile.
	var reports lvsv1.NodeReportList
	if err := r.Client.List(ctx, &reports, client.UnsafeDisableDeepCopy); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil // a cluster whose CRDs predate NodeReports
		}
		return nil, fmt.Errorf("list NodeReports: %w", err)
	}
	// Recorded at the first reconcile of a generation, reports or not: a
	// reconcile runs on the spec write, before the controller's own
	// status writes, which agents do not report per change.
	rv, ok := r.gens.rvOf(vs)
	if len(reports.Items) == 0 || !ok {
		return nil, nil
	}
	counts, err := r.backendCounts(ctx, vs)
	if err != nil {
		return nil, err
	}
	var out []lvsv1.NodeStatus
	for i := range reports.Items {
		rep := &reports.Items[i]
		labels, isLive := live[rep.Name]
		if !isLive || !selectsNode(vs.Spec.NodeSelector, labels) {
			continue
		}
		st := lvsv1.NodeStatus{Node: rep.Name, Backends: counts}
		failed := false
		for _, f := range rep.Status.Failed {
			if f.Namespace == vs.Namespace && f.Name == vs.Name && f.Generation == vs.Generation {
				st.ObservedGeneration, st.Message, failed = f.Generation, f.Message, true
			}
		}
		if w, err := strconv.ParseUint(rep.Status.ResourceVersion, 10, 64); !failed && err == nil && w >= rv {
			st.ObservedGeneration, st.Programmed = vs.Generation, true
		}
		out = append(out, st)
	}
	return out, nil
}

func selectsNode(sel map[string]lvsv1.LabelValue, labels map[string]string) bool {
	for k, v := range sel {
		if l, ok := labels[k]; !ok || l != string(v) {
			return false
		}
	}
	return true
}

// waiting maps a NodeReport's change to the VirtualServices that wait for
// nodes (Programmed not True) and those the report lists as failed (it is
// called with the report before and after the change, so a failure that
// cleared is seen too). A report created or deleted requeues every
// VirtualService instead (everyVirtualService).
func (r *VirtualServiceReconciler) waiting(ctx context.Context, obj client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	if rep, _ := obj.(*lvsv1.NodeReport); rep != nil {
		for _, f := range rep.Status.Failed {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: f.Namespace, Name: f.Name}})
		}
	}
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list, client.MatchingFields{waitingIndex: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot list VirtualServices after a NodeReport changed")
		return nil
	}
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
