// Package controllers holds the reconcilers of the controller role: thin
// adapters that read VirtualServices, decide their cluster-wide conditions
// and write status and Events, and that generate the VirtualServices of
// Services of type LoadBalancer (the translation is pkg/lbservice).
package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// statusRetry is how soon a status patch refused for a conflict is tried
// again on a fresh read.
const statusRetry = 200 * time.Millisecond

// VirtualServiceReconciler sets Accepted, Conflicted, Programmed and Ready
// on VirtualServices and records Events when they change for the worse.
type VirtualServiceReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// ServiceSelector is the agents' --endpointslice-selector (nil: none):
	// a VirtualService whose Service it does not select gets Ready=False,
	// ServiceNotSelected, and a Warning Event, since no agent watches that
	// Service's EndpointSlices.
	ServiceSelector labels.Selector

	gens generations
}

// What the controller role uses, and nothing more (test/chart asserts the
// exact rules). Leases and core events (leader election records its Events
// with the core API, on its Lease) are granted only in the controller's
// namespace: config/rbac and the chart move them from the generated
// ClusterRole into a Role, the Lease's get and update by name.
// TokenReviews and SubjectAccessReviews check who reads /metrics.
//
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=addresspools,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Reconcile computes the status of one VirtualService.
func (r *VirtualServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vs lvsv1.VirtualService
	if err := r.Client.Get(ctx, req.NamespacedName, &vs); err != nil {
		if apierrors.IsNotFound(err) {
			r.gens.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	admit, err := r.admission(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	notAllowed, err := admit(&vs)
	if err != nil {
		return ctrl.Result{}, err
	}
	rivals, err := r.rivals(ctx, &vs)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A rival that may not bind its addresses is programmed nowhere: it
	// wins nothing (else a namespace could block an address it may not
	// use by claiming it first).
	rivals, err = vsstatus.Admitted(rivals, admit)
	if err != nil {
		return ctrl.Result{}, err
	}
	conflicts := vsstatus.Conflicts(&vs, rivals)

	problems := vsstatus.Validate(&vs)
	orig := vs.DeepCopy()
	// Reports of nodes that no longer exist would hold Programmed at
	// False forever: drop them.
	live, err := r.liveNodes(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	vs.Status.Nodes = slices.DeleteFunc(vs.Status.Nodes, func(n lvsv1.NodeStatus) bool { _, ok := live[n.Node]; return !ok })
	// The nodes' NodeReports, for the nodes that report that way: folded
	// into the conditions, never written into the VirtualService.
	reported, err := r.reportedNodes(ctx, &vs, live)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A node that has a NodeReport reports through it: an entry of its
	// own in status.nodes is what its agent wrote before an upgrade, and
	// goes.
	hasReport := make(map[string]bool, len(reported))
	for _, n := range reported {
		hasReport[n.Node] = true
	}
	vs.Status.Nodes = slices.DeleteFunc(vs.Status.Nodes, func(n lvsv1.NodeStatus) bool { return hasReport[n.Node] })
	if len(vs.Status.Nodes) == 0 {
		vs.Status.Nodes = nil
	}
	nodes := append(slices.Clone(vs.Status.Nodes), reported...)
	wasInvalid := meta.IsStatusConditionFalse(vs.Status.Conditions, lvsv1.ConditionAccepted) &&
		meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted).Reason == vsstatus.ReasonInvalid
	wasFailing := programmingFailed(orig)
	wasNotAllowed := acceptedReason(orig) == vsstatus.ReasonAddressNotAllowed
	becameConflicted := vsstatus.ApplyNodes(&vs, problems, notAllowed, conflicts, nodes)
	unselected, err := r.unselectedService(ctx, &vs)
	if err != nil {
		return ctrl.Result{}, err
	}
	wasNotSelected := readyReason(orig) == vsstatus.ReasonServiceNotSelected
	if unselected != nil {
		vsstatus.NotSelected(&vs, notSelectedMessage(unselected, r.ServiceSelector))
	}
	if equality.Semantic.DeepEqual(orig.Status, vs.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &vs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Changed or deleted meanwhile: read it again soon (the watch
			// event of that change queues it too).
			return ctrl.Result{RequeueAfter: statusRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
	}
	if len(problems) > 0 && !wasInvalid {
		r.Recorder.Eventf(&vs, nil, "Warning", vsstatus.ReasonInvalid, "Validate", "%s", vsstatus.Bounded(problems))
	}
	if acceptedReason(&vs) == vsstatus.ReasonAddressNotAllowed && !wasNotAllowed {
		r.Recorder.Eventf(&vs, nil, "Warning", vsstatus.ReasonAddressNotAllowed, "Validate",
			"not programmed on any node: %s", vsstatus.Bounded(notAllowed))
	}
	if programmingFailed(&vs) && !wasFailing {
		c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
		r.Recorder.Eventf(&vs, nil, "Warning", vsstatus.ReasonProgrammingFailed, "Program", "%s", c.Message)
	}
	if readyReason(&vs) == vsstatus.ReasonServiceNotSelected && !wasNotSelected {
		msg := notSelectedMessage(unselected, r.ServiceSelector)
		r.Recorder.Eventf(&vs, unselected, corev1.EventTypeWarning, vsstatus.ReasonServiceNotSelected, "Validate", "%s", msg)
		if owner := metav1.GetControllerOf(&vs); owner != nil && owner.APIVersion == "v1" && owner.Kind == "Service" && owner.UID == unselected.UID {
			// Generated from a Service of type LoadBalancer: its user
			// looks at the Service, so it says so too.
			r.Recorder.Eventf(unselected, &vs, corev1.EventTypeWarning, vsstatus.ReasonServiceNotSelected, "Validate", "%s", msg)
		}
	}
	if becameConflicted && len(conflicts) > 0 {
		c := conflicts[0]
		r.Recorder.Eventf(&vs, nil, "Warning", "Conflicted", "Validate",
			"%s is already claimed by the older VirtualService %s/%s; this one is not programmed for it",
			c.Key, c.Winner.Namespace, c.Winner.Name)
	}
	return ctrl.Result{}, nil
}

// liveNodes returns the cluster's nodes and their labels.
func (r *VirtualServiceReconciler) liveNodes(ctx context.Context) (map[string]map[string]string, error) {
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	live := make(map[string]map[string]string, len(nodes.Items))
	for _, n := range nodes.Items {
		live[n.Name] = n.Labels
	}
	return live, nil
}

// everyVirtualService maps an event to all VirtualServices.
func (r *VirtualServiceReconciler) everyVirtualService(ctx context.Context, _ client.Object) []reconcile.Request {
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list); err != nil {
		// The reports of a deleted node, or a pool's change, wait for the
		// next change of each VirtualService (or the manager's periodic
		// resync): say so.
		ctrl.LoggerFrom(ctx).Error(err, "cannot list VirtualServices after a node was deleted or a pool changed")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// rivals lists the other VirtualServices that claim any key vs claims.
func (r *VirtualServiceReconciler) rivals(ctx context.Context, vs *lvsv1.VirtualService) ([]lvsv1.VirtualService, error) {
	seen := map[types.UID]bool{vs.UID: true}
	var out []lvsv1.VirtualService
	for _, k := range vs.ServiceKeys() {
		var list lvsv1.VirtualServiceList
		if err := r.Client.List(ctx, &list, client.MatchingFields{vsstatus.ServiceKeyIndex: k.String()}); err != nil {
			return nil, fmt.Errorf("list VirtualServices claiming %s: %w", k, err)
		}
		for i := range list.Items {
			if !seen[list.Items[i].UID] {
				seen[list.Items[i].UID] = true
				out = append(out, list.Items[i])
			}
		}
	}
	return out, nil
}

// sharers maps a VirtualService event to every VirtualService that claims
// one of its keys, so the loser of a conflict is re-evaluated when the
// winner changes or goes away.
func (r *VirtualServiceReconciler) sharers(ctx context.Context, obj client.Object) []reconcile.Request {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return nil
	}
	rivals, err := r.rivals(ctx, vs)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot find VirtualServices sharing keys", "virtualservice", client.ObjectKeyFromObject(vs))
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(rivals))
	for i := range rivals {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&rivals[i])})
	}
	return reqs
}

// SetupWithManager registers the index and the controller.
func (r *VirtualServiceReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &lvsv1.VirtualService{}, vsstatus.ServiceKeyIndex, vsstatus.IndexServiceKeys); err != nil {
		return fmt.Errorf("index VirtualServices by service key: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &lvsv1.VirtualService{}, serviceRefIndex, indexServiceRef); err != nil {
		return fmt.Errorf("index VirtualServices by Service: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &lvsv1.VirtualService{}, waitingIndex, indexWaiting); err != nil {
		return fmt.Errorf("index VirtualServices waiting for nodes: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if r.ServiceSelector != nil {
		// Whether the agents select a Service is in its labels.
		b = b.Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.servicesUsers),
			builder.WithPredicates(predicate.LabelChangedPredicate{}))
	}
	return b.
		For(&lvsv1.VirtualService{}).
		Watches(&lvsv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(r.sharers)).
		// A node that goes away takes its reports with it.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.everyVirtualService),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc: func(event.CreateEvent) bool { return false },
				UpdateFunc: func(event.UpdateEvent) bool { return false },
				DeleteFunc: func(event.DeleteEvent) bool { return true },
			})).
		// A node's report: the VirtualServices waiting for nodes, and
		// those it lists as failed.
		Watches(&lvsv1.NodeReport{}, handler.EnqueueRequestsFromMapFunc(r.waiting),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc: func(event.CreateEvent) bool { return false },
				DeleteFunc: func(event.DeleteEvent) bool { return false },
			})).
		// A node that starts or stops reporting changes every count.
		Watches(&lvsv1.NodeReport{}, handler.EnqueueRequestsFromMapFunc(r.everyVirtualService),
			builder.WithPredicates(predicate.Funcs{
				UpdateFunc: func(event.UpdateEvent) bool { return false },
			})).
		// Their backend counts, for the nodes that report in NodeReports.
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.sliceUsers)).
		// Pools decide which addresses every VirtualService may bind.
		Watches(&lvsv1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.everyVirtualService),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.namespaceMembers),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("virtualservice").
		Complete(r)
}

