// Package apiwatch keeps an agent's watches close to the API server through
// an outage and says when they fail.
//
// client-go's reflectors back off from 800 ms doubling to a 30 s cap,
// jittered to [30, 60) s, when a List or Watch fails: after a one-minute
// API server outage a change could wait up to a minute to reach the kernel,
// and nothing was logged meanwhile. Wrap puts a retry loop inside List and
// Watch instead: a call that fails for a reason that passes (the server
// unreachable, 5xx, 429) is retried every RetryMin-RetryMax (jittered, so
// many nodes do not retry in step) until it works or its context ends, so
// the reflector never sees the failure and never backs off. Refusals that
// will not pass by themselves (401, 403, 404, 410 and other 4xx) go to the
// reflector as before, which backs off and relists.
//
// Tracker records which watches are failing: a log line when one starts
// failing and when it works again, a gauge, and Healthy for a readiness
// check. The kernel is never touched here: the agent keeps what it
// programmed while it cannot see the API server.
package apiwatch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// ResourceOf names the resource of an informer's example object for logs
// and metrics: its Go type name, e.g. VirtualService.
func ResourceOf(obj runtime.Object) string {
	return ResourceOfDescription(reflect.TypeOf(obj).String())
}

// ResourceOfDescription is ResourceOf for a reflector's type description
// ("*v1alpha1.VirtualService").
func ResourceOfDescription(d string) string {
	return d[strings.LastIndex(d, ".")+1:]
}

// Retry interval bounds of a failing List or Watch.
var (
	RetryMin = 1 * time.Second
	RetryMax = 2 * time.Second
)

// Grace is how long a resource may be without a working watch before it
// counts as failing: a watch the server ends is reopened within
// milliseconds, while a client-side retry of an unreachable server (the
// REST client's own) can hold a call for many seconds before it returns.
var Grace = 3 * time.Second

// Tracker records the state of the watches of one process.
type Tracker struct {
	log     logr.Logger
	failing *prometheus.GaugeVec
	errors  *prometheus.CounterVec
	now     func() time.Time

	mu       sync.Mutex
	since    map[string]time.Time // resource → without a working watch since
	reported map[string]bool      // logged and counted as failing
}

// NewTracker returns a tracker whose metrics are registered with reg (nil:
// not registered).
func NewTracker(log logr.Logger, reg prometheus.Registerer) *Tracker {
	t := &Tracker{
		log: log, now: time.Now, since: map[string]time.Time{}, reported: map[string]bool{},
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "api_watch_failing",
			Help: "1 while the List or Watch of a resource fails (the kernel is kept as it is meanwhile).",
		}, []string{"resource"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubelvs", Name: "api_watch_errors_total",
			Help: "Failed Lists and Watches, by resource.",
		}, []string{"resource"}),
	}
	if reg != nil {
		reg.MustRegister(t.failing, t.errors)
	}
	return t
}

// Failed records a failed List or Watch of resource.
func (t *Tracker) Failed(resource string, err error) {
	t.errors.WithLabelValues(resource).Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.since[resource]; !ok {
		t.since[resource] = t.now()
	}
	t.report(resource, err)
}

// ended records that the watch of resource ended: if no List or Watch
// works again within Grace, it is reported as failing.
func (t *Tracker) ended(resource string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.since[resource]; ok {
		return
	}
	since := t.now()
	t.since[resource] = since
	time.AfterFunc(Grace, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if s, ok := t.since[resource]; ok && s.Equal(since) {
			t.report(resource, fmt.Errorf("no working watch for %s: the API server does not answer", Grace))
		}
	})
}

// report logs and counts resource as failing, once; mu is held.
func (t *Tracker) report(resource string, err error) {
	if t.reported[resource] {
		return
	}
	t.reported[resource] = true
	t.failing.WithLabelValues(resource).Set(1)
	t.log.Error(err, "cannot list or watch; the kernel is kept as it is and the watch is retried", "resource", resource)
}

