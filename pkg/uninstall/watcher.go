package uninstall

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Metrics are the watcher's gauges.
type Metrics struct {
	observed prometheus.Gauge
	watching prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		observed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "uninstall_observed",
			Help: "1 once the agent has seen its own DaemonSet deleted: when it stops, it removes every kernel object kubelvs made on its node.",
		}),
		watching: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubelvs", Name: "uninstall_watching",
			Help: "1 while the agent watches its own DaemonSet (its pod's owner, listed once): 0 means an uninstall would go unseen and leave the kernel as it is.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.observed, m.watching)
	}
	return m
}

// Watcher finds the DaemonSet that owns the agent's pod and watches it,
// recording the positive signals of an uninstall (its deletion, its
// deletionTimestamp). An established watch keeps delivering after the
// agent's RBAC is deleted, and `helm uninstall` deletes the DaemonSet
// before the RBAC, and the pod (hence the agent's SIGTERM) only after the
// DaemonSet: the watch sees the deletion before the agent is told to stop.
type Watcher struct {
	cfg            *rest.Config
	namespace, pod string
	metrics        *Metrics
	scheme         *runtime.Scheme

	mu       sync.Mutex
	owner    *Owner
	ownerErr error
	seen     Observation
	positive chan struct{}
	once     sync.Once
}

// NewWatcher watches for the uninstall of the agent's pod namespace/pod. m
// may be nil.
func NewWatcher(cfg *rest.Config, namespace, pod string, m *Metrics) *Watcher {
	if m == nil {
		m = NewMetrics(nil)
	}
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = appsv1.AddToScheme(s)
	return &Watcher{cfg: cfg, namespace: namespace, pod: pod, metrics: m, scheme: s,
		ownerErr: errors.New("the agent's pod has not been read yet"), positive: make(chan struct{})}
}

// Run finds the owner (retrying errors until ctx ends) and watches it until
// ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("uninstall").WithValues("pod", w.namespace+"/"+w.pod)
	o := w.resolve(ctx, log)
	if o == nil {
		return
	}
	log = log.WithValues("daemonset", o.Namespace+"/"+o.Name, "uid", o.UID)
	if err := w.watch(ctx, log, *o); err != nil {
		log.Error(err, "cannot watch the agent's DaemonSet: an uninstall will be seen only by a last GET when the agent stops")
	}
}

// resolve reads the agent's pod until it can, and returns its controlling
// DaemonSet (nil: none, or ctx ended).
func (w *Watcher) resolve(ctx context.Context, log logr.Logger) *Owner {
	c, err := client.New(w.cfg, client.Options{Scheme: w.scheme})
	if err != nil {
		w.setOwner(nil, err)
		log.Error(err, "cannot read the agent's pod")
		return nil
	}
	delay := time.Second
	for {
		o, err := ownerOf(ctx, c, w.namespace, w.pod)
		w.setOwner(o, err)
		switch {
		case err == nil && o == nil:
			log.Info("the agent's pod has no controlling DaemonSet: the agent will leave the kernel as it is when it stops")
			return nil
		case err == nil:
			return o
		}
		log.Error(err, "cannot read the agent's pod to find its DaemonSet; retrying (until then, a stopping agent leaves the kernel as it is)", "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func ownerOf(ctx context.Context, c client.Reader, namespace, name string) (*Owner, error) {
	var p corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &p); err != nil {
		return nil, fmt.Errorf("get own pod %s/%s: %w", namespace, name, err)
	}
	ref := metav1.GetControllerOf(&p)
	if ref == nil || ref.Kind != "DaemonSet" || ref.APIVersion != appsv1.SchemeGroupVersion.String() {
		return nil, nil
	}
	return &Owner{Namespace: namespace, Name: ref.Name, UID: ref.UID}, nil
}

func (w *Watcher) setOwner(o *Owner, err error) {
	w.mu.Lock()
	w.owner, w.ownerErr = o, err
	w.mu.Unlock()
}

// watch runs an informer on the owner's name alone (a field selector on
// metadata.name, in its namespace) until ctx ends.
func (w *Watcher) watch(ctx context.Context, log logr.Logger, o Owner) error {
	c, err := cache.New(w.cfg, cache.Options{
		Scheme:            w.scheme,
		DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.DaemonSet{}: {Field: fields.OneTermEqualSelector("metadata.name", o.Name)},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
		DefaultWatchErrorHandler: func(ctx context.Context, r *toolscache.Reflector, err error) {
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				log.Error(err, "watching the agent's DaemonSet is refused; retrying")
				return
			}
			toolscache.DefaultWatchErrorHandler(ctx, r, err)
		},
	})
	if err != nil {
		return err
	}
	inf, err := c.GetInformer(ctx, &appsv1.DaemonSet{}, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.record(log, o, obj, false) },
		UpdateFunc: func(_, obj any) { w.record(log, o, obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				// A relist no longer lists it: gone, as a NotFound would say.
				obj = d.Obj
			}
			w.record(log, o, obj, true)
		},
	}); err != nil {
		return err
	}
	go func() {
		if c.WaitForCacheSync(ctx) {
			w.metrics.watching.Set(1)
			log.Info("watching the agent's DaemonSet: its deletion will make the agent remove what it made from the kernel when it stops")
		}
	}()
	defer w.metrics.watching.Set(0)
	return c.Start(ctx)
}