// admission reads the AddressPools and returns the rule every agent
// applies too (pools.Check): the addresses of a VirtualService that no
// pool admits to its namespace. A pool that validation refuses admits
// nothing; it is logged.
func (r *VirtualServiceReconciler) admission(ctx context.Context) (func(*lvsv1.VirtualService) ([]string, error), error) {
	var list lvsv1.AddressPoolList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list AddressPools: %w", err)
	}
	ps, errs := pools.Parse(list.Items)
	for _, err := range errs {
		ctrl.LoggerFrom(ctx).Info("an AddressPool is refused and admits nothing", "error", err.Error())
	}
	return func(vs *lvsv1.VirtualService) ([]string, error) {
		var ns corev1.Namespace
		if err := r.Client.Get(ctx, types.NamespacedName{Name: vs.Namespace}, &ns); err != nil {
			return nil, fmt.Errorf("get namespace %s: %w", vs.Namespace, err)
		}
		return pools.Check(ps, vs.Namespace, ns.Labels, vs.EffectiveAddresses()), nil
	}, nil
}

// namespaceMembers maps a Namespace event to its VirtualServices: its
// labels decide which pools admit them.
func (r *VirtualServiceReconciler) namespaceMembers(ctx context.Context, obj client.Object) []reconcile.Request {
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetName())); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot list the VirtualServices of a namespace whose labels changed", "namespace", obj.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// unselectedService returns the Service of vs's spec.backends.serviceRef
// when ServiceSelector is set and does not select it; nil when it does,
// when there is no selector or serviceRef, or when the Service does not
// exist (its backends are empty for that reason, not this one).
func (r *VirtualServiceReconciler) unselectedService(ctx context.Context, vs *lvsv1.VirtualService) (*corev1.Service, error) {
	ref := vs.Spec.Backends.ServiceRef
	if r.ServiceSelector == nil || ref == nil {
		return nil, nil
	}
	var svc corev1.Service
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: vs.Namespace, Name: ref.Name}, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get Service %s: %w", ref.Name, err)
	}
	if r.ServiceSelector.Matches(labels.Set(svc.Labels)) {
		return nil, nil
	}
	return &svc, nil
}

func notSelectedMessage(svc *corev1.Service, sel labels.Selector) string {
	return fmt.Sprintf("Service %s/%s does not match the agents' --endpointslice-selector %q: they do not watch its EndpointSlices, "+
		"so no node has backends for this VirtualService; label the Service to match (its EndpointSlices get its labels)",
		svc.Namespace, svc.Name, sel.String())
}

// servicesUsers maps a Service to the VirtualServices of its namespace
// whose serviceRef names it.
func (r *VirtualServiceReconciler) servicesUsers(ctx context.Context, obj client.Object) []reconcile.Request {
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{serviceRefIndex: obj.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "cannot find the VirtualServices of a Service", "service", client.ObjectKeyFromObject(obj))
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

func readyReason(vs *lvsv1.VirtualService) string {
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

func acceptedReason(vs *lvsv1.VirtualService) string {
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted); c != nil {
		return c.Reason
	}
	return ""
}

func programmingFailed(vs *lvsv1.VirtualService) bool {
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
	return c != nil && c.Reason == vsstatus.ReasonProgrammingFailed
}
