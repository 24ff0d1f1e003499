package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

// observer watches the VirtualServices (one watch of its own, whose events
// are counted and taken out of the figures) and tells when a condition on
// one of them first holds.
type observer struct {
	nodes int

	mu     sync.Mutex
	latest map[types.NamespacedName]*lvsv1.VirtualService
	last   time.Time // of the last event
	events int64
	wait   *waiter
}

type waiter struct {
	key  types.NamespacedName
	cond func(*lvsv1.VirtualService) bool
	done chan time.Time
}

func startObserver(ctx context.Context, cfg *rest.Config, nodes int) (*observer, error) {
	o := &observer{nodes: nodes, latest: map[types.NamespacedName]*lvsv1.VirtualService{}, last: time.Now()}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            roles.Scheme(),
		DefaultNamespaces: map[string]cache.Config{namespace: {}},
		ByObject:          map[client.Object]cache.ByObject{&lvsv1.VirtualService{}: {}},
	})
	if err != nil {
		return nil, err
	}
	inf, err := c.GetInformer(ctx, &lvsv1.VirtualService{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.seen(obj) },
		UpdateFunc: func(_, obj any) { o.seen(obj) },
	}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("observer: cache not synced")
	}
	return o, nil
}

func (o *observer) seen(obj any) {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return
	}
	now := time.Now()
	key := types.NamespacedName{Namespace: vs.Namespace, Name: vs.Name}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.latest[key] = vs
	o.last = now
	o.events++
	if w := o.wait; w != nil && w.key == key && w.cond(vs) {
		o.wait = nil
		w.done <- now
	}
}

// expect arms a waiter on key; cond is also tried on what is seen already.
func (o *observer) expect(key types.NamespacedName, cond func(*lvsv1.VirtualService) bool) <-chan time.Time {
	w := &waiter{key: key, cond: cond, done: make(chan time.Time, 1)}
	o.mu.Lock()
	defer o.mu.Unlock()
	if vs := o.latest[key]; vs != nil && cond(vs) {
		w.done <- time.Now()
		return w.done
	}
	o.wait = w
	return w.done
}

func (o *observer) cancel() {
	o.mu.Lock()
	o.wait = nil
	o.mu.Unlock()
}

func (o *observer) get(key types.NamespacedName) *lvsv1.VirtualService {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest[key]
}

// counts returns the events seen so far and how long ago the last one was.
func (o *observer) counts() (int64, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events, time.Since(o.last)
}

// progress counts the VirtualServices programmed on all nodes, and the
// node entries at their current generation.
func (o *observer) progress() (done, entries int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, vs := range o.latest {
		if programmedOnAll(vs, o.nodes, -1) {
			done++
		}
		for _, n := range vs.Status.Nodes {
			if n.ObservedGeneration == vs.Generation && n.Programmed {
				entries++
			}
		}
	}
	return done, entries
}

// programmedOnAll: the controller's Programmed=True for the current
// generation, with all nodes' entries programmed at it, and (total >= 0)
// each reporting that many backends.
func programmedOnAll(vs *lvsv1.VirtualService, nodes int, total int32) bool {
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
	if c == nil || c.Status != "True" || c.ObservedGeneration != vs.Generation || len(vs.Status.Nodes) != nodes {
		return false
	}
	for _, n := range vs.Status.Nodes {
		if n.ObservedGeneration != vs.Generation || !n.Programmed || n.Message != "" || (total >= 0 && n.Backends.Total != total) {
			return false
		}
	}
	return true
}

// roleErrors counts the errors the roles logged; the first are printed.
var roleErrors atomic.Int64

const printedErrors = 20

type errorSink struct{ name string }

func newErrorLogger() logr.Logger { return logr.New(errorSink{}) }

func (errorSink) Init(logr.RuntimeInfo)            {}
func (errorSink) Enabled(int) bool                 { return false }
func (errorSink) Info(int, string, ...any)         {}
func (s errorSink) WithValues(...any) logr.LogSink { return s }
func (s errorSink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "." + name
	}
	return errorSink{name: name}
}

func (s errorSink) Error(err error, msg string, kv ...any) {
	n := roleErrors.Add(1)
	if n <= printedErrors {
		fmt.Fprintf(os.Stderr, "role error (%s): %s: %v %v\n", s.name, msg, err, kv)
	}
	if n == printedErrors {
		fmt.Fprintln(os.Stderr, "role error: further errors are only counted")
	}
}
