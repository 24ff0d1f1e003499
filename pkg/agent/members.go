package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LeaseLabel marks the agents' heartbeat Leases, so that agents watch only
// those.
const LeaseLabel = "lvs.kubelvs.io/agent-heartbeat"

// LeasePrefix starts the name of every agent's heartbeat Lease.
const LeasePrefix = "kubelvs-agent-"

// LeaseMembers is the Membership of layer-2 announcement. Every agent
// renews a Lease of its own (kubelvs-agent-NODE, in its namespace) every
// third of the lease duration while some AddressPool asks for layer 2, and
// watches the others'. A node is live while the renewals of its Lease keep
// coming: its Lease changed less than a lease duration ago by this agent's
// own clock (so clocks need not agree). An agent whose own renewal has not
// succeeded for a lease duration counts itself dead and stops answering,
// which is about when the others stop counting it. On a graceful stop the
// agent deletes its Lease, so its addresses move at once.
type LeaseMembers struct {
	c         client.Client
	r         client.Reader
	namespace string
	node      string
	duration  time.Duration
	clock     clock.Clock
	active    func() bool
	onChange  func()

	mu        sync.Mutex
	seen      map[string]leaseSeen
	labels    map[string]map[string]string
	lastRenew time.Time
	lastLive  string
	lease     *coordinationv1.Lease // as last written
}

type leaseSeen struct {
	renew   time.Time
	expires time.Time
}

// NewLeaseMembers returns the membership of this node's agent. c writes
// Leases and r reads this node's from the API server when the last one
// written is stale; the Leases and Nodes are watched through the informers
// Start finds in the cache. active says whether the agent must keep its heartbeat (some
// pool asks for layer 2); onChange is called when the live nodes change.
func NewLeaseMembers(c client.Client, r client.Reader, namespace, node string, duration time.Duration, clk clock.Clock, active func() bool, onChange func()) *LeaseMembers {
	return &LeaseMembers{
		c: c, r: r, namespace: namespace, node: node, duration: duration, clock: clk, active: active, onChange: onChange,
		seen: map[string]leaseSeen{}, labels: map[string]map[string]string{},
	}
}

// Live implements Membership.
func (m *LeaseMembers) Live() (map[string]map[string]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	live := map[string]map[string]string{}
	for n, s := range m.seen {
		if now.Before(s.expires) {
			live[n] = m.labels[n]
		}
	}
	self := !m.lastRenew.IsZero() && now.Before(m.lastRenew.Add(m.duration))
	return live, self
}

// Start watches Leases and Nodes through the cache, renews this node's
// Lease, and deletes it when ctx ends.
func (m *LeaseMembers) Start(ctx context.Context, c cache.Cache) error {
	log := ctrl.LoggerFrom(ctx).WithName("members")
	li, err := c.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return fmt.Errorf("watch Leases: %w", err)
	}
	if _, err := li.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.leaseChanged(obj, false) },
		UpdateFunc: func(_, obj any) { m.leaseChanged(obj, false) },
		DeleteFunc: func(obj any) { m.leaseChanged(finalState(obj), true) },
	}); err != nil {
		return err
	}
	ni, err := c.GetInformer(ctx, &corev1.Node{})
	if err != nil {
		return fmt.Errorf("watch Nodes: %w", err)
	}
	if _, err := ni.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.nodeChanged(obj, false) },
		UpdateFunc: func(_, obj any) { m.nodeChanged(obj, false) },
		DeleteFunc: func(obj any) { m.nodeChanged(finalState(obj), true) },
	}); err != nil {
		return err
	}
	renew := time.NewTicker(m.duration / 3)
	defer renew.Stop()
	check := time.NewTicker(m.duration / 4)
	defer check.Stop()
	// A pool that starts asking for layer 2 starts the heartbeat within a
	// quarter of a second, not at the next renewal.
	wake := time.NewTicker(250 * time.Millisecond)
	defer wake.Stop()
	active := m.active()
	m.heartbeat(ctx, log)
	for {
		select {
		case <-ctx.Done():
			m.release(log)
			return nil
		case <-renew.C:
			m.heartbeat(ctx, log)
		case <-check.C:
			m.check()
		case <-wake.C:
			if now := m.active(); now != active {
				active = now
				m.heartbeat(ctx, log)
			}
		}
	}
}

