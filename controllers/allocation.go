package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// HeldAddressIndex is the cache field index of VirtualServices by the
// addresses they hold: spec.addresses and status.addresses.
const HeldAddressIndex = "lvs.kubelvs.io/held-address"

// AllocationReconciler gives a VirtualService that asks for automatic
// addresses (spec.addressFamilies) one address per family from an
// AddressPool, and records it in status.addresses: the status is the
// record, so what is in use is rebuilt from the cache after a restart or
// a leader change, and an address is free again once its VirtualService
// is gone.
//
// It never hands one address to two owners: only the leader runs it, one
// reconcile at a time under mu, and it remembers what it wrote until its
// cache shows it. Should the cache ever show two VirtualServices holding
// one allocated address (a new leader that allocated before its cache
// saw the old leader's last write), the younger gets another address.
type AllocationReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder

	mu sync.Mutex
	// written are the addresses this process allocated, by owner UID,
	// until its cache shows them in the owner's status.
	written map[types.UID][]netip.Addr
}

// What the allocation reads, and nothing more (test/chart asserts the
// exact rules). Writing status.addresses is the virtualservices/status
// patch of the VirtualServiceReconciler.
//
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=addresspools,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile allocates, keeps, moves or releases the automatic addresses of
// one VirtualService.
func (r *AllocationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var vs lvsv1.VirtualService
	if err := r.Client.Get(ctx, req.NamespacedName, &vs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // it holds its addresses until it is gone
	}
	orig := vs.DeepCopy()
	if len(vs.Spec.AddressFamilies) == 0 {
		// Addresses named in the spec now (or an invalid spec): give back
		// what was allocated.
		vs.Status.Addresses = nil
		meta.RemoveStatusCondition(&vs.Status.Conditions, lvsv1.ConditionAddressesAllocated)
		return r.patch(ctx, orig, &vs, nil)
	}

	view, err := r.load(ctx, &vs)
	if err != nil {
		return ctrl.Result{}, err
	}
	as := pools.Assign(view.pools, &vs, view.nsLabels, view.holders)
	vs.Status.Addresses = nil
	for _, a := range as.Addresses {
		vs.Status.Addresses = append(vs.Status.Addresses, lvsv1.IPAddress(a.String()))
	}
	cond := metav1.Condition{Type: lvsv1.ConditionAddressesAllocated, Status: metav1.ConditionTrue,
		Reason: vsstatus.ReasonAllocated, Message: "allocated " + joinAddrs(as.Addresses), ObservedGeneration: vs.Generation}
	if as.Err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, vsstatus.ReasonNoAddressAvailable, as.Err.Error()
	}
	wasFailing := meta.IsStatusConditionFalse(orig.Status.Conditions, lvsv1.ConditionAddressesAllocated)
	meta.SetStatusCondition(&vs.Status.Conditions, cond)
	if equality.Semantic.DeepEqual(orig.Status, vs.Status) {
		return ctrl.Result{}, nil
	}

	res, err := r.patch(ctx, orig, &vs, as.Allocated)
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	log.FromContext(ctx).V(1).Info("allocation", "addresses", vs.Status.Addresses, "allocated", as.Allocated, "dropped", as.Dropped)
	for _, d := range as.Dropped {
		instead := "allocated " + joinAddrs(as.Allocated) + " instead"
		if as.Err != nil {
			instead = "no other address: " + as.Err.Error()
		}
		r.Recorder.Eventf(&vs, nil, "Warning", vsstatus.ReasonReallocated, "Allocate", "%s; %s", d, instead)
	}
	if as.Err != nil && !wasFailing {
		r.Recorder.Eventf(&vs, nil, "Warning", vsstatus.ReasonNoAddressAvailable, "Allocate", "%s", as.Err)
	}
	return ctrl.Result{}, nil
}

// patch writes vs's status if it changed, with an optimistic lock: an
// allocation made on a stale read must not land. On success the addresses
// allocated are remembered until the cache shows them.
func (r *AllocationReconciler) patch(ctx context.Context, orig, vs *lvsv1.VirtualService, allocated []netip.Addr) (ctrl.Result, error) {
	if equality.Semantic.DeepEqual(orig.Status, vs.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, vs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: statusRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch status.addresses: %w", err)
	}
	delete(r.written, vs.UID) // what it held before is in the patch or released
	if len(allocated) > 0 {
		r.written[vs.UID] = allocated
	}
	return ctrl.Result{}, nil
}

// view is what one allocation decides from: the valid pools, the
// namespace's labels, who holds which address.
type view struct {
	pools    []*pools.Pool
	nsLabels map[string]string
	// holders of each address other than the VirtualService itself:
	// spec.addresses, status.addresses and what this process wrote.
	holders map[netip.Addr][]*lvsv1.VirtualService
}

