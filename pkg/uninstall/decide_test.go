package uninstall

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var discard = logr.Discard()

// refusing is an API server that answers every read with err.
type refusing struct{ err error }

func (r refusing) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return r.err
}

func (r refusing) List(context.Context, client.ObjectList, ...client.ListOption) error { return r.err }

func deletedDS(o Owner) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, UID: o.UID}}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	owner := &Owner{Namespace: "kubelvs-system", Name: "kubelvs-agent", UID: "uid-1"}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "kubelvs-agent", errors.New("RBAC"))
	for _, c := range []struct {
		name    string
		in      Inputs
		cleanup bool
		reason  Reason
	}{
		{"deleted with the owner's UID", Inputs{Owner: owner, Seen: Observation{Deleted: true}}, true, ReasonDeleted},
		{"deletionTimestamp (foreground)", Inputs{Owner: owner, Seen: Observation{Deleting: true}}, true, ReasonDeleting},
		{"deleted after an orphaning delete", Inputs{Owner: owner, Seen: Observation{Orphaning: true, Deleted: true}}, false, ReasonOrphaned},
		{"deleted, then replaced", Inputs{Owner: owner, Seen: Observation{Deleted: true, Replaced: true}}, false, ReasonReplaced},
		{"nothing seen, NotFound at stop", Inputs{Owner: owner, Check: &Check{Gone: true}}, true, ReasonGone},
		{"nothing seen, Forbidden at stop", Inputs{Owner: owner, Check: &Check{Err: forbidden}}, false, ReasonCheckFailed},
		{"nothing seen, no check", Inputs{Owner: owner}, false, ReasonNotChecked},
		{"replaced by another UID", Inputs{Owner: owner, Check: &Check{Found: true, UID: "uid-2"}}, false, ReasonReplaced},
		{"replaced by another UID being deleted", Inputs{Owner: owner, Check: &Check{Found: true, UID: "uid-2", Deleting: true}}, false, ReasonReplaced},
		{"running (a restart)", Inputs{Owner: owner, Check: &Check{Found: true, UID: "uid-1"}}, false, ReasonRunning},
		{"deleting at stop", Inputs{Owner: owner, Check: &Check{Found: true, UID: "uid-1", Deleting: true}}, true, ReasonDeleting},
		{"orphaning at stop", Inputs{Owner: owner, Check: &Check{Found: true, UID: "uid-1", Deleting: true, Orphaning: true}}, false, ReasonOrphaned},
		{"no owner reference", Inputs{}, false, ReasonNoOwner},
		{"own pod unreadable", Inputs{OwnerErr: forbidden, Check: &Check{Gone: true}}, false, ReasonOwnerError},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := Decide(c.in)
			if d.Cleanup != c.cleanup || d.Reason != c.reason {
				t.Errorf("Decide = %+v, want cleanup %v reason %s", d, c.cleanup, c.reason)
			}
			if (d.Reason == ReasonCheckFailed || d.Reason == ReasonOwnerError) && d.Err == nil {
				t.Errorf("Decide = %+v: the error that kept the kernel is lost", d)
			}
		})
	}
}

