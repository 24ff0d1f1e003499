// Package watchload measures what the agent's watches cost it at 10,000
// VirtualServices and 10,000 EndpointSlices (one per Service, 1,000 of
// them selected), with and without --endpointslice-selector: the events
// its handlers receive (kubelvs_watch_events_total), the slices it
// caches, and its Go heap. It runs against envtest's kube-apiserver, with
// no controller role (its caches would count in the heap), only when
// KUBELVS_WATCHLOAD=1:
//
//	KUBELVS_WATCHLOAD=1 KUBEBUILDER_ASSETS=$HOME/.cache/k8s-test-bins \
//	  go test ./test/watchload -run TestWatchLoad -v -timeout 30m
//
// KUBELVS_WATCHLOAD_PROGRAM=1 makes every VirtualService select the
// agent's node, so that the agent also programs them (into fake kernels,
// whose state then counts in the heap too); by default none selects it
// and the heap is the watches' and caches' alone.
package watchload

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

const (
	services  = 10_000
	selected  = 1_000
	endpoints = 10
	ns        = "watchload"
	nodeName  = "node-watchload"
	label     = "lvs.kubelvs.io/backend"
	selector  = label + "=true"
	workers   = 64
)

var cfg *rest.Config

func TestMain(m *testing.M) {
	if os.Getenv("KUBELVS_WATCHLOAD") == "" {
		fmt.Fprintln(os.Stderr, "watchload: set KUBELVS_WATCHLOAD=1 to run (minutes, 20,000 objects in envtest); skipping")
		os.Exit(0)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	ctrl.SetLogger(logr.Discard())
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// parallel runs f(i) for i in [0, n) on workers goroutines.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func slice(i int) *discoveryv1.EndpointSlice {
	l := map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}
	if i < selected {
		l[label] = "true"
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-abcde", i), Namespace: ns, Labels: l},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range endpoints {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+e, i/250, i%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", e)),
		})
	}
	return s
}

func virtualService(i int, nodeLabel string) *lvsv1.VirtualService {
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vs-%d", i), Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
		Addresses:    []lvsv1.IPAddress{lvsv1.IPAddress(fmt.Sprintf("10.96.%d.%d", i/250, i%250+1))},
		Ports:        []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))}},
		Scheduler:    lvsv1.SchedulerRoundRobin,
		Backends:     lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: fmt.Sprintf("svc-%d", i)}},
		NodeSelector: map[string]lvsv1.LabelValue{"kubelvs-watchload": lvsv1.LabelValue(nodeLabel)},
	}}
}

func counter(t *testing.T, reg *prometheus.Registry, resource, event string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kubelvs_watch_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var r, e string
			for _, p := range m.GetLabel() {
				switch p.GetName() {
				case "resource":
					r = p.GetValue()
				case "event":
					e = p.GetValue()
				}
			}
			if r == resource && e == event {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0 // not registered yet: the agent is starting
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// heapLive is the live Go heap after two collections.
func heapLive() uint64 {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestWatchLoad(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	program := os.Getenv("KUBELVS_WATCHLOAD_PROGRAM") != ""
	nodeLabel := "elsewhere"
	if program {
		nodeLabel = "here"
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubelvs-watchload": "here"}}},
		&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "watchload"}, Spec: lvsv1.AddressPoolSpec{
			CIDRs: []lvsv1.PoolCIDR{"10.96.0.0/16"}, NamespaceSelector: &lvsv1.LabelSelector{},
		}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	parallel(t, services, func(i int) error { return c.Create(ctx, slice(i)) })
	parallel(t, services, func(i int) error { return c.Create(ctx, virtualService(i, nodeLabel)) })
	t.Logf("created %d EndpointSlices (%d selected) of %d endpoints and %d VirtualServices in %s (program=%v)",
		services, selected, endpoints, services, time.Since(start).Round(time.Millisecond), program)

	round := 0
	for _, mode := range []struct {
		name, selector string
		slices         int
	}{
		{"no selector", "", services},
		{"selector " + selector, selector, selected},
	} {
		t.Run(mode.name, func(t *testing.T) {
			base := heapLive()
			fakes := syncertest.NewKernel()
			ipvs := fakes.IPVS
			k, err := fakes.Wire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			actx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			t0 := time.Now()
			go func() {
				done <- roles.RunAgent(actx, cfg, roles.AgentOptions{
					Options:            agent.Options{NodeName: nodeName, ResyncPeriod: time.Hour, NodeReports: true},
					MetricsBindAddress: "0", HealthProbeBindAddress: "0", Kernel: k, MetricsRegistry: reg,
					EndpointSliceSelector: mode.selector,
				})
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("agent: %v", err)
				}
			}()
			waitFor(t, 5*time.Minute, "the agent's initial lists", func() error {
				if got := counter(t, reg, "endpointslices", "add"); int(got) < mode.slices {
					return fmt.Errorf("%v EndpointSlice adds, want %d", got, mode.slices)
				}
				if got := counter(t, reg, "virtualservices", "add"); int(got) < services {
					return fmt.Errorf("%v VirtualService adds, want %d", got, services)
				}
				if program && ipvs.Calls("AddVirtualServer") < services {
					return fmt.Errorf("%d virtual servers programmed", ipvs.Calls("AddVirtualServer"))
				}
				return nil
			})
			listed := time.Since(t0)
			time.Sleep(3 * time.Second) // the queues drain
			heap := heapLive()
			sliceAdds := counter(t, reg, "endpointslices", "add")
			before := counter(t, reg, "endpointslices", "update")

			// One round of updates touching every slice: its first
			// endpoint turns not ready (and back on the next round).
			round++
			ready := round%2 == 0
			u0 := time.Now()
			parallel(t, services, func(i int) error {
				s := slice(i)
				s.Endpoints[0].Conditions.Ready = ptr.To(ready)
				var cur discoveryv1.EndpointSlice
				if err := c.Get(ctx, client.ObjectKeyFromObject(s), &cur); err != nil {
					return err
				}
				cur.Endpoints = s.Endpoints
				return c.Update(ctx, &cur)
			})
			written := time.Since(u0)
			waitFor(t, 5*time.Minute, "the round's events", func() error {
				if got := counter(t, reg, "endpointslices", "update") - before; int(got) < mode.slices {
					return fmt.Errorf("%v updates received, want %d", got, mode.slices)
				}
				return nil
			})
			received := time.Since(u0)
			time.Sleep(3 * time.Second) // any event left out would arrive by now
			got := counter(t, reg, "endpointslices", "update") - before
			if int(got) != mode.slices {
				t.Errorf("%v updates received for one round, want exactly %d", got, mode.slices)
			}
			t.Logf("RESULT %-40s slices cached %6.0f  initial list %6s  heap %6.1f MiB (live after GC, above %5.1f MiB before the agent)  round of %d slice updates: %6.0f events received (written in %s, all received %s after the first write)",
				mode.name, sliceAdds, listed.Round(time.Millisecond), float64(heap-min(heap, base))/(1<<20), float64(base)/(1<<20),
				services, got, written.Round(time.Millisecond), received.Round(time.Millisecond))
		})
	}
}
