package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// When the node's labels change and the List fails, the agent says so and
// tries again: it must not silently leave the VirtualServices that now
// select (or no longer select) the node as they were.
func TestQueueAllRetriesAFailedList(t *testing.T) {
	defer func(d time.Duration) { queueAllRetry = d }(queueAllRetry)
	queueAllRetry = time.Millisecond
	scheme := runtime.NewScheme()
	if err := lvsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	fails := 2
	var mu sync.Mutex
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(&lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}}).
		WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
			mu.Lock()
			defer mu.Unlock()
			if fails > 0 {
				fails--
				return errors.New("the cache is not started")
			}
			return c.List(ctx, l, o...)
		}}).Build()
	var logs strings.Builder
	var logMu sync.Mutex
	log := funcr.New(func(prefix, args string) { logMu.Lock(); logs.WriteString(args + "\n"); logMu.Unlock() }, funcr.Options{})
	a := &Agent{client: c, lat: newEventLatency(nil, clock.RealClock{}),
		queue: newLane("q"), changes: newLane("c")}
	defer a.queue.ShutDown()
	ctx, cancel := context.WithCancel(ctrl.LoggerInto(context.Background(), log))
	defer cancel()

	a.queueAll(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for a.queue.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the VirtualService was never queued after the List failed")
		}
		time.Sleep(time.Millisecond)
	}
	if key, _ := a.queue.Get(); key != (types.NamespacedName{Namespace: "ns", Name: "web"}) {
		t.Fatalf("queued %v", key)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logs.String(), "cannot list VirtualServices"); n != 2 {
		t.Fatalf("%d log lines about the failed List, want 2:\n%s", n, logs.String())
	}
}
