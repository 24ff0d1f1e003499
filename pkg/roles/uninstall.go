package roles

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get

// uninstalled tells a stopping agent whether it stops because kubelvs is
// being uninstalled (its DaemonSet is gone or being deleted) rather than
// restarted or upgraded (the DaemonSet is still there). Only then does the
// agent remove what it made; on a restart the kernel must stay as it is.
func uninstalled(cfg *rest.Config, namespace, pod string) (bool, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p corev1.Pod
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: pod}, &p); err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			// An uninstall deletes the agent's ServiceAccount and RBAC
			// right after its DaemonSet; a restart or upgrade keeps them.
			return true, nil
		}
		return false, fmt.Errorf("get own pod %s/%s: %w", namespace, pod, err)
	}
	for _, ref := range p.OwnerReferences {
		if ref.Kind != "DaemonSet" || ref.Controller == nil || !*ref.Controller {
			continue
		}
		var ds appsv1.DaemonSet
		err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &ds)
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("get DaemonSet %s/%s: %w", namespace, ref.Name, err)
		default:
			return !ds.DeletionTimestamp.IsZero() || ds.UID != ref.UID, nil
		}
	}
	return false, nil
}