// Worked records a List or Watch of resource that worked.
func (t *Tracker) Worked(resource string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	since, ok := t.since[resource]
	if !ok {
		return
	}
	delete(t.since, resource)
	if t.reported[resource] {
		delete(t.reported, resource)
		t.failing.WithLabelValues(resource).Set(0)
		t.log.Info("list and watch work again", "resource", resource, "after", t.now().Sub(since).Round(time.Millisecond).String())
	}
}

// Healthy returns an error naming the watches that fail, for a readiness
// check.
func (t *Tracker) Healthy() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.reported) == 0 {
		return nil
	}
	names := make([]string, 0, len(t.reported))
	oldest := t.now()
	for r := range t.reported {
		names = append(names, r)
		if s := t.since[r]; s.Before(oldest) {
			oldest = s
		}
	}
	sort.Strings(names)
	return &FailingError{Resources: names, For: t.now().Sub(oldest)}
}

// FailingError tells which watches fail, and for how long the oldest has.
type FailingError struct {
	Resources []string
	For       time.Duration
}

func (e *FailingError) Error() string {
	return "watches failing for " + e.For.Round(time.Second).String() + ": " + strings.Join(e.Resources, ", ")
}

// Wrap returns lw with its List and Watch retried in place while they fail
// for a reason that passes.
func (t *Tracker) Wrap(lw toolscache.ListerWatcher, resource string) toolscache.ListerWatcher {
	inner := toolscache.ToListerWatcherWithContext(lw)
	out := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := retry(ctx, t, resource, func() (runtime.Object, error) { return inner.ListWithContext(ctx, o) })
			if err == nil {
				t.Worked(resource)
			}
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := retry(ctx, t, resource, func() (watch.Interface, error) { return inner.WatchWithContext(ctx, o) })
			if err != nil {
				return nil, err
			}
			// A watch works once it delivers an event or stays open:
			// the REST client answers an unreachable server with an
			// empty watch that ends at once.
			return observe(w, func() { t.Worked(resource) }, func() { t.ended(resource) }), nil
		},
	}
	if l, ok := lw.(*toolscache.ListWatch); ok {
		out.DisableChunking = l.DisableChunking
	}
	return out
}

func retry[T any](ctx context.Context, t *Tracker, resource string, call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if err == nil {
			return v, nil
		}
		if !Passes(err) || ctx.Err() != nil {
			return v, err // the reflector handles it (the agent's watch error handler records it)
		}
		t.Failed(resource, err)
		d := RetryMin + rand.N(RetryMax-RetryMin+1)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(d):
		}
	}
}

// Passes reports whether a List or Watch error is worth retrying at once:
// the API server unreachable or overloaded, rather than a refusal that
// retrying will not change (401, 403, 404, 410 and other 4xx but 429).
func Passes(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 0 || code == 429 || code >= 500
	}
	return true // transport errors: refused, reset, EOF, timeouts
}

// observed forwards a watch's events; it calls worked on the first event
// or once the watch has been open for Grace, and ended when the server ends
// it (not when its consumer stops it).
type observed struct {
	watch.Interface
	ch   chan watch.Event
	stop chan struct{}
	once sync.Once
}

func observe(w watch.Interface, worked, ended func()) watch.Interface {
	o := &observed{Interface: w, ch: make(chan watch.Event), stop: make(chan struct{})}
	var onceWorked sync.Once
	open := time.AfterFunc(Grace, func() { onceWorked.Do(worked) })
	go func() {
		defer close(o.ch)
		defer open.Stop()
		for e := range w.ResultChan() {
			onceWorked.Do(worked)
			select {
			case o.ch <- e:
			case <-o.stop:
				return
			}
		}
		select {
		case <-o.stop:
		default:
			ended()
		}
	}()
	return o
}

func (o *observed) ResultChan() <-chan watch.Event { return o.ch }

func (o *observed) Stop() {
	o.once.Do(func() { close(o.stop) })
	o.Interface.Stop()
}
