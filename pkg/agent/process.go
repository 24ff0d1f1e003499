package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/health"
)

// slowSync is how long a sync may take before the agent logs it.
const slowSync = time.Second

// processNext syncs one VirtualService queued in lane (a.queue or
// a.changes); false when the lane is shut.
func (a *Agent) processNext(ctx context.Context, lane workqueue.TypedRateLimitingInterface[types.NamespacedName]) bool {
	key, shutdown := lane.Get()
	if shutdown {
		return false
	}
	defer lane.Done(key)
	t0 := time.Now()
	unlock := a.lockKey(key)
	locked := time.Now()
	err := a.syncOne(ctx, key, lane == a.changes)
	unlock()
	if d := time.Since(t0); d > slowSync {
		// What a user sees as a change that took long to apply: which
		// part of the agent it waited for.
		ctrl.LoggerFrom(ctx).Info("slow sync", "virtualservice", key, "change", lane == a.changes,
			"took", d.Round(time.Millisecond), "keyLockWait", locked.Sub(t0).Round(time.Millisecond))
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "sync failed; retrying with backoff", "virtualservice", key)
		lane.AddRateLimited(key)
		return true
	}
	lane.Forget(key)
	return true
}

// syncOne brings one VirtualService's kernel objects, health targets and
// status entry up to date. An error requeues it with backoff; other
// VirtualServices are not held up.
// change: it came through the changes lane (admit).
func (a *Agent) syncOne(ctx context.Context, key types.NamespacedName, change bool) error {
	group := key.Namespace + "/" + key.Name
	// The event clock stops when the kernel has acknowledged this sync.
	evt, timed := a.lat.take(key)
	kernelDone := func(err error) {
		if timed {
			a.lat.done(key, evt, err == nil)
		}
	}
	token := a.wm.start(key)
	// Before the reads: a full sync that read earlier does not undo this
	// sync (desired.Group.Read). The key lock orders this VirtualService's
	// own syncs.
	read := a.syncer.ReadToken()
	var vs lvsv1.VirtualService
	if err := a.client.Get(ctx, key, &vs); err != nil {
		if !apierrors.IsNotFound(err) {
			kernelDone(err)
			return err
		}
		defer a.synced(key, token)
		if a.reports != nil {
			a.reports.removed(key)
		}
		if a.health != nil {
			a.health.SetTargets(group, health.Config{}, nil)
		}
		a.forget(key)
		a.announce.remove(key)
		a.programmed.Delete(key)
		out := a.admit(key, change)
		_, err := a.syncer.SyncGroup(ctx, desired.Group{Name: key, Read: read})
		out()
		kernelDone(err)
		if err == nil && a.syncer.Keeping() {
			// It may have been on hold since a restart, with its kernel
			// objects kept unclaimed: a full sync releases what nothing
			// claims any more, at once rather than at the next resync.
			err = a.fullSync(ctx, false)
		}
		return err
	}
	node, err := a.node(ctx)
	if err == nil {
		var g desired.Group
		if g, err = a.build(ctx, &vs, node); err == nil {
			g.Read = read
			defer a.synced(key, token)
			return a.apply(ctx, key, &vs, g, node, change, kernelDone)
		}
		// Its inputs did not load: the kernel keeps what it has, and the
		// report says so (the retry corrects it).
		if a.reports != nil {
			a.reports.outcome(key, vs.Generation, true, []string{err.Error()})
			a.synced(key, token)
		}
	}
	kernelDone(err)
	return err
}

// synced records that the sync of key that began with token finished
// (the watermark moves past the events it saw) and has the report
// written soon: the controller waits for it.
func (a *Agent) synced(key types.NamespacedName, token uint64) {
	a.wm.handled(key, token)
	if a.reports != nil {
		a.reports.poke()
	}
}