// record notes one event of the watched name.
func (w *Watcher) record(log logr.Logger, o Owner, obj any, deleted bool) {
	ds, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	w.mu.Lock()
	was := w.seen
	switch {
	case ds.GetUID() != o.UID:
		// One object at a time has a name: the last event of another
		// UID says whether a replacement exists now.
		w.seen.Replaced = !deleted
	case orphaning(ds):
		w.seen.Orphaning = true
	case deleted:
		w.seen.Deleted = true
	case ds.GetDeletionTimestamp() != nil:
		w.seen.Deleting = true
	}
	now := w.seen
	w.mu.Unlock()
	if now.Positive() {
		w.metrics.observed.Set(1)
	} else {
		w.metrics.observed.Set(0)
	}
	switch {
	case now == was:
	case now.Replaced && !was.Replaced:
		log.Info("another DaemonSet has the name of the agent's: its pods adopt the kernel as it is, so this agent will leave it as it is", "otherUID", ds.GetUID())
	case now.Orphaning && !was.Orphaning:
		log.Info("the agent's DaemonSet is deleted with orphan propagation: its pods stay (a new DaemonSet may adopt them), so the kernel will stay as it is")
	case now.Positive() && !was.Positive():
		log.Info("uninstall observed: the agent's DaemonSet is deleted; the agent will remove every kernel object kubelvs made when it stops",
			"deleted", now.Deleted, "deleting", now.Deleting)
		w.once.Do(func() { close(w.positive) })
	}
}

// Owner returns the DaemonSet that owns the agent's pod (nil: none, or not
// known; then err says why).
func (w *Watcher) Owner() (*Owner, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.owner, w.ownerErr
}

// Observation returns what the watch saw so far.
func (w *Watcher) Observation() Observation {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// Observed is closed when the watch first sees a positive signal (a later
// event may take it back: a replacement; read Observation).
func (w *Watcher) Observed() <-chan struct{} { return w.positive }

// Decide decides at stop, with the watch still running: on what the watch
// saw, or else on one GET of the owner through c. When that GET gives no
// answer to rely on, it waits up to grace for the watch, which may still be
// delivering the deletion. ctx bounds the GET.
func (w *Watcher) Decide(ctx context.Context, c client.Reader, grace time.Duration) Decision {
	owner, ownerErr := w.Owner()
	in := Inputs{Owner: owner, OwnerErr: ownerErr, Seen: w.Observation()}
	if owner != nil && !in.Seen.Positive() && !in.Seen.Orphaning && !in.Seen.Replaced {
		check := LastCheck(ctx, c, *owner)
		if check.Err != nil {
			t := time.NewTimer(grace)
			select {
			case <-w.Observed():
			case <-t.C:
			}
			t.Stop()
			in.Seen = w.Observation()
		}
		in.Check = &check
	}
	return Decide(in)
}
