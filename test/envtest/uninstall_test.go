package envtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelvs/kubelvs/pkg/uninstall"
)

// watchUninstall runs the agent's watch of its DaemonSet as the identity c,
// for the pod ns/pod, until the test ends.
func watchUninstall(t *testing.T, c *rest.Config, ns, pod string) (*uninstall.Watcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w := uninstall.NewWatcher(c, ns, pod, uninstall.NewMetrics(reg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, reg
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

// waitWatching waits until the watch has listed the DaemonSet.
func waitWatching(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	eventually(t, 20*time.Second, "watching the DaemonSet", func() error {
		if g := gauge(t, reg, "kubelvs_uninstall_watching"); g != 1 {
			return fmt.Errorf("kubelvs_uninstall_watching %v", g)
		}
		return nil
	})
}

func waitSeen(t *testing.T, w *uninstall.Watcher, what string, ok func(uninstall.Observation) bool) {
	t.Helper()
	eventually(t, 20*time.Second, what, func() error {
		if o := w.Observation(); !ok(o) {
			return fmt.Errorf("seen %+v", o)
		}
		return nil
	})
}

func wantDecision(t *testing.T, d uninstall.Decision, cleanup bool, reason uninstall.Reason) {
	t.Helper()
	if d.Cleanup != cleanup || d.Reason != reason {
		t.Fatalf("decision %+v, want cleanup=%v reason=%s", d, cleanup, reason)
	}
}

// TestUninstallWatch: the agent's watch of its own DaemonSet, with the RBAC
// config/rbac ships, against a real API server. Only a deletion of the
// DaemonSet that owns the pod (its UID) is an uninstall.
func TestUninstallWatch(t *testing.T) {
	ctx := context.Background()
	const grace = 300 * time.Millisecond
	// setup: a namespace with the agent's RBAC, DaemonSet and pod, and
	// the agent's watch running as the agent.
	setup := func(t *testing.T) (ns string, ds *appsv1.DaemonSet, rbac agentRBAC, agent client.Client, w *uninstall.Watcher, reg *prometheus.Registry) {
		ns = namespace(t, "uninstall")
		rbac = grantAgentRBAC(t, ns)
		ds, pod := agentDaemonSet(t, ns, true)
		id := agentIdentity(t, ns)
		w, reg = watchUninstall(t, id, ns, pod.Name)
		waitWatching(t, reg)
		if o, err := w.Owner(); err != nil || o == nil || o.UID != ds.UID {
			t.Fatalf("owner %+v %v, want the DaemonSet %s", o, err, ds.UID)
		}
		return ns, ds, rbac, newClient(t, id), w, reg
	}

	t.Run("deleted with the owner's UID: cleanup", func(t *testing.T) {
		_, ds, _, agent, w, reg := setup(t)
		if g := gauge(t, reg, "kubelvs_uninstall_observed"); g != 0 {
			t.Fatalf("kubelvs_uninstall_observed %v before any deletion", g)
		}
		if err := k8s.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.Observed():
		case <-time.After(20 * time.Second):
			t.Fatalf("deletion not observed: %+v", w.Observation())
		}
		if g := gauge(t, reg, "kubelvs_uninstall_observed"); g != 1 {
			t.Errorf("kubelvs_uninstall_observed %v", g)
		}
		wantDecision(t, w.Decide(ctx, agent, grace), true, uninstall.ReasonDeleted)
	})

	t.Run("replaced by a DaemonSet with another UID: keep", func(t *testing.T) {
		ns, ds, _, agent, w, _ := setup(t)
		if err := k8s.Delete(ctx, ds); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(ctx, newAgentDaemonSet(ns)); err != nil {
			t.Fatal(err)
		}
		waitSeen(t, w, "the old one deleted, the new one there", func(o uninstall.Observation) bool { return o.Deleted && o.Replaced })
		wantDecision(t, w.Decide(ctx, agent, grace), false, uninstall.ReasonReplaced)
	})

	t.Run("foreground deletion (deletionTimestamp): cleanup", func(t *testing.T) {
		_, ds, _, agent, w, _ := setup(t)
		// No garbage collector runs here: the DaemonSet stays, with its
		// deletionTimestamp, as it does while its pods are deleted.
		if err := k8s.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
			t.Fatal(err)
		}
		waitSeen(t, w, "deleting", func(o uninstall.Observation) bool { return o.Deleting })
		wantDecision(t, w.Decide(ctx, agent, grace), true, uninstall.ReasonDeleting)
	})

	t.Run("orphaning deletion: keep", func(t *testing.T) {
		_, ds, _, agent, w, reg := setup(t)
		if err := k8s.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
			t.Fatal(err)
		}
		waitSeen(t, w, "orphaning", func(o uninstall.Observation) bool { return o.Orphaning })
		wantDecision(t, w.Decide(ctx, agent, grace), false, uninstall.ReasonOrphaned)
		if g := gauge(t, reg, "kubelvs_uninstall_observed"); g != 0 {
			t.Errorf("kubelvs_uninstall_observed %v", g)
		}
	})

	t.Run("restart: the DaemonSet is there: keep", func(t *testing.T) {
		_, _, _, agent, w, _ := setup(t)
		wantDecision(t, w.Decide(ctx, agent, grace), false, uninstall.ReasonRunning)
	})

	t.Run("RBAC revoked: the GET at stop is refused (keep), the established watch still delivers (cleanup)", func(t *testing.T) {
		_, ds, rbac, agent, w, _ := setup(t)
		rbac.revoke(t)
		eventually(t, 20*time.Second, "the agent's GET refused", func() error {
			err := agent.Get(ctx, client.ObjectKeyFromObject(ds), &appsv1.DaemonSet{})
			if !apierrors.IsForbidden(err) {
				return fmt.Errorf("GET: %v", err)
			}
			return nil
		})
		d := w.Decide(ctx, agent, grace)
		wantDecision(t, d, false, uninstall.ReasonCheckFailed)
		if !apierrors.IsForbidden(d.Err) {
			t.Errorf("decision error %v, want the Forbidden", d.Err)
		}
		// What `helm uninstall` does, in the other order: the watch
		// was established with the RBAC and keeps delivering without.
		if err := k8s.Delete(ctx, ds); err != nil {
			t.Fatal(err)
		}
		waitSeen(t, w, "deleted", func(o uninstall.Observation) bool { return o.Deleted })
		wantDecision(t, w.Decide(ctx, agent, grace), true, uninstall.ReasonDeleted)
	})

	t.Run("pod without an owner: keep", func(t *testing.T) {
		ns := namespace(t, "uninstall")
		grantAgentRBAC(t, ns)
		_, pod := agentDaemonSet(t, ns, false)
		id := agentIdentity(t, ns)
		w, _ := watchUninstall(t, id, ns, pod.Name)
		eventually(t, 20*time.Second, "pod read", func() error {
			if _, err := w.Owner(); err != nil {
				return err
			}
			return nil
		})
		wantDecision(t, w.Decide(ctx, newClient(t, id), grace), false, uninstall.ReasonNoOwner)
	})

	t.Run("own pod unreadable (no RBAC): keep", func(t *testing.T) {
		ns := namespace(t, "uninstall")
		ds, pod := agentDaemonSet(t, ns, true)
		id := agentIdentity(t, ns)
		w, _ := watchUninstall(t, id, ns, pod.Name)
		eventually(t, 20*time.Second, "pod refused", func() error {
			if _, err := w.Owner(); !apierrors.IsForbidden(err) {
				return fmt.Errorf("owner error %v", err)
			}
			return nil
		})
		// Even with the DaemonSet gone: the agent cannot know it was its own.
		if err := k8s.Delete(ctx, ds); err != nil {
			t.Fatal(err)
		}
		d := w.Decide(ctx, newClient(t, cfg), grace)
		wantDecision(t, d, false, uninstall.ReasonOwnerError)
		if !apierrors.IsForbidden(d.Err) {
			t.Errorf("decision error %v, want the Forbidden", d.Err)
		}
	})
}

