package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/agent"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/syncer"
	"github.com/kubelvs/kubelvs/pkg/syncer/syncertest"
)

const namespace = "sim"

// cluster is one run: the API server, the admin clients, the observer.
type cluster struct {
	o       options
	n       int
	design  string
	kernels []*ipvstest.Fake // each node's IPVS table, under its ownership guard
	cfg     *rest.Config
	k8s     client.Client
	kube    *kubernetes.Clientset
	apiPID  int
	obs     *observer
	bg      *background
}

// runOnce starts a fresh API server, the workload, the controller and n
// agents reporting as design says, waits until everything is programmed on
// every node, then measures the changes. Everything it started is stopped
// when it returns, so that runs are independent of one another.
func runOnce(parent context.Context, o options, n int, design string) (recs []record, err error) {
	roleErrors.Store(0)
	c := &cluster{o: o, n: n, design: design}
	log.Printf("%s: starting kube-apiserver and etcd", c.tag())
	env := &envtest.Environment{CRDDirectoryPaths: []string{o.crds}, ErrorIfCRDPathMissing: true}
	// Each of the many status writes keeps a revision until the API
	// server compacts (every 5 minutes): room for them.
	env.ControlPlane.Etcd = &envtest.Etcd{}
	env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", fmt.Sprint(8<<30))
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop envtest: %w", stopErr))
		}
	}()
	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	c.cfg = cfg
	if c.k8s, err = client.New(cfg, client.Options{Scheme: roles.Scheme()}); err != nil {
		return nil, err
	}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.apiPID, err = apiserverPID(); err != nil {
		return nil, err
	}
	t := time.Now()
	if err := c.createWorkload(ctx); err != nil {
		return nil, err
	}
	log.Printf("%s: %d Nodes, %d Services, EndpointSlices and VirtualServices created in %s", c.tag(), n, o.vs, time.Since(t).Round(time.Millisecond))

	kernels := make([]*syncer.Kernel, n)
	c.kernels = make([]*ipvstest.Fake, n)
	for i := range n {
		if kernels[i], c.kernels[i], err = fakeKernel(ctx); err != nil {
			return nil, err
		}
	}
	if c.obs, err = startObserver(ctx, ownConnection(cfg, "observer"), n, design, c.kernels); err != nil {
		return nil, err
	}
	roleErr := make(chan error, n+1)
	run := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				roleErr <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	bootCPU0, err := cpuSeconds(c.apiPID)
	if err != nil {
		return nil, err
	}
	boot := time.Now()
	run("controller", func() error {
		return roles.RunController(ctx, ownConnection(cfg, "controller"), roles.ControllerOptions{MetricsBindAddress: "0", HealthProbeBindAddress: "0", SecondInProcess: true})
	})
	for i := range n {
		name := nodeName(i)
		run(name, func() error {
			return roles.RunAgent(ctx, ownConnection(cfg, name), roles.AgentOptions{
				Options: agent.Options{
					NodeName: name, ResyncPeriod: roles.DefaultResyncPeriod, DrainInterval: time.Second, ReportStatus: true,
					NodeReports: design == designNodeReports,
				},
				AnnounceOptions:    roles.AnnounceOptions{BGP: false, Layer2: false},
				MetricsBindAddress: "0", HealthProbeBindAddress: "0",
				Kernel: kernels[i], HealthChecks: false, MetricsRegistry: prometheus.NewRegistry(),
			})
		})
	}
	log.Printf("%s: controller and %d agents started; waiting until every VirtualService is programmed on every node", c.tag(), n)
	if err := c.waitProgrammed(ctx, roleErr); err != nil {
		return nil, err
	}
	bootTime := time.Since(boot)
	bootCPU1, err := cpuSeconds(c.apiPID)
	if err != nil {
		return nil, err
	}
	log.Printf("%s: all %d VirtualServices programmed on all %d nodes after %s (kube-apiserver CPU %.0f s)",
		c.tag(), o.vs, n, bootTime.Round(time.Second), bootCPU1-bootCPU0)

	if c.bg, err = c.measureBackground(ctx); err != nil {
		return nil, err
	}
	for _, kind := range []string{kindVS, kindSlice} {
		r, err := c.measure(ctx, kind)
		if err != nil {
			return recs, err
		}
		r.BootSeconds = round(bootTime.Seconds(), 1)
		r.BootAPIServerCPU = round(bootCPU1-bootCPU0, 1)
		recs = append(recs, r)
	}
	select {
	case err := <-roleErr:
		return recs, err
	default:
	}
	return recs, nil
}

