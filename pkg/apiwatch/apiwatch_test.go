package apiwatch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// outage is a ListerWatcher whose server is down until up is closed.
type outage struct {
	mu    sync.Mutex
	down  bool
	calls int
	w     *watch.FakeWatcher
}

func (o *outage) call() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	if o.down {
		return &netError{syscall.ECONNREFUSED}
	}
	return nil
}

type netError struct{ err error }

func (e *netError) Error() string { return "dial tcp 10.96.0.1:443: " + e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

func (o *outage) lw() *toolscache.ListWatch {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			if err := o.call(); err != nil {
				return nil, err
			}
			return &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			if err := o.call(); err != nil {
				return nil, err
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			o.w = watch.NewFake()
			return o.w, nil
		},
	}
}

type logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logs) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newTracker() (*Tracker, *logs) {
	l := &logs{}
	log := funcr.New(func(_, args string) { l.mu.Lock(); l.b.WriteString(args + "\n"); l.mu.Unlock() }, funcr.Options{})
	return NewTracker(log, nil), l
}

func fast(t *testing.T) {
	t.Helper()
	lo, hi := RetryMin, RetryMax
	RetryMin, RetryMax = time.Millisecond, 2*time.Millisecond
	t.Cleanup(func() { RetryMin, RetryMax = lo, hi })
}

// Through an outage the List is retried in place: the caller (a reflector)
// sees no error, so it never backs off; the tracker says it failed, is
// unhealthy meanwhile, and says when it works again.
func TestListRetriedThroughAnOutage(t *testing.T) {
	fast(t)
	tr, l := newTracker()
	o := &outage{down: true}
	lw := tr.Wrap(o.lw(), "configmaps")
	done := make(chan error, 1)
	go func() {
		_, err := toolscache.ToListerWatcherWithContext(lw).ListWithContext(context.Background(), metav1.ListOptions{})
		done <- err
	}()
	for {
		o.mu.Lock()
		calls := o.calls
		o.mu.Unlock()
		if calls >= 5 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var fe *FailingError
	if err := tr.Healthy(); !errors.As(err, &fe) || fe.Resources[0] != "configmaps" {
		t.Fatalf("Healthy during the outage: %v", err)
	}
	o.mu.Lock()
	o.down = false
	o.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatalf("List returned %v; want it retried until it worked", err)
	}
	if err := tr.Healthy(); err != nil {
		t.Fatalf("Healthy after: %v", err)
	}
	out := l.String()
	if strings.Count(out, "cannot list or watch") != 1 || strings.Count(out, "work again") != 1 || !strings.Contains(out, "connection refused") {
		t.Fatalf("want one line when it fails (with the error) and one when it works again:\n%s", out)
	}
}

// A refusal that retrying will not change goes to the reflector at once.
func TestRefusalsPassThrough(t *testing.T) {
	fast(t)
	tr, _ := newTracker()
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "", errors.New("RBAC"))
	calls := 0
	lw := tr.Wrap(&toolscache.ListWatch{ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
		calls++
		return nil, forbidden
	}}, "configmaps")
	if _, err := toolscache.ToListerWatcherWithContext(lw).ListWithContext(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) || calls != 1 {
		t.Fatalf("%d calls, %v", calls, err)
	}
	for err, want := range map[error]bool{
		forbidden: false, apierrors.NewUnauthorized("x"): false, apierrors.NewResourceExpired("too old"): false,
		apierrors.NewServiceUnavailable("x"): true, apierrors.NewTooManyRequests("x", 1): true,
		apierrors.NewInternalError(errors.New("etcd")): true, &netError{syscall.ECONNRESET}: true, context.Canceled: false,
	} {
		if Passes(err) != want {
			t.Errorf("Passes(%v) = %t", err, !want)
		}
	}
}

// A reflector over the wrapped ListerWatcher never reports an error for an
// outage (so it never backs off) and delivers the first event after it at
// once.
func TestReflectorDoesNotBackOff(t *testing.T) {
	fast(t)
	tr, _ := newTracker()
	o := &outage{}
	store := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	// What the reflector is handed: any error here would make it back off.
	wrapped := toolscache.ToListerWatcherWithContext(tr.Wrap(o.lw(), "configmaps"))
	var handlerCalls int
	var hmu sync.Mutex
	seen := func(err error) error {
		if err != nil {
			hmu.Lock()
			handlerCalls++
			hmu.Unlock()
		}
		return err
	}
	r := toolscache.NewReflector(&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			v, err := wrapped.ListWithContext(ctx, o)
			return v, seen(err)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			v, err := wrapped.WatchWithContext(ctx, o)
			return v, seen(err)
		},
	}, &corev1.ConfigMap{}, store, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.RunWithContext(ctx)
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return o.w != nil })

	// The server goes away: the watch ends and cannot be reopened.
	o.mu.Lock()
	o.down = true
	o.w.Stop()
	o.w = nil
	calls := o.calls
	o.mu.Unlock()
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return o.calls >= calls+20 })
	o.mu.Lock()
	o.down = false
	o.mu.Unlock()
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return o.w != nil })
	o.mu.Lock()
	o.w.Add(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after", Namespace: "ns", ResourceVersion: "2"}})
	o.mu.Unlock()
	waitFor(t, func() bool { _, ok, _ := store.GetByKey("ns/after"); return ok })
	hmu.Lock()
	defer hmu.Unlock()
	if handlerCalls != 0 {
		t.Fatalf("the reflector saw %d errors (and backed off)", handlerCalls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
