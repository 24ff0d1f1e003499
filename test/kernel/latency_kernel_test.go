package kernel

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// Size of the latency benchmark: issue 4 asks for the EndpointSlice to
// kernel latency with 1,000 VirtualServices present.
const (
	latVirtualServices = 1000
	latEndpoints       = 3   // ready endpoints per EndpointSlice at the start
	latSamples         = 100 // EndpointSlice updates measured per run
	latWriters         = 8   // goroutines creating and deleting the objects
	// latGap separates two samples, so that one update is measured at a
	// time and not behind the previous one's status write.
	latGap = 100 * time.Millisecond
	// latPoll is the pause between two netlink reads of the real servers
	// while a sample waits: the guest has one CPU, which the poller
	// shares with the agent, kube-apiserver and etcd.
	latPoll = 200 * time.Microsecond

	latMetricsAddr = "127.0.0.1:19741"
	latProbeAddr   = "127.0.0.1:19742"
)

// BenchmarkEndpointSliceToKernel measures, in the guest, the time from an
// EndpointSlice write to the change in the kernel's IPVS table, with 1,000
// VirtualServices (one VIP, one TCP port, three real servers each)
// programmed by the agent binary against kube-apiserver and etcd in the
// same guest. Every run (use -test.benchtime 1x) creates the objects,
// reports the initial programming time, then takes latSamples samples: a
// random VirtualService's EndpointSlice gains, or has replaced, one
// endpoint address, and the kernel is polled through netlink until that
// address is a real server with a weight. Latency is end to end, from
// issuing the API write. hack/bench-agent.sh runs it.
//
// Sub-benchmarks:
//   - status=on: default flags, status reporting on; the agent finds the
//     API server through $KUBECONFIG as it would in-cluster (the
//     controller-runtime default: no client-side rate limit).
//   - status=off: --report-status=false.
//   - status=on,kubeconfig-flag: default flags with --kubeconfig, with
//     which client-go's default client-side limit (5 QPS, burst 10)
//     applies to the agent's writes.
//
// KUBELVS_BENCH_AGENT_FLAGS adds agent flags to every run, e.g.
// "--health-checks=false".
func BenchmarkEndpointSliceToKernel(b *testing.B) {
	kerneltest.Require(b)
	extra := strings.Fields(os.Getenv("KUBELVS_BENCH_AGENT_FLAGS"))
	for _, v := range []struct {
		name           string
		kubeconfigFlag bool
		flags          []string
	}{
		{name: "status=on"},
		{name: "status=off", flags: []string{"--report-status=false"}},
		{name: "status=on,kubeconfig-flag", kubeconfigFlag: true},
	} {
		b.Run(v.name, func(b *testing.B) {
			flags := append(slices.Clone(v.flags), extra...)
			benchSliceToKernel(b, v.kubeconfigFlag, flags)
		})
	}
}