// TestUninstallLastCheck: the one GET a stopping agent makes when its watch
// saw nothing: only the API server's NotFound is an uninstall.
func TestUninstallLastCheck(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "lastcheck")
	grantAgentRBAC(t, ns)
	ds, _ := agentDaemonSet(t, ns, true)
	owner := uninstall.Owner{Namespace: ns, Name: ds.Name, UID: ds.UID}
	agent := newClient(t, agentIdentity(t, ns))
	decide := func(c client.Client) uninstall.Decision {
		check := uninstall.LastCheck(ctx, c, owner)
		return uninstall.Decide(uninstall.Inputs{Owner: &owner, Check: &check})
	}

	wantDecision(t, decide(agent), false, uninstall.ReasonRunning)

	// Least privilege: the agent reads its own DaemonSet, by name, and no
	// other (the watch lists with a field selector on the name).
	if err := agent.List(ctx, &appsv1.DaemonSetList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("the agent lists every DaemonSet of its namespace: %v", err)
	}
	if err := agent.Get(ctx, client.ObjectKey{Namespace: ns, Name: "other"}, &appsv1.DaemonSet{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent reads another DaemonSet: %v", err)
	}

	// Forbidden: an identity without RBAC (a token or RBAC hiccup).
	other := namespace(t, "lastcheck")
	d := decide(newClient(t, agentIdentity(t, other)))
	wantDecision(t, d, false, uninstall.ReasonCheckFailed)
	if !apierrors.IsForbidden(d.Err) {
		t.Errorf("decision error %v, want the Forbidden", d.Err)
	}

	// NotFound.
	if err := k8s.Delete(ctx, ds); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, decide(agent), true, uninstall.ReasonGone)

	// Another DaemonSet by that name.
	if err := k8s.Create(ctx, newAgentDaemonSet(ns)); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, decide(agent), false, uninstall.ReasonReplaced)
}