// apply syncs g, tells kernelDone, then updates health targets and status.
func (a *Agent) apply(ctx context.Context, key types.NamespacedName, vs *lvsv1.VirtualService, g desired.Group, node desired.Node, change bool, kernelDone func(error)) error {
	group := key.Namespace + "/" + key.Name
	if !vs.DeletionTimestamp.IsZero() {
		g = desired.Group{Name: key, Read: g.Read}
	}
	t0 := time.Now()
	out := a.admit(key, change)
	admitted := time.Now()
	res, syncErr := a.syncer.SyncGroup(ctx, g)
	out()
	if d := time.Since(t0); d > slowSync {
		ctrl.LoggerFrom(ctx).Info("slow kernel sync", "virtualservice", key, "change", change,
			"took", d.Round(time.Millisecond), "admitWait", admitted.Sub(t0).Round(time.Millisecond),
			"syncerLockWait", res.LockWait.Round(time.Millisecond), "behind", res.Behind, "behindHeld", res.BehindHeld.Round(time.Millisecond))
	}
	kernelDone(syncErr)
	a.programmed.Store(key, struct{}{})
	a.announce.set(key, g, node.Labels, syncErr)
	if a.health != nil {
		cfg := health.ConfigFrom(vs.Spec.HealthCheck)
		targets := make([]health.Target, len(g.HealthTargets))
		for i, t := range g.HealthTargets {
			targets[i] = health.Target{Group: group, Address: t.Address, Port: t.Port}
		}
		a.health.SetTargets(group, cfg, targets)
	}
	if a.reports != nil {
		var problems []string
		if syncErr != nil {
			problems = append(problems, syncErr.Error())
		}
		if g.Selected || g.NotAllowed || g.Hold {
			problems = append(problems, g.Problems...)
		}
		a.reports.outcome(key, vs.Generation, g.Selected, problems)
	} else if a.opts.ReportStatus {
		if err := a.report(ctx, vs, g, res.Draining, syncErr); err != nil {
			syncErr = errors.Join(syncErr, err)
		}
	}
	return syncErr
}

// report writes this node's entry of status.nodes with server-side apply:
// one field manager per node, so agents never overwrite one another. It
// writes only when the entry changed.
func (a *Agent) report(ctx context.Context, vs *lvsv1.VirtualService, g desired.Group, draining int, syncErr error) error {
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	var entries []any
	var st lvsv1.NodeStatus
	if g.Selected {
		var msgs []string
		if syncErr != nil {
			msgs = append(msgs, syncErr.Error())
		}
		msgs = append(msgs, g.Problems...)
		counts := lvsv1.BackendCounts{Total: g.Counts.Total, Ready: g.Counts.Ready, Draining: g.Counts.Draining + int32(draining)}
		st = lvsv1.NodeStatus{
			Node: a.opts.NodeName, ObservedGeneration: vs.Generation, Programmed: len(msgs) == 0,
			Message: truncate(strings.Join(msgs, "; "), 1024), Backends: counts,
			Announced: a.announce.statusOf(key),
		}
		entry := map[string]any{
			"node": st.Node, "observedGeneration": st.ObservedGeneration, "programmed": st.Programmed,
			"message":  st.Message,
			"backends": map[string]any{"total": int64(counts.Total), "ready": int64(counts.Ready), "draining": int64(counts.Draining)},
		}
		if len(st.Announced) > 0 {
			an := make([]any, len(st.Announced))
			for i, x := range st.Announced {
				an[i] = map[string]any{"address": x.Address, "mode": string(x.Mode)}
			}
			entry["announced"] = an
		}
		entries = []any{entry}
	}
	a.mu.Lock()
	last, had := a.reported[key]
	a.mu.Unlock()
	if had && sameNodeStatus(last, st) && a.mine(vs, st) {
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": lvsv1.GroupVersion.String(), "kind": "VirtualService",
		"metadata": map[string]any{"name": vs.Name, "namespace": vs.Namespace},
		"status":   map[string]any{"nodes": entries},
	}}
	if entries == nil {
		u.Object["status"] = map[string]any{"nodes": []any{}}
	}
	// Record the entry before writing it: the watch event of this very
	// write can reach needsSync before Apply returns, and must be
	// recognized as ours rather than queue another sync.
	a.mu.Lock()
	a.reported[key] = st
	a.mu.Unlock()
	err := a.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner("kubelvs-agent/"+a.opts.NodeName), client.ForceOwnership)
	if err != nil {
		a.mu.Lock()
		if had {
			a.reported[key] = last
		} else {
			delete(a.reported, key)
		}
		a.mu.Unlock()
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("report status: %w", err)
	}
	return nil
}

// mine reports whether vs's status (as cached) already holds entry st for
// this node, so that an entry lost to someone else's write is rewritten.
func (a *Agent) mine(vs *lvsv1.VirtualService, st lvsv1.NodeStatus) bool {
	for _, n := range vs.Status.Nodes {
		if n.Node == a.opts.NodeName {
			return sameNodeStatus(n, st)
		}
	}
	return st.Node == ""
}

// sameNodeStatus compares two entries of status.nodes.
func sameNodeStatus(a, b lvsv1.NodeStatus) bool {
	return a.Node == b.Node && a.ObservedGeneration == b.ObservedGeneration && a.Programmed == b.Programmed &&
		a.Message == b.Message && a.Backends == b.Backends && slices.Equal(a.Announced, b.Announced)
}

func (a *Agent) forget(key types.NamespacedName) {
	a.mu.Lock()
	delete(a.reported, key)
	a.mu.Unlock()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