func benchSliceToKernel(b *testing.B, kubeconfigFlag bool, flags []string) {
	ctx := context.Background()
	_, c, kc := apiServer(b)
	h, err := ipvsnl.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	reportStatus := !slices.Contains(flags, "--report-status=false")

	flags = append([]string{"--metrics-bind-address=" + latMetricsAddr, "--health-probe-bind-address=" + latProbeAddr}, flags...)
	start := time.Now()
	agent := startLatencyAgent(b, kc, kubeconfigFlag, flags...)
	waitFor(b, 2*time.Minute, "agent ready (first full sync)", func() error { return probe("http://" + latProbeAddr + "/readyz") })
	b.Logf("agent %v (kubeconfig flag %v) ready after %s", flags, kubeconfigFlag, time.Since(start).Round(time.Millisecond))

	// 1,000 EndpointSlices and VirtualServices, each slice just before its
	// VirtualService, created by a few writers in parallel.
	slicesByVS := make([]*discoveryv1.EndpointSlice, latVirtualServices)
	start = time.Now()
	parallel(b, latVirtualServices, func(i int) error {
		s := latSlice(i)
		if err := c.Create(ctx, s); err != nil {
			return err
		}
		slicesByVS[i] = s
		return c.Create(ctx, latVS(i))
	})
	created := time.Since(start)
	initial := waitKernel(b, h, start, latVirtualServices, latEndpoints)
	if m, err := scrape(); err == nil {
		logAgentMetrics(b, "from its start to the initial programming", metrics{}, m)
	}
	b.Logf("initial programming: %d VirtualServices x %d real servers created in %s, all in the kernel %s after the first write",
		latVirtualServices, latEndpoints, created.Round(time.Millisecond), initial.Round(time.Millisecond))
	b.ReportMetric(initial.Seconds(), "s-initial")

	// Let the agent settle: every status entry written (when reporting)
	// and its queue empty, so that samples are steady-state updates.
	if reportStatus {
		waitReported(b, c, latVirtualServices, latEndpoints, 0, nodeReportsOn(flags))
		b.Logf("status reported for all %d VirtualServices %s after the first write", latVirtualServices, time.Since(start).Round(time.Millisecond))
	}
	waitQueueEmpty(b)
	b.Logf("agent settled %s after the first write", time.Since(start).Round(time.Millisecond))

	// The samples. The same seed picks the same VirtualServices in every
	// sub-benchmark.
	before, err := scrape()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 1000))
	lat := make([]time.Duration, 0, latSamples)
	acks := make([]time.Duration, 0, latSamples)
	polls, adds := 0, 0
	for n := range latSamples {
		i := rng.IntN(latVirtualServices)
		s := slicesByVS[i]
		addr := latEndpoint(1<<16 + n)
		ep := readyEndpoint(addr)
		if len(s.Endpoints) == latEndpoints {
			s.Endpoints = append(s.Endpoints, ep) // counts change: a status write follows
			adds++
		} else {
			s.Endpoints[len(s.Endpoints)-1] = ep // counts stay
		}
		want := ipvs.RealKey{Address: addr, Port: 8080}
		key := ipvs.Key{Address: latVIP(i), Protocol: ipvs.TCP, Port: 80}

		tAPI := time.Now()
		if err := c.Update(ctx, s); err != nil {
			b.Fatalf("sample %d: update %s: %v", n, s.Name, err)
		}
		tAck := time.Now()
		polls += waitRealServer(b, h, key, want, latPoll, fmt.Sprintf("sample %d", n))
		tSeen := time.Now()
		lat = append(lat, tSeen.Sub(tAPI))
		acks = append(acks, tAck.Sub(tAPI))
		time.Sleep(latGap)
	}
	after, err := scrape()
	if err != nil {
		b.Fatal(err)
	}

	slices.Sort(lat)
	slices.Sort(acks)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op") // one op is the whole run: meaningless
	b.ReportMetric(ms(pct(lat, 50)), "ms-p50")
	b.ReportMetric(ms(pct(lat, 90)), "ms-p90")
	b.ReportMetric(ms(pct(lat, 99)), "ms-p99")
	b.ReportMetric(ms(lat[len(lat)-1]), "ms-max")
	b.ReportMetric(ms(pct(acks, 50)), "ms-ack-p50")
	b.Logf("EndpointSlice update -> kernel, %d samples over %d VirtualServices (%d adds, %d replaces): p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms min %.1fms (API write acknowledged: p50 %.1fms p99 %.1fms; %.1f netlink polls per sample)",
		len(lat), latVirtualServices, adds, len(lat)-adds, ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(lat[len(lat)-1]), ms(lat[0]),
		ms(pct(acks, 50)), ms(pct(acks, 99)), float64(polls)/float64(len(lat)))
	logAgentMetrics(b, "during the samples", before, after)

	// Delete everything while the agent runs, so that the next run starts
	// from an empty kernel (the agent leaves the kernel as it is when it
	// stops).
	start = time.Now()
	parallel(b, latVirtualServices, func(i int) error {
		return c.Delete(ctx, &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "default"}})
	})
	waitFor(b, 5*time.Minute, "VirtualServices removed from the kernel", func() error {
		if n := countVirtualServers(b, h); n != 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
	b.Logf("deleting %d VirtualServices: kernel empty after %s", latVirtualServices, time.Since(start).Round(time.Millisecond))
	agent.stop(b)
	logAgentErrors(b, agent.log)
}

// startLatencyAgent runs the agent binary. Unless kubeconfigFlag, it finds
// the API server through $KUBECONFIG, the way it finds it in a cluster
// (ctrl.GetConfig, without client-side rate limit).
func startLatencyAgent(tb testing.TB, kubeconfig string, kubeconfigFlag bool, extra ...string) *agentProc {
	tb.Helper()
	if kubeconfigFlag {
		return startAgent(tb, kubeconfig, extra...)
	}
	bin := os.Getenv("KUBELVS_MANAGER")
	if bin == "" {
		tb.Fatal("KUBELVS_MANAGER (the manager binary) is not set; hack/test-kernel.sh builds it")
	}
	logf, err := os.CreateTemp(tb.TempDir(), "agent-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	args := append([]string{"agent", "--node-name", "guest",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--drain-interval=100ms",
		// The benchmarks scrape the agent's metrics over loopback, as
		// plain HTTP.
		"--metrics-secure=false"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &agentProc{cmd: cmd, log: logf.Name()}
	tb.Cleanup(func() { p.stop(tb) })
	return p
}

func latVIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 97, byte(i / 250), byte(i%250 + 1)})
}

