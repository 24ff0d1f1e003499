package uninstall

import (
	"context"
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LastCheck GETs the owner's name once.
func LastCheck(ctx context.Context, c client.Reader, o Owner) Check {
	var ds appsv1.DaemonSet
	err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Name}, &ds)
	if err != nil {
		if notFound(err, o.Name) {
			return Check{Gone: true}
		}
		return Check{Err: fmt.Errorf("get %s: %w", o, err)}
	}
	return Check{Found: true, UID: ds.UID, Deleting: ds.DeletionTimestamp != nil, Orphaning: orphaning(&ds)}
}

// notFound tells whether err is the API server's answer that DaemonSet name
// does not exist. A 404 without the API server's Status (a proxy, a
// misrouted request) is reported by client-go as NotFound too, with an
// "unexpected server response" cause and no reliable details: not an
// answer to build a cleanup on.
func notFound(err error, name string) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	if d == nil || d.Name != name || d.Group != "apps" || d.Kind != "daemonsets" {
		return false
	}
	for _, c := range d.Causes {
		if c.Type == metav1.CauseTypeUnexpectedServerResponse {
			return false
		}
	}
	return true
}

// orphaning tells whether obj is being deleted with orphan propagation.
func orphaning(obj metav1.Object) bool {
	return obj.GetDeletionTimestamp() != nil && slices.Contains(obj.GetFinalizers(), metav1.FinalizerOrphanDependents)
}