// TestNotFoundOnlyFromTheAPIServer: a NotFound is a positive answer only
// when it is the API server's, about the owner's name.
func TestNotFoundOnlyFromTheAPIServer(t *testing.T) {
	t.Parallel()
	ds := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"the API server's NotFound", apierrors.NewNotFound(ds, "kubelvs-agent"), true},
		{"wrapped", errors.Join(errors.New("get"), apierrors.NewNotFound(ds, "kubelvs-agent")), true},
		{"another name", apierrors.NewNotFound(ds, "other"), false},
		{"another resource", apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "kubelvs-agent"), false},
		{"a 404 without a Status (proxy)", apierrors.NewGenericServerResponse(404, "GET", ds, "kubelvs-agent", "404 page not found", 0, true), false},
		{"Forbidden", apierrors.NewForbidden(ds, "kubelvs-agent", errors.New("RBAC")), false},
		{"Unauthorized", apierrors.NewUnauthorized("token expired"), false},
		{"timeout", context.DeadlineExceeded, false},
	} {
		if got := notFound(c.err, "kubelvs-agent"); got != c.want {
			t.Errorf("%s: notFound(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestDecideWaitsForTheWatch: when the GET at stop is refused, a deletion
// the watch delivers meanwhile still counts; without one, the wait ends at
// grace and the kernel stays.
func TestDecideWaitsForTheWatch(t *testing.T) {
	t.Parallel()
	owner := Owner{Namespace: "ns", Name: "ds", UID: "uid-1"}
	forbidden := refusing{apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "ds", errors.New("RBAC"))}

	w := NewWatcher(nil, "ns", "pod", nil)
	w.setOwner(&owner, nil)
	start := time.Now()
	d := w.Decide(context.Background(), forbidden, 50*time.Millisecond)
	if d.Cleanup || d.Reason != ReasonCheckFailed || d.Err == nil {
		t.Errorf("no deletion seen, GET refused: %+v", d)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Errorf("did not wait for the watch")
	}

	w = NewWatcher(nil, "ns", "pod", nil)
	w.setOwner(&owner, nil)
	go func() {
		time.Sleep(20 * time.Millisecond)
		w.record(discard, owner, deletedDS(owner), true)
	}()
	if d := w.Decide(context.Background(), forbidden, time.Minute); !d.Cleanup || d.Reason != ReasonDeleted {
		t.Errorf("deletion delivered during the wait: %+v", d)
	}
}

// TestRecord: only events of the owner's UID count, and an orphaning
// delete is never an uninstall.
func TestRecord(t *testing.T) {
	t.Parallel()
	owner := Owner{Namespace: "ns", Name: "ds", UID: "uid-1"}
	now := metav1.Now()
	deleting := func(uid string, finalizers ...string) *appsv1.DaemonSet {
		d := deletedDS(owner)
		d.UID, d.DeletionTimestamp, d.Finalizers = types.UID("uid-"+uid), &now, finalizers
		return d
	}
	other := deletedDS(owner)
	other.UID = "uid-2"
	for _, c := range []struct {
		name   string
		events []any
		del    []bool
		want   Observation
	}{
		{"added, updated", []any{deletedDS(owner), deletedDS(owner)}, []bool{false, false}, Observation{}},
		{"deleted", []any{deletedDS(owner)}, []bool{true}, Observation{Deleted: true}},
		{"foreground", []any{deleting("1", metav1.FinalizerDeleteDependents)}, []bool{false}, Observation{Deleting: true}},
		{"orphan, then deleted", []any{deleting("1", metav1.FinalizerOrphanDependents), deletedDS(owner)}, []bool{false, true}, Observation{Orphaning: true, Deleted: true}},
		{"deleted, then another UID", []any{deletedDS(owner), other}, []bool{true, false}, Observation{Deleted: true, Replaced: true}},
		{"another UID, then deleted too", []any{deletedDS(owner), other, other}, []bool{true, false, true}, Observation{Deleted: true}},
		{"another UID deleting", []any{deleting("2")}, []bool{false}, Observation{Replaced: true}},
		{"not an object", []any{"junk"}, []bool{true}, Observation{}},
	} {
		w := NewWatcher(nil, "ns", "pod", nil)
		// Observed tells that a positive signal was seen once; Decide
		// reads the observation again.
		once := false
		for i, e := range c.events {
			w.record(discard, owner, e, c.del[i])
			once = once || w.Observation().Positive()
		}
		if got := w.Observation(); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		select {
		case <-w.Observed():
			if !once {
				t.Errorf("%s: Observed closed", c.name)
			}
		default:
			if once {
				t.Errorf("%s: Observed not closed", c.name)
			}
		}
	}
}