// latEndpoint is the n-th backend address, from 100.64.0.0/10: none is
// reachable, and none needs to be.
func latEndpoint(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64 + byte(n>>16), byte(n >> 8), byte(n)})
}

func readyEndpoint(a netip.Addr) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{a.String()}, NodeName: ptr.To("guest"),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
}

func latSlice(i int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-1", i), Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range latEndpoints {
		s.Endpoints = append(s.Endpoints, readyEndpoint(latEndpoint(i*latEndpoints+j)))
	}
	return s
}

func latVS(i int) *lvsv1.VirtualService {
	name := fmt.Sprintf("svc-%d", i)
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(latVIP(i).String())},
		Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))}},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: name}},
	}}
}

// parallel runs f(0..n-1) on latWriters goroutines; the first error fails.
func parallel(tb testing.TB, n int, f func(i int) error) {
	tb.Helper()
	next := make(chan int)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range latWriters {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("object %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		tb.Fatal(first)
	}
}

// isLatVIP tells the benchmark's virtual servers (10.97.0.0/16).
func isLatVIP(a netip.Addr) bool { return netip.MustParsePrefix("10.97.0.0/16").Contains(a) }

func countVirtualServers(tb testing.TB, h ipvs.Interface) int {
	ctx := context.Background()
	vss, err := h.ListVirtualServers(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, v := range vss {
		if isLatVIP(v.Address) {
			n++
		}
	}
	return n
}

// waitKernel waits until the kernel holds the n virtual servers latVIP(0..n-1)
// with rs real servers each and returns the time since start. It lists the
// virtual servers every second and reads real servers only once all are
// there, then only of those still short.
func waitKernel(tb testing.TB, h ipvs.Interface, start time.Time, n, rs int) time.Duration {
	ctx := context.Background()
	tb.Helper()
	waitFor(tb, 30*time.Minute, "virtual servers in the kernel", func() error {
		if got := countVirtualServers(tb, h); got != n {
			time.Sleep(950 * time.Millisecond) // waitFor adds 50ms; the dump costs CPU the agent needs
			return fmt.Errorf("%d of %d", got, n)
		}
		return nil
	})
	short := make([]int, n)
	for i := range short {
		short[i] = i
	}
	waitFor(tb, 30*time.Minute, "real servers in the kernel", func() error {
		var still []int
		for _, i := range short {
			r, err := h.ListRealServers(ctx, ipvs.Key{Address: latVIP(i), Protocol: ipvs.TCP, Port: 80})
			if err != nil || len(r) != rs {
				still = append(still, i)
			}
		}
		if short = still; len(short) > 0 {
			return fmt.Errorf("%d virtual servers without their %d real servers", len(short), rs)
		}
		return nil
	})
	return time.Since(start)
}

func probe(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// pct is the p-th percentile (nearest rank) of sorted d.
func pct(d []time.Duration, p int) time.Duration {
	i := (p*len(d)+99)/100 - 1
	return d[max(i, 0)]
}

// metrics are the agent's Prometheus samples, by "name{labels}".
type metrics map[string]float64

// matches reports whether the series key is of name with labels that
// contain every one of labels.
func matches(key, name string, labels []string) bool {
	n, l, _ := strings.Cut(key, "{")
	if n != name {
		return false
	}
	for _, want := range labels {
		if !strings.Contains(l, want) {
			return false
		}
	}
	return true
}

// sum adds the samples of name whose labels contain every one of labels.
func (m metrics) sum(name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		if matches(k, name, labels) {
			s += v
		}
	}
	return s
}

// has reports whether m holds a series of name with those labels.
func (m metrics) has(name string, labels ...string) bool {
	for k := range m {
		if matches(k, name, labels) {
			return true
		}
	}
	return false
}

func scrape() (metrics, error) {
	resp, err := http.Get("http://" + latMetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// E.g. 400 from a metrics server on HTTPS: no figures, and a
		// queue depth read from nothing must not pass for zero.
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// logAgentMetrics logs where the agent spent the sampling window: its
// queue, its syncs, the kernel writes and its API writes.
func logAgentMetrics(tb testing.TB, when string, before, after metrics) {
	tb.Helper()
	d := func(name string, labels ...string) float64 {
		return after.sum(name, labels...) - before.sum(name, labels...)
	}
	q := `name="kubelvs-agent` // both lanes
	mean := func(name string, labels ...string) float64 {
		n := d(name+"_count", labels...)
		if n == 0 {
			return 0
		}
		return d(name+"_sum", labels...) / n * 1000
	}
	tb.Logf("agent %s: %.0f queue adds, %.0f items processed, mean wait in queue %.2fms, mean processing %.2fms; "+
		"%.0f full syncs, %.0f group syncs (mean %.2fms); %.0f real server writes; API requests: %.0f PATCH (status), %.0f GET, %.0f other",
		when, d("workqueue_adds_total", q), d("workqueue_work_duration_seconds_count", q),
		mean("workqueue_queue_duration_seconds", q), mean("workqueue_work_duration_seconds", q),
		d("kubelvs_sync_duration_seconds_count", `kind="full"`), d("kubelvs_sync_duration_seconds_count", `kind="group"`), mean("kubelvs_sync_duration_seconds", `kind="group"`),
		d("kubelvs_kernel_operations_total", `kind="real_server"`)-d("kubelvs_kernel_operations_total", `kind="real_server"`, `op="list"`),
		d("rest_client_requests_total", `method="PATCH"`), d("rest_client_requests_total", `method="GET"`),
		d("rest_client_requests_total")-d("rest_client_requests_total", `method="PATCH"`)-d("rest_client_requests_total", `method="GET"`))
}

// logAgentErrors logs how many error lines the agent wrote, and the first.
func logAgentErrors(tb testing.TB, path string) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Log(err)
		return
	}
	var errs []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, "\tERROR\t") {
			errs = append(errs, l)
		}
	}
	tb.Logf("agent log: %d lines, %d errors", strings.Count(string(data), "\n"), len(errs))
	for _, l := range errs[:min(len(errs), 3)] {
		tb.Logf("  %s", l)
	}
}