// ownConnection is cfg for one role: the binary's client-side rate limit
// (cmd/manager: 200 requests/s, bursts of 400), a user agent naming it, and
// connections of its own, as from its own node (client-go shares one
// transport between configurations that look alike, unless they carry a
// proxy function).
func ownConnection(cfg *rest.Config, name string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 200, 400
	c.UserAgent = "kubelvs-sim/" + name
	c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	return c
}

// tag names the run in the log.
func (c *cluster) tag() string { return fmt.Sprintf("N=%d %s", c.n, c.design) }

func nodeName(i int) string { return fmt.Sprintf("sim-%04d", i+1) }

// fakeKernel is the kernel of the agent tests: fakes that keep state. The
// IPVS fake is returned too, for the observer to read what a node has
// programmed.
func fakeKernel(ctx context.Context) (*syncer.Kernel, *ipvstest.Fake, error) {
	k := syncertest.NewKernel()
	sk, err := k.Wire(ctx)
	return sk, k.IPVS, err
}

func vsName(i int) string    { return fmt.Sprintf("vs-%04d", i) }
func sliceName(i int) string { return vsName(i) + "-1" }

// vip is VirtualService i's address in the pool 10.200.0.0/16.
func vip(i int) string { return fmt.Sprintf("10.200.%d.%d", i/250, i%250+1) }

// endpointsOf are slice i's endpoints, spread over the nodes.
func endpointsOf(i, count, nodes int) []discoveryv1.Endpoint {
	eps := make([]discoveryv1.Endpoint, count)
	for j := range eps {
		eps[j] = endpoint(i, j, nodes)
	}
	return eps
}

func endpoint(i, j, nodes int) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, j+1)},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		NodeName:   ptr.To(nodeName((i*7 + j) % nodes)),
	}
}

// createWorkload creates the namespace, the AddressPool admitting it, the
// Nodes, and per VirtualService its headless Service and EndpointSlice.
func (c *cluster) createWorkload(ctx context.Context) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		&lvsv1.AddressPool{
			ObjectMeta: metav1.ObjectMeta{Name: "sim"},
			Spec: lvsv1.AddressPoolSpec{
				CIDRs:             []lvsv1.PoolCIDR{"10.200.0.0/16"},
				NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{corev1.LabelMetadataName: namespace}},
			},
		},
	}
	for i := range c.n {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(i), Labels: map[string]string{"kubernetes.io/hostname": nodeName(i)}}})
	}
	for _, o := range objs {
		if err := c.k8s.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return parallel(ctx, c.o.vs, 8, func(i int) error {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: vsName(i), Namespace: namespace},
			Spec: corev1.ServiceSpec{
				ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": vsName(i)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: sliceName(i), Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: vsName(i)}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   endpointsOf(i, c.o.endpoints, c.n),
		}
		vs := &lvsv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Name: vsName(i), Namespace: namespace},
			Spec: lvsv1.VirtualServiceSpec{
				Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip(i))},
				Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))}},
				Scheduler: lvsv1.SchedulerRoundRobin,
				Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: vsName(i)}},
			},
		}
		for _, o := range []client.Object{svc, slice, vs} {
			if err := c.k8s.Create(ctx, o); err != nil {
				return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
			}
		}
		return nil
	})
}

// parallel runs f(0..n-1) on workers goroutines; the first error wins.
func parallel(ctx context.Context, n, workers int, f func(int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// waitProgrammed waits until the observer sees every VirtualService
// programmed on every node, printing progress.
func (c *cluster) waitProgrammed(ctx context.Context, roleErr <-chan error) error {
	deadline := time.Now().Add(c.o.bootTimeout)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		done, entries := c.obs.progress()
		if done == c.o.vs {
			return nil
		}
		if time.Since(last) >= 30*time.Second {
			last = time.Now()
			log.Printf("%s: %d of %d VirtualServices programmed on all nodes; %d of %d programmed per node (%d role errors logged)",
				c.tag(), done, c.o.vs, entries, c.o.vs*c.n, roleErrors.Load())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every VirtualService programmed on every node after %s: %d of %d done, %d of %d programmed per node",
				c.o.bootTimeout, done, c.o.vs, entries, c.o.vs*c.n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-roleErr:
			return err
		case <-tick.C:
		}
	}
}

// apiserverPID finds the kube-apiserver this process started.
func apiserverPID() (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		if st.comm == "kube-apiserver" && st.ppid == os.Getpid() {
			return pid, nil
		}
	}
	return 0, errors.New("no kube-apiserver child process found")
}
