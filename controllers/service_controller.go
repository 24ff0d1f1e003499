package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/lbservice"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// ServiceFieldOwner is the field manager of the VirtualServices the
// controller generates from Services.
const ServiceFieldOwner = "kubelvs-controller"

// Reasons of the Events on Services.
const (
	// ReasonGenerated: the VirtualService was created.
	ReasonGenerated = "Generated"
	// ReasonInvalidService: the Service does not translate; its
	// VirtualService, if any, is left as it was.
	ReasonInvalidService = "InvalidLoadBalancer"
	// ReasonNameConflict: a VirtualService of the Service's name exists
	// that the Service does not own.
	ReasonNameConflict = "NameConflict"
)

// ServiceReconciler generates a VirtualService for each Service of type
// LoadBalancer that kubelvs serves (lbservice.Serves), owned by the
// Service, of the same name and namespace, and copies its addresses into
// the Service's status.loadBalancer.ingress once the controller accepted
// it.
//
// It writes the whole spec with an update, not server-side apply: apply
// would keep a field a person added by hand (another field manager's), and
// the generated VirtualService must say what the Service says and nothing
// else. Any hand edit is overwritten when the VirtualService's change
// reaches the reconciler. On input that does not translate it writes
// nothing and records a Warning Event on the Service: a bad annotation must
// not take down a working load balancer. It removes what it generated only
// when the Service disowns it (lbservice.Disowned) or is gone.
type ServiceReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// DefaultClass also serves Services of type LoadBalancer without a
	// loadBalancerClass.
	DefaultClass bool
}

// Services are read, and their status patched (loadBalancer.ingress);
// VirtualServices generated, overwritten and deleted (update, not patch:
// see ServiceReconciler).
//
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=patch
// +kubebuilder:rbac:groups=lvs.kubelvs.io,resources=virtualservices,verbs=create;update;delete

// Reconcile brings the VirtualService of one Service, and the Service's
// ingress, in line with the Service.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var svc corev1.Service
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.deleteOrphan(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	var vs *lvsv1.VirtualService
	var cur lvsv1.VirtualService
	switch err := r.Client.Get(ctx, req.NamespacedName, &cur); {
	case err == nil:
		vs = &cur
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, err
	}
	switch {
	case !svc.DeletionTimestamp.IsZero() || lbservice.Disowned(&svc):
		return r.release(ctx, &svc, vs)
	case !lbservice.Serves(&svc, r.DefaultClass):
		// No class, and kubelvs is not the default: not ours to serve,
		// nor to take away (see lbservice.Disowned).
		return ctrl.Result{}, nil
	}
	if vs != nil && !controlledBy(vs, &svc) {
		r.Recorder.Eventf(&svc, vs, corev1.EventTypeWarning, ReasonNameConflict, "Generate",
			"VirtualService %s/%s exists and is not owned by this Service: kubelvs leaves it alone and generates none; rename or delete it",
			vs.Namespace, vs.Name)
		// Nothing of kubelvs's serves this Service: no ingress either.
		return r.patchIngress(ctx, &svc, nil)
	}

	spec, err := lbservice.Spec(&svc)
	if err != nil {
		var problems lbservice.Problems
		msgs := []string{err.Error()}
		if errors.As(err, &problems) {
			msgs = problems
		}
		if vs == nil {
			// Not a nil *VirtualService as the related object: the
			// recorder would dereference it.
			r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, ReasonInvalidService, "Generate", "%s", vsstatus.Bounded(msgs))
		} else {
			r.Recorder.Eventf(&svc, vs, corev1.EventTypeWarning, ReasonInvalidService, "Generate", "%s",
				vsstatus.Bounded(append([]string{"the VirtualService is left as it was"}, msgs...)))
		}
		return r.setIngress(ctx, &svc, vs)
	}

	if vs == nil {
		vs = &lvsv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{
				Name: svc.Name, Namespace: svc.Namespace,
				Labels:          map[string]string{lbservice.LabelService: svc.Name},
				OwnerReferences: []metav1.OwnerReference{ownerRef(&svc)},
			},
			Spec: spec,
		}
		if err := r.Client.Create(ctx, vs, client.FieldOwner(ServiceFieldOwner)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// The cache had not seen it yet: its event queues this again.
				return ctrl.Result{RequeueAfter: statusRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("create VirtualService: %w", err)
		}
		r.Recorder.Eventf(&svc, vs, corev1.EventTypeNormal, ReasonGenerated, "Generate", "generated VirtualService %s/%s", vs.Namespace, vs.Name)
		return r.setIngress(ctx, &svc, vs)
	}
	if !equality.Semantic.DeepEqual(vs.Spec, spec) || vs.Labels[lbservice.LabelService] != svc.Name {
		upd := vs.DeepCopy()
		upd.Spec = spec
		if upd.Labels == nil {
			upd.Labels = map[string]string{}
		}
		upd.Labels[lbservice.LabelService] = svc.Name
		// The update carries the resourceVersion read: a change meanwhile
		// makes it fail, and the next attempt reads again.
		if err := r.Client.Update(ctx, upd, client.FieldOwner(ServiceFieldOwner)); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				return ctrl.Result{RequeueAfter: statusRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("update VirtualService: %w", err)
		}
		vs = upd
	}
	return r.setIngress(ctx, &svc, vs)
}