// nodeReportsOn reports whether an agent started with args reports in its
// NodeReport (the default) rather than in status.nodes.
func nodeReportsOn(args []string) bool {
	on := true
	for _, a := range args {
		switch a {
		case "--node-reports", "--node-reports=true":
			on = true
		case "--node-reports=false":
			on = false
		}
	}
	return on
}

// waitReported waits until the agent reported n VirtualServices
// programmed: in status.nodes (each with total backends), or with
// nodeReports in its NodeReport (no failure).
func waitReported(tb testing.TB, c client.Client, n, total int, pause time.Duration, nodeReports bool) {
	tb.Helper()
	if nodeReports {
		waitFor(tb, 30*time.Minute, "the node's NodeReport", func() error {
			var r lvsv1.NodeReport
			if err := c.Get(context.Background(), client.ObjectKey{Name: "guest"}, &r); err != nil {
				time.Sleep(pause)
				return err
			}
			if int(r.Status.VirtualServices) != n || r.Status.FailedCount != 0 {
				time.Sleep(pause)
				return fmt.Errorf("%d of %d programmed, %d failed", r.Status.VirtualServices, n, r.Status.FailedCount)
			}
			return nil
		})
		return
	}
	waitFor(tb, 30*time.Minute, "status of every VirtualService", func() error {
		var list lvsv1.VirtualServiceList
		if err := c.List(context.Background(), &list, client.InNamespace("default")); err != nil {
			return err
		}
		done := 0
		for _, vs := range list.Items {
			for _, st := range vs.Status.Nodes {
				if st.Node == "guest" && st.Programmed && st.Backends.Total == int32(total) {
					done++
				}
			}
		}
		if done != n {
			time.Sleep(pause)
			return fmt.Errorf("%d of %d reported", done, n)
		}
		return nil
	})
}

// waitRealServer polls the kernel every poll until want is a real server
// of key with a weight, and returns how many reads it took; after 30 s it
// fails with what (the sample) and the kernel's table for the VIP.
func waitRealServer(tb testing.TB, h ipvs.Interface, key ipvs.Key, want ipvs.RealKey, poll time.Duration, what string) int {
	ctx := context.Background()
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for polls := 1; ; polls++ {
		rss, err := h.ListRealServers(ctx, key)
		if err != nil {
			tb.Fatalf("%s: list real servers of %s: %v", what, key, err)
		}
		if slices.ContainsFunc(rss, func(r ipvs.RealServer) bool { return r.Key() == want && r.Weight > 0 }) {
			return polls
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %s not a real server of %s after 30s:\n%s", what, want, key, kernelDump(ctx, tb, h, key.Address))
		}
		time.Sleep(poll)
	}
}
