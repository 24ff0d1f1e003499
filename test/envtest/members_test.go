package envtest

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

// Layer-2 membership on a real API server: three agents' heartbeat Leases;
// a graceful stop deletes the Lease (the others see it go at once); an
// agent that stops renewing drops out after a lease duration; an agent
// that cannot renew counts itself dead.
func TestLeaseMembers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "members-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"m1", "m2", "m3"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"zone": n}}}
		if err := k8s.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	}
	type member struct {
		m      *agent.LeaseMembers
		active atomic.Bool
		stop   context.CancelFunc
		done   chan struct{}
	}
	start := func(node string) *member {
		c, err := cache.New(cfg, cache.Options{Scheme: roles.Scheme(), ByObject: map[client.Object]cache.ByObject{
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{ns.Name: {}},
				Label: labels.SelectorFromSet(labels.Set{agent.LeaseLabel: "true"})},
		}})
		if err != nil {
			t.Fatal(err)
		}
		mctx, stop := context.WithCancel(ctx)
		mb := &member{stop: stop, done: make(chan struct{})}
		mb.active.Store(true)
		mb.m = agent.NewLeaseMembers(k8s, k8s, ns.Name, node, 3*time.Second, clock.RealClock{}, mb.active.Load, nil)
		go func() { _ = c.Start(mctx) }()
		go func() { defer close(mb.done); _ = mb.m.Start(mctx, c) }()
		return mb
	}
	m1, m2, m3 := start("m1"), start("m2"), start("m3")
	defer func() { m1.stop(); m2.stop(); m3.stop() }()
	waitLive := func(what string, m *member, want []string, wantSelf bool) {
		t.Helper()
		var got []string
		var self bool
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			live, s := m.m.Live()
			got, self = got[:0], s
			for n := range live {
				got = append(got, n)
			}
			slices.Sort(got)
			if slices.Equal(got, want) && self == wantSelf {
				return
			}
		}
		t.Fatalf("%s: live %v self %t, want %v %t", what, got, self, want, wantSelf)
	}
	waitLive("all started", m1, []string{"m1", "m2", "m3"}, true)
	if live, _ := m1.m.Live(); fmt.Sprint(live["m2"]) != "map[zone:m2]" {
		t.Errorf("labels of m2: %v", live["m2"])
	}

	// Graceful stop: m3 deletes its Lease on the way out.
	m3.stop()
	<-m3.done
	t0 := time.Now()
	waitLive("m3 stopped", m1, []string{"m1", "m2"}, true)
	t.Logf("a graceful stop was seen after %v", time.Since(t0))
	var l coordinationv1.Lease
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: agent.LeasePrefix + "m3"}, &l); err == nil {
		t.Errorf("m3's Lease is still there after its graceful stop")
	}

	// m2 stops renewing (as a killed agent would): it drops out after its
	// lease duration.
	m2.active.Store(false)
	t0 = time.Now()
	waitLive("m2 silent", m1, []string{"m1"}, true)
	if d := time.Since(t0); d < time.Second {
		t.Errorf("m2 dropped out after %v, before its lease could expire", d)
	}
	t.Logf("a silent agent dropped out after %v (lease duration 3s)", time.Since(t0))

	// m1 cannot renew any more: it counts itself dead.
	m1.active.Store(false)
	waitLive("m1 cannot renew", m1, nil, false)
}