func (r *AllocationReconciler) load(ctx context.Context, vs *lvsv1.VirtualService) (*view, error) {
	var apl lvsv1.AddressPoolList
	if err := r.Client.List(ctx, &apl); err != nil {
		return nil, fmt.Errorf("list AddressPools: %w", err)
	}
	v := &view{holders: map[netip.Addr][]*lvsv1.VirtualService{}}
	for i := range apl.Items {
		// An invalid pool gives nothing (validation.AddressPool says why).
		if p, err := pools.New(&apl.Items[i]); err == nil {
			v.pools = append(v.pools, p)
		}
	}
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, client.ObjectKey{Name: vs.Namespace}, &ns); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("get namespace %s: %w", vs.Namespace, err)
	}
	v.nsLabels = ns.Labels
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list VirtualServices: %w", err)
	}
	if r.written == nil {
		r.written = map[types.UID][]netip.Addr{}
	}
	live := map[types.UID]bool{}
	for i := range list.Items {
		o := &list.Items[i]
		live[o.UID] = true
		held := heldAddresses(o)
		// Forget what the cache shows now.
		r.written[o.UID] = slices.DeleteFunc(r.written[o.UID], func(a netip.Addr) bool { return slices.Contains(held, a) })
		held = append(held, r.written[o.UID]...)
		if o.UID == vs.UID {
			continue
		}
		for _, a := range held {
			v.holders[a] = append(v.holders[a], o)
		}
	}
	for uid, as := range r.written {
		if !live[uid] || len(as) == 0 {
			delete(r.written, uid)
		}
	}
	return v, nil
}

// heldAddresses are the addresses a VirtualService holds: spec.addresses
// and status.addresses, whatever its spec asks now.
func heldAddresses(vs *lvsv1.VirtualService) []netip.Addr {
	var out []netip.Addr
	for _, s := range slices.Concat(vs.Spec.Addresses, vs.Status.Addresses) {
		if a, err := netip.ParseAddr(string(s)); err == nil {
			out = append(out, a.Unmap().WithZone(""))
		}
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// indexHeldAddresses returns the HeldAddressIndex values of a
// VirtualService.
func indexHeldAddresses(obj client.Object) []string {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return nil
	}
	var out []string
	for _, a := range heldAddresses(vs) {
		out = append(out, a.String())
	}
	return out
}

// asksForAddresses reports whether a VirtualService has, or had, automatic
// addresses.
func asksForAddresses(vs *lvsv1.VirtualService) bool {
	return len(vs.Spec.AddressFamilies) > 0 || len(vs.Status.Addresses) > 0
}

// sharers maps a VirtualService event to the others holding one of its
// addresses (a duplicate to settle), and a deletion also to those still
// waiting for an address (one may be free now).
func (r *AllocationReconciler) sharers(ctx context.Context, obj client.Object) []reconcile.Request {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return nil
	}
	seen := map[types.NamespacedName]bool{client.ObjectKeyFromObject(vs): true}
	var reqs []reconcile.Request
	add := func(o *lvsv1.VirtualService) {
		k := client.ObjectKeyFromObject(o)
		if !seen[k] && asksForAddresses(o) {
			seen[k] = true
			reqs = append(reqs, reconcile.Request{NamespacedName: k})
		}
	}
	for _, a := range heldAddresses(vs) {
		var list lvsv1.VirtualServiceList
		if err := r.Client.List(ctx, &list, client.MatchingFields{HeldAddressIndex: a.String()}); err != nil {
			log.FromContext(ctx).Error(err, "cannot find VirtualServices holding an address", "address", a)
			continue
		}
		for i := range list.Items {
			add(&list.Items[i])
		}
	}
	if vs.DeletionTimestamp.IsZero() {
		// An informer's delete event carries the object as last seen,
		// without a deletion timestamp when it was deleted at once: the
		// cache tells.
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(vs), &lvsv1.VirtualService{}); !apierrors.IsNotFound(err) {
			return reqs
		}
	}
	for _, o := range r.waiting(ctx, "") {
		add(o)
	}
	return reqs
}

// waiting lists the VirtualServices (of a namespace, or all) that ask for
// addresses.
func (r *AllocationReconciler) waiting(ctx context.Context, namespace string) []*lvsv1.VirtualService {
	var list lvsv1.VirtualServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		log.FromContext(ctx).Error(err, "cannot list VirtualServices to allocate addresses again")
		return nil
	}
	var out []*lvsv1.VirtualService
	for i := range list.Items {
		if asksForAddresses(&list.Items[i]) {
			out = append(out, &list.Items[i])
		}
	}
	return out
}

// onPoolOrNamespace maps an AddressPool event to every VirtualService that
// asks for addresses, and a Namespace event to those of that namespace: a
// pool that opens or grows may serve one that waits; one that closes or
// narrows may take back what it gave.
func (r *AllocationReconciler) onPoolOrNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	namespace := ""
	if _, ok := obj.(*corev1.Namespace); ok {
		namespace = obj.GetName()
	}
	var reqs []reconcile.Request
	for _, o := range r.waiting(ctx, namespace) {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
	}
	return reqs
}

// SetupWithManager registers the index and the controller.
func (r *AllocationReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &lvsv1.VirtualService{}, HeldAddressIndex, indexHeldAddresses); err != nil {
		return fmt.Errorf("index VirtualServices by held address: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&lvsv1.VirtualService{}).
		Watches(&lvsv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(r.sharers)).
		Watches(&lvsv1.AddressPool{}, handler.EnqueueRequestsFromMapFunc(r.onPoolOrNamespace)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.onPoolOrNamespace)).
		Named("allocation").
		Complete(r)
}