func (m *LeaseMembers) leaseChanged(obj any, deleted bool) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || l.Spec.HolderIdentity == nil {
		return
	}
	node := *l.Spec.HolderIdentity
	if l.Name != LeasePrefix+node {
		return // not an agent's heartbeat
	}
	m.mu.Lock()
	now := m.clock.Now()
	if deleted {
		delete(m.seen, node)
	} else {
		var renew time.Time
		if l.Spec.RenewTime != nil {
			renew = l.Spec.RenewTime.Time
		}
		d := m.duration
		if l.Spec.LeaseDurationSeconds != nil {
			d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		old, had := m.seen[node]
		switch {
		case had && old.renew.Equal(renew):
			// No renewal: its expiry stands.
		case !had && renew.Add(d).Before(now):
			// First seen, and already stale by its own time: a node that
			// stopped renewing long ago is not counted alive for one more
			// lease duration.
			m.seen[node] = leaseSeen{renew: renew, expires: now}
		default:
			m.seen[node] = leaseSeen{renew: renew, expires: now.Add(d)}
		}
	}
	m.mu.Unlock()
	m.check()
}

func (m *LeaseMembers) nodeChanged(obj any, deleted bool) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	m.mu.Lock()
	old, had := m.labels[n.Name]
	if deleted {
		delete(m.labels, n.Name)
	} else {
		m.labels[n.Name] = n.Labels
	}
	changed := deleted || !had || !maps.Equal(old, n.Labels)
	m.mu.Unlock()
	if changed {
		m.notify()
	}
}

// check calls onChange when the live nodes (or this node's own liveness)
// changed since the last check.
func (m *LeaseMembers) check() {
	live, self := m.Live()
	key := fmt.Sprint(self, sortedKeys(live))
	m.mu.Lock()
	changed := key != m.lastLive
	m.lastLive = key
	m.mu.Unlock()
	if changed {
		m.notify()
	}
}

func (m *LeaseMembers) notify() {
	if m.onChange != nil {
		m.onChange()
	}
}

func sortedKeys(m map[string]map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// heartbeat renews this node's Lease, creating it if need be.
func (m *LeaseMembers) heartbeat(ctx context.Context, log interface {
	Error(error, string, ...any)
}) {
	if !m.active() {
		return
	}
	now := m.clock.Now()
	key := client.ObjectKey{Namespace: m.namespace, Name: LeasePrefix + m.node}
	err := m.renew(ctx, key, now)
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
		// Someone else wrote it (or deleted it): read it and retry once.
		m.lease = nil
		err = m.renew(ctx, key, now)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Error(err, "renewing this agent's heartbeat Lease failed; after a lease duration without one it stops answering ARP/NDP", "lease", key)
		}
		return
	}
	m.mu.Lock()
	m.lastRenew = now
	m.mu.Unlock()
}

func (m *LeaseMembers) renew(ctx context.Context, key client.ObjectKey, now time.Time) error {
	l := m.lease
	if l == nil {
		l = &coordinationv1.Lease{}
		err := m.r.Get(ctx, key, l)
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{LeaseLabel: "true"}},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(m.node),
					LeaseDurationSeconds: ptr.To(int32(m.duration / time.Second)),
					AcquireTime:          &metav1.MicroTime{Time: now},
					RenewTime:            &metav1.MicroTime{Time: now},
				},
			}
			if err := m.c.Create(ctx, l); err != nil {
				return err
			}
			m.lease = l
			return nil
		}
		if err != nil {
			return err
		}
	}
	l = l.DeepCopy()
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[LeaseLabel] = "true"
	l.Spec.HolderIdentity = ptr.To(m.node)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(m.duration / time.Second))
	l.Spec.RenewTime = &metav1.MicroTime{Time: now}
	if err := m.c.Update(ctx, l); err != nil {
		return err
	}
	m.lease = l
	return nil
}

// release deletes this node's Lease, so that the others take its
// addresses over at once.
func (m *LeaseMembers) release(log interface{ Info(string, ...any) }) {
	m.mu.Lock()
	renewed := !m.lastRenew.IsZero()
	m.lastRenew = time.Time{}
	m.mu.Unlock()
	m.lease = nil
	if !renewed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: m.namespace, Name: LeasePrefix + m.node}}
	if err := m.c.Delete(ctx, l); err != nil && !apierrors.IsNotFound(err) {
		log.Info("could not delete this agent's heartbeat Lease; the others take its addresses over when it expires", "error", err.Error())
	}
}