// setIngress makes the Service's status.loadBalancer.ingress what vs
// says (lbservice.Ingress). kubelvs is the Service's load balancer, so the
// list is its own.
func (r *ServiceReconciler) setIngress(ctx context.Context, svc *corev1.Service, vs *lvsv1.VirtualService) (ctrl.Result, error) {
	return r.patchIngress(ctx, svc, lbservice.Ingress(vs))
}

// patchIngress writes the Service's ingress list, if it differs, with an
// optimistic lock: the read it is based on may be stale (the cache has not
// seen the last write yet), and a conflict is then tried again soon rather
// than counted as an error and backed off exponentially.
func (r *ServiceReconciler) patchIngress(ctx context.Context, svc *corev1.Service, want []corev1.LoadBalancerIngress) (ctrl.Result, error) {
	if equality.Semantic.DeepEqual(svc.Status.LoadBalancer.Ingress, want) {
		return ctrl.Result{}, nil
	}
	orig := svc.DeepCopy()
	svc.Status.LoadBalancer.Ingress = want
	if err := r.Client.Status().Patch(ctx, svc, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: statusRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch the Service's status.loadBalancer.ingress: %w", err)
	}
	return ctrl.Result{}, nil
}

// release undoes what the reconciler did for a Service kubelvs no longer
// serves (its type or class changed) or that is being deleted: the ingress
// entries of its VirtualService, then the VirtualService, if this Service
// owns it. The garbage collector would delete it only with the Service.
func (r *ServiceReconciler) release(ctx context.Context, svc *corev1.Service, vs *lvsv1.VirtualService) (ctrl.Result, error) {
	if vs == nil || !controlledBy(vs, svc) {
		return ctrl.Result{}, nil
	}
	if svc.DeletionTimestamp.IsZero() {
		// First the status, so that a failure leaves the VirtualService
		// that says which entries are kubelvs's.
		want := slices.DeleteFunc(slices.Clone(svc.Status.LoadBalancer.Ingress), func(in corev1.LoadBalancerIngress) bool {
			return slices.Contains(vs.EffectiveAddresses(), lvsv1.IPAddress(in.IP))
		})
		if len(want) == 0 {
			want = nil
		}
		if res, err := r.patchIngress(ctx, svc, want); err != nil || !res.IsZero() {
			return res, err
		}
	}
	return ctrl.Result{}, r.delete(ctx, vs)
}

// deleteOrphan deletes the VirtualService generated for a Service that is
// gone, as the garbage collector would (test clusters may have none).
func (r *ServiceReconciler) deleteOrphan(ctx context.Context, key types.NamespacedName) error {
	var vs lvsv1.VirtualService
	if err := r.Client.Get(ctx, key, &vs); err != nil {
		return client.IgnoreNotFound(err)
	}
	owner := metav1.GetControllerOf(&vs)
	if owner == nil || owner.APIVersion != "v1" || owner.Kind != "Service" || owner.Name != key.Name {
		return nil
	}
	return r.delete(ctx, &vs)
}

// delete deletes vs, and only that object: one re-created under its name
// meanwhile stays.
func (r *ServiceReconciler) delete(ctx context.Context, vs *lvsv1.VirtualService) error {
	err := r.Client.Delete(ctx, vs, client.Preconditions{UID: ptr.To(vs.UID)})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete VirtualService: %w", err)
	}
	return nil
}

// ownerRef makes svc the controller of its VirtualService. It does not set
// blockOwnerDeletion, which would need the update verb on services/finalizers
// where the OwnerReferencesPermissionEnforcement admission plugin runs: the
// VirtualService is deleted with the Service all the same.
func ownerRef(svc *corev1.Service) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: ptr.To(true)}
}

func controlledBy(vs *lvsv1.VirtualService, svc *corev1.Service) bool {
	owner := metav1.GetControllerOf(vs)
	return owner != nil && owner.UID == svc.UID
}

// sameName maps a VirtualService to the Service of its name: the one that
// owns it, or that a foreign one of that name blocks.
func sameName(_ context.Context, obj client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(obj)}}
}

// vsChanged passes the changes of a VirtualService that matter to its
// Service: its spec, owners and labels (a hand edit to overwrite) and its
// acceptance (the ingress). Agents' reports, which change status.nodes on
// every programming, do not.
var vsChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*lvsv1.VirtualService)
		n, ok2 := e.ObjectNew.(*lvsv1.VirtualService)
		if !ok1 || !ok2 {
			return true
		}
		return o.Generation != n.Generation ||
			!equality.Semantic.DeepEqual(o.OwnerReferences, n.OwnerReferences) ||
			!equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(lbservice.Ingress(o), lbservice.Ingress(n)) ||
			!o.DeletionTimestamp.Equal(n.DeletionTimestamp)
	},
}

// SetupWithManager registers the controller.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Service{}).
		Watches(&lvsv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(sameName), builder.WithPredicates(vsChanged)).
		Named("service").
		Complete(r)
}
