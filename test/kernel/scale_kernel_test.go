package kernel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

const (
	// scaleRealServers is issue 6's number of real servers per virtual
	// server.
	scaleRealServers = 10
	// scaleSampleBase offsets the sample endpoints' addresses past those
	// of the initial slices (latEndpoint(i*10+j) for up to 200,000 VS).
	scaleSampleBase = 1 << 21

	scalePprofAddr = "127.0.0.1:19743"

	// scaleGap separates two samples: long enough for the aftermath of
	// one (the old address drained and removed at the next 100 ms drain
	// pass, two status writes and their watch events, all on the guest's
	// one CPU with kube-apiserver and etcd) to be over before the next
	// change, so that each sample is one change on a quiet node.
	scaleGap = 400 * time.Millisecond
	// scalePoll is the pause between two netlink reads while a sample
	// waits for its real server: every read costs CPU the agent needs
	// (the guest has one), and the API-to-kernel figures are tens of
	// milliseconds, so a millisecond of resolution is enough.
	scalePoll = time.Millisecond
)

// AgentScale is one size's figures of BenchmarkAgentScale, stored as the
// "agent" member of that size in bench/results.json.
type AgentScale struct {
	VirtualServers int `json:"virtual_servers"`
	RealServersPer int `json:"real_servers_per_virtual_server"`
	// CreateSeconds is how long the benchmark took to create the
	// EndpointSlices and VirtualServices; InitialSeconds from the first
	// write until the kernel held all of them; SettledSeconds until every
	// status entry was written and the agent's queue stayed empty.
	CreateSeconds  float64 `json:"create_seconds"`
	InitialSeconds float64 `json:"initial_programming_seconds"`
	SettledSeconds float64 `json:"settled_seconds"`
	// EventToKernel is kubelvs_event_to_kernel_seconds per sample: from the
	// agent receiving the EndpointSlice's watch event to the kernel
	// acknowledging the sync. APIToKernel is measured by the benchmark:
	// from issuing the API write until netlink shows the new real server.
	EventToKernel Summary `json:"event_to_kernel"`
	APIToKernel   Summary `json:"api_write_to_kernel"`
	// Peak resident memory of the agent process (VmHWM) over the whole
	// run, its resident memory at the end and the Go heap in use.
	PeakRSSMiB   float64 `json:"agent_peak_rss_mib"`
	RSSMiB       float64 `json:"agent_rss_mib"`
	HeapInuseMiB float64 `json:"agent_heap_inuse_mib"`
	// AfterBurst is the same single changes right after a burst of
	// creates (KUBELVS_BENCH_BURST, default 1,000; 0 skips it).
	AfterBurst *BurstScale `json:"after_burst,omitempty"`
	Note       string      `json:"note"`
}

// BurstScale is the single changes taken right after a burst of creates:
// Creates VirtualServices (each with its EndpointSlice) are written by
// parallel writers while the samples run. Each sample is timed from the
// API write to the kernel, and by the agent from its watch event to the
// kernel (kubelvs_event_to_kernel_seconds{kind="change"}: the creates
// are timed apart, as kind="create"). DuringProgramming counts
// the samples that were done before the kernel held the whole burst;
// ProgrammedSeconds is when it did, from the burst's first write.
type BurstScale struct {
	Creates           int     `json:"creates"`
	WrittenSeconds    float64 `json:"written_seconds"`
	ProgrammedSeconds float64 `json:"programmed_seconds"`
	EventToKernel     Summary `json:"event_to_kernel"`
	APIToKernel       Summary `json:"api_write_to_kernel"`
	DuringProgramming int     `json:"samples_during_programming"`
	// RunQueueMS is, per EventToKernel sample and in the same order, how
	// long the agent's threads were runnable but not running (waiting for
	// a CPU the guest gave to another process) over that sample, summed
	// over the threads (/proc/PID/task/*/schedstat): a slow sample with a
	// long wait here waited for the CPU, not for the agent's own work.
	// RunQueueSeconds is the same over the whole burst.
	RunQueueMS      []float64 `json:"event_agent_runqueue_ms,omitempty"`
	RunQueueSeconds float64   `json:"agent_runqueue_seconds"`
	// Nice is the agent's nice value (KUBELVS_BENCH_AGENT_NICE): with a
	// negative one it goes before kube-apiserver and etcd for the guest's
	// one CPU, as a CPU request gives a pod's containers more of a busy
	// node's CPU.
	Nice int `json:"agent_nice,omitempty"`
}

// Summary is a latency distribution, milliseconds.
type Summary struct {
	Samples []float64 `json:"samples_ms"`
	P50     float64   `json:"p50_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Max     float64   `json:"max_ms"`
}

func summarize(ms []float64) Summary {
	s := Summary{Samples: ms}
	if len(ms) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(ms))
	q := func(p int) float64 { return sorted[max((p*len(sorted)+99)/100-1, 0)] }
	s.P50, s.P90, s.P99, s.Max = q(50), q(90), q(99), sorted[len(sorted)-1]
	return s
}

// BenchmarkAgentScale is scenarios 3 and 6 of issue 6 through the real
// agent binary: etcd, kube-apiserver and the agent (default flags, status
// reporting on) in the guest, N VirtualServices each with one VIP, one TCP
// port and an EndpointSlice of 10 ready endpoints, for each N of
// KUBELVS_BENCH_SIZES (default 1000,10000). For each size it reports the
// initial programming time, then KUBELVS_BENCH_AGENT_SAMPLES (default 200)
// single EndpointSlice changes one at a time (one endpoint replaced by a
// new address in a random slice): the agent's own event-to-kernel time
// (its kubelvs_event_to_kernel_seconds histogram, read after every
// sample, so each sample is exact) and the end-to-end time from issuing
// the API write until netlink shows the new real server; and the agent's
// peak resident memory. With KUBELVS_BENCH_OUT it adds the figures to
// that results file (hack/bench.sh: bench/results.json).
func BenchmarkAgentScale(b *testing.B) {
	kerneltest.Require(b)
	sizes := []int{1000, 10000}
	if v := os.Getenv("KUBELVS_BENCH_SIZES"); v != "" {
		sizes = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || n > 60000 {
				b.Fatalf("KUBELVS_BENCH_SIZES: %q is not a size (1..60000)", f)
			}
			sizes = append(sizes, n)
		}
	}
	samples := 200
	if v := os.Getenv("KUBELVS_BENCH_AGENT_SAMPLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("KUBELVS_BENCH_AGENT_SAMPLES: %q", v)
		}
		samples = n
	}
	slices.Sort(sizes)
	_, c, kc := apiServer(b)
	h, err := ipvsnl.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	for i, n := range sizes {
		b.Run(fmt.Sprintf("vs=%d", n), func(b *testing.B) {
			r := agentScale(b, c, kc, h, n, samples, i == len(sizes)-1)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.InitialSeconds, "s-initial")
			b.ReportMetric(r.EventToKernel.P50, "ms-event-p50")
			b.ReportMetric(r.EventToKernel.P99, "ms-event-p99")
			b.ReportMetric(r.APIToKernel.P50, "ms-api-p50")
			b.ReportMetric(r.APIToKernel.P99, "ms-api-p99")
			b.ReportMetric(r.PeakRSSMiB, "MiB-peak-rss")
			if out := os.Getenv("KUBELVS_BENCH_OUT"); out != "" {
				if err := mergeAgentScale(out, r); err != nil {
					b.Fatalf("write %s: %v", out, err)
				}
			}
		})
	}
}

func agentScale(b *testing.B, c client.Client, kc string, h ipvs.Interface, n, samples int, last bool) AgentScale {
	ctx := context.Background()
	r := AgentScale{VirtualServers: n, RealServersPer: scaleRealServers,
		Note: "agent binary with default flags (status reporting on) against etcd and kube-apiserver in the same guest"}
	args := []string{"--metrics-bind-address=" + latMetricsAddr, "--health-probe-bind-address=" + latProbeAddr,
		"--pprof-bind-address=" + scalePprofAddr}
	// KUBELVS_BENCH_AGENT_ARGS adds agent flags, e.g. a short
	// --resync-period so that the samples meet periodic resyncs.
	if extra := strings.Fields(os.Getenv("KUBELVS_BENCH_AGENT_ARGS")); len(extra) > 0 {
		args = append(args, extra...)
		r.Note = fmt.Sprintf("agent binary with default flags but %s (status reporting on) against etcd and kube-apiserver in the same guest", strings.Join(extra, " "))
	}
	start := time.Now()
	agent := startLatencyAgent(b, kc, false, args...)
	if dir := os.Getenv("KUBELVS_BENCH_PROFILE_DIR"); dir != "" {
		// The agent's whole log beside the profiles (its slow syncs,
		// errors), once it has stopped.
		b.Cleanup(func() {
			agent.stop(b)
			if data, err := os.ReadFile(agent.log); err == nil {
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("agent-%d.log", n)), data, 0o644)
			}
		})
	}
	waitFor(b, 5*time.Minute, "agent ready (first full sync)", func() error { return probe("http://" + latProbeAddr + "/readyz") })
	b.Logf("vs=%d: agent ready after %s", n, time.Since(start).Round(time.Millisecond))

	sliceOf := make([]*discoveryv1.EndpointSlice, n)
	start = time.Now()
	parallel(b, n, func(i int) error {
		s := scaleSlice(i)
		if err := c.Create(ctx, s); err != nil {
			return err
		}
		sliceOf[i] = s
		return c.Create(ctx, latVS(i))
	})
	r.CreateSeconds = time.Since(start).Seconds()
	r.InitialSeconds = waitKernel(b, h, start, n, scaleRealServers).Seconds()
	b.Logf("vs=%d: %d EndpointSlices and VirtualServices created in %.1fs, all in the kernel %.1fs after the first write",
		n, n, r.CreateSeconds, r.InitialSeconds)

	// Settle: every status entry written and the queue empty, so that the
	// samples are steady-state changes.
	waitReported(b, c, n, scaleRealServers, 5*time.Second, nodeReportsOn(args))
	waitQueueEmpty(b)
	r.SettledSeconds = time.Since(start).Seconds()
	b.Logf("vs=%d: status reported and agent queue empty %.1fs after the first write", n, r.SettledSeconds)

	// The samples, one at a time: replace one endpoint of a random slice
	// by a new address. The old address drains (weight 0, removed by the
	// next drain pass), so each sample also brings a sync of the agent's
	// own making and two status writes, which are not timed as events.
	rng := rand.New(rand.NewPCG(6, uint64(n)))
	prev, err := scrape()
	if err != nil {
		b.Fatal(err)
	}
	before := prev
	var event, api []float64
	multi := 0
	for k := range samples {
		i := rng.IntN(n)
		s := sliceOf[i]
		addr := latEndpoint(scaleSampleBase + k)
		s.Endpoints[k%scaleRealServers] = readyEndpoint(addr)
		want := ipvs.RealKey{Address: addr, Port: 8080}
		key := ipvs.Key{Address: latVIP(i), Protocol: ipvs.TCP, Port: 80}

		tAPI := time.Now()
		if err := c.Update(ctx, s); err != nil {
			b.Fatalf("sample %d: update %s: %v", k, s.Name, err)
		}
		waitRealServer(b, h, key, want, scalePoll, fmt.Sprintf("sample %d", k))
		api = append(api, float64(time.Since(tAPI).Microseconds())/1000)
		// The agent observes its histogram right after the kernel's
		// acknowledgement; the gap lets it (and the drain of the old
		// address) finish before the next sample.
		time.Sleep(scaleGap)
		cur, err := scrape()
		if err != nil {
			b.Fatal(err)
		}
		dn := cur.sum("kubelvs_event_to_kernel_seconds_count", changes(cur)...) - prev.sum("kubelvs_event_to_kernel_seconds_count", changes(prev)...)
		ds := cur.sum("kubelvs_event_to_kernel_seconds_sum", changes(cur)...) - prev.sum("kubelvs_event_to_kernel_seconds_sum", changes(prev)...)
		switch {
		case dn == 1:
			event = append(event, ds*1000)
		case dn > 1:
			multi++ // another event was timed in the window: no exact figure
		}
		prev = cur
	}
	if len(event) < samples/2 {
		b.Fatalf("only %d of %d samples had exactly one event-to-kernel observation (%d had several)", len(event), samples, multi)
	}
	r.EventToKernel, r.APIToKernel = summarize(event), summarize(api)
	b.Logf("vs=%d: one EndpointSlice change, %d samples: event->kernel p50 %.2fms p99 %.2fms max %.2fms (%d samples); API write->kernel p50 %.2fms p99 %.2fms max %.2fms",
		n, samples, r.EventToKernel.P50, r.EventToKernel.P99, r.EventToKernel.Max, len(event), r.APIToKernel.P50, r.APIToKernel.P99, r.APIToKernel.Max)
	if multi > 0 {
		b.Logf("vs=%d: %d samples left out: more than one event timed in their window", n, multi)
	}
	logAgentMetrics(b, "during the samples", before, prev)

	hwm, rss, err := procMemory(agent.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	r.PeakRSSMiB, r.RSSMiB = hwm, rss
	r.HeapInuseMiB = prev.sum("go_memstats_heap_inuse_bytes") / (1 << 20)
	b.Logf("vs=%d: agent memory: peak RSS %.0f MiB, RSS now %.0f MiB, Go heap in use %.0f MiB", n, hwm, rss, r.HeapInuseMiB)
	if dir := os.Getenv("KUBELVS_BENCH_PROFILE_DIR"); dir != "" {
		// What the heap holds: go tool pprof -sample_index=inuse_space <file>
		path := filepath.Join(dir, fmt.Sprintf("agent-heap-%d.pb.gz", n))
		if err := fetch("http://"+scalePprofAddr+"/debug/pprof/heap", path); err != nil {
			b.Logf("heap profile: %v", err)
		} else {
			b.Logf("vs=%d: agent heap profile in %s", n, path)
		}
	}

	burst := 1000
	if v := os.Getenv("KUBELVS_BENCH_BURST"); v != "" {
		if burst, err = strconv.Atoi(v); err != nil || burst < 0 {
			b.Fatalf("KUBELVS_BENCH_BURST: %q", v)
		}
	}
	if burst > 0 {
		nice := 0
		if v := os.Getenv("KUBELVS_BENCH_AGENT_NICE"); v != "" {
			// A diagnosis: do slow changes after the burst wait for the
			// guest's CPU? With a negative nice value the agent goes
			// first, as a busy node's CPU goes first to a pod that
			// requests it.
			if nice, err = strconv.Atoi(v); err != nil {
				b.Fatalf("KUBELVS_BENCH_AGENT_NICE: %q", v)
			}
			if err := renice(agent.cmd.Process.Pid, nice); err != nil {
				b.Fatal(err)
			}
		}
		r.AfterBurst = afterBurst(b, c, h, sliceOf, burst, samples, agent.cmd.Process.Pid)
		r.AfterBurst.Nice = nice
	}

	if !last {
		// The next size starts from an empty API server and kernel.
		if r.AfterBurst != nil {
			n += burst
		}
		start = time.Now()
		parallel(b, n, func(i int) error {
			err := c.Delete(ctx, &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "default"}})
			return errors.Join(err, c.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-1", i), Namespace: "default"}}))
		})
		waitFor(b, 30*time.Minute, "VirtualServices removed from the kernel", func() error {
			if left := countVirtualServers(b, h); left != 0 {
				time.Sleep(time.Second)
				return fmt.Errorf("%d left", left)
			}
			return nil
		})
		b.Logf("vs=%d: deleted; kernel empty after %s", n, time.Since(start).Round(time.Millisecond))
	}
	agent.stop(b)
	logAgentErrors(b, agent.log)
	return r
}

// changes selects the changes in kubelvs_event_to_kernel_seconds:
// kind="change", or every event for an agent from before the label (a
// before/after comparison runs the benchmark against an older binary).
func changes(m metrics) []string {
	if m.has("kubelvs_event_to_kernel_seconds_count", `kind=`) {
		return []string{`kind="change"`}
	}
	return nil
}

// afterBurst writes burst more VirtualServices (and their slices) with
// parallel writers and, from the burst's first write on, takes samples
// single changes to the existing ones, timed from the API write to the
// kernel: a change must not wait behind the creates (issue 15).
func afterBurst(b *testing.B, c client.Client, h ipvs.Interface, sliceOf []*discoveryv1.EndpointSlice, burst, samples, agentPID int) *BurstScale {
	ctx := context.Background()
	n := len(sliceOf)
	r := &BurstScale{Creates: burst}
	first, err := scrape()
	if err != nil {
		b.Fatal(err)
	}
	agentCPU0, _ := cpuSeconds(agentPID)
	runq0 := runQueueSeconds(agentPID)
	busy0, total0 := guestCPU()
	start := time.Now()
	profiled := make(chan struct{})
	if dir := os.Getenv("KUBELVS_BENCH_PROFILE_DIR"); dir != "" {
		// Where the agent's CPU goes over the burst's first 20 s:
		// go tool pprof -top <file>
		go func() {
			defer close(profiled)
			path := filepath.Join(dir, fmt.Sprintf("agent-cpu-burst-%d.pb.gz", n))
			if err := fetch("http://"+scalePprofAddr+"/debug/pprof/profile?seconds=20", path); err != nil {
				b.Logf("CPU profile: %v", err)
				return
			}
			b.Logf("vs=%d: agent CPU profile over the burst in %s", n, path)
		}()
	} else {
		close(profiled)
	}
	traced := make(chan struct{})
	if secs := os.Getenv("KUBELVS_BENCH_TRACE_SECONDS"); secs != "" && os.Getenv("KUBELVS_BENCH_PROFILE_DIR") != "" {
		// An execution trace of the agent over the burst's first secs
		// seconds: what each slow change, and each holder of the syncer's
		// lock ahead of it, waited for (the syncer marks its lock waits
		// and holds as regions): go tool trace <file>, then "User-defined
		// regions".
		go func() {
			defer close(traced)
			path := filepath.Join(os.Getenv("KUBELVS_BENCH_PROFILE_DIR"), fmt.Sprintf("agent-trace-burst-%d.out", n))
			if err := fetch("http://"+scalePprofAddr+"/debug/pprof/trace?seconds="+secs, path); err != nil {
				b.Logf("execution trace: %v", err)
				return
			}
			b.Logf("vs=%d: agent execution trace over the burst in %s", n, path)
		}()
	} else {
		close(traced)
	}
	written := make(chan error, 1)
	go func() {
		next := make(chan int)
		errs := make(chan error, latWriters)
		var wg sync.WaitGroup
		for range latWriters {
			wg.Go(func() {
				var first error
				for i := range next {
					if err := c.Create(ctx, scaleSlice(i)); err != nil && first == nil {
						first = err
					}
					if err := c.Create(ctx, latVS(i)); err != nil && first == nil {
						first = err
					}
				}
				errs <- first
			})
		}
		for i := n; i < n+burst; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		close(errs)
		var err error
		for e := range errs {
			err = errors.Join(err, e)
		}
		written <- err
	}()
	// When the kernel holds the whole burst, polled every 2 s (a dump of
	// every virtual server costs CPU the agent needs).
	var programmed atomic.Int64 // nanoseconds after start; 0: not yet
	stopPoll := make(chan struct{})
	var pollErr atomic.Value
	go func() {
		for {
			select {
			case <-stopPoll:
				return
			case <-time.After(2 * time.Second):
			}
			vss, err := h.ListVirtualServers(ctx)
			if err != nil {
				pollErr.Store(err)
				return
			}
			got := 0
			for _, v := range vss {
				if isLatVIP(v.Address) {
					got++
				}
			}
			if got >= n+burst {
				programmed.Store(int64(time.Since(start)))
				return
			}
		}
	}()

	rng := rand.New(rand.NewPCG(15, uint64(n)))
	var api, event []float64
	multi := 0
	prev := first
	for k := range samples {
		i := rng.IntN(n)
		s := sliceOf[i]
		addr := latEndpoint(scaleSampleBase + 1<<20 + k)
		s.Endpoints[k%scaleRealServers] = readyEndpoint(addr)
		want := ipvs.RealKey{Address: addr, Port: 8080}
		key := ipvs.Key{Address: latVIP(i), Protocol: ipvs.TCP, Port: 80}
		t0 := time.Now()
		q0 := runQueueSeconds(agentPID)
		if err := c.Update(ctx, s); err != nil {
			b.Fatalf("burst sample %d: update %s: %v", k, s.Name, err)
		}
		waitRealServer(b, h, key, want, scalePoll, fmt.Sprintf("burst sample %d", k))
		api = append(api, float64(time.Since(t0).Microseconds())/1000)
		q := (runQueueSeconds(agentPID) - q0) * 1000
		if programmed.Load() == 0 {
			r.DuringProgramming++
		}
		time.Sleep(scaleGap / 4)
		cur, err := scrape()
		if err != nil {
			b.Fatal(err)
		}
		dn := cur.sum("kubelvs_event_to_kernel_seconds_count", changes(cur)...) - prev.sum("kubelvs_event_to_kernel_seconds_count", changes(prev)...)
		ds := cur.sum("kubelvs_event_to_kernel_seconds_sum", changes(cur)...) - prev.sum("kubelvs_event_to_kernel_seconds_sum", changes(prev)...)
		switch {
		case dn == 1:
			event = append(event, ds*1000)
			r.RunQueueMS = append(r.RunQueueMS, q)
		case dn > 1:
			multi++
		}
		prev = cur
	}
	if err := <-written; err != nil {
		b.Fatalf("burst of %d creates: %v", burst, err)
	}
	r.WrittenSeconds = time.Since(start).Seconds()
	if programmed.Load() == 0 {
		waitFor(b, 30*time.Minute, "the burst in the kernel", func() error {
			if programmed.Load() != 0 {
				return nil
			}
			if err, _ := pollErr.Load().(error); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Second)
			return errors.New("not yet")
		})
	}
	close(stopPoll)
	<-profiled
	<-traced
	r.ProgrammedSeconds = time.Duration(programmed.Load()).Seconds()
	r.APIToKernel, r.EventToKernel = summarize(api), summarize(event)
	// Where the time went: the agent's queue and syncs over the burst,
	// and how busy the guest's CPU was (kube-apiserver, etcd, the agent
	// and the writers share it).
	logAgentMetrics(b, "during the burst and its samples", first, prev)
	agentCPU1, _ := cpuSeconds(agentPID)
	busy1, total1 := guestCPU()
	wall := time.Since(start).Seconds()
	r.RunQueueSeconds = runQueueSeconds(agentPID) - runq0
	b.Logf("vs=%d: over the burst's %.1fs: agent CPU %.1fs (%.0f%% of one CPU), its threads runnable but not running %.1fs, guest CPUs busy %.0f%%",
		n, wall, agentCPU1-agentCPU0, 100*(agentCPU1-agentCPU0)/wall, r.RunQueueSeconds, 100*(busy1-busy0)/max(total1-total0, 1))
	if len(r.RunQueueMS) > 0 {
		slow := 0
		var wait []string
		for i, e := range event {
			if e > 50 {
				slow++
				wait = append(wait, fmt.Sprintf("%.0f ms (run queue %.0f ms)", e, r.RunQueueMS[i]))
			}
		}
		b.Logf("vs=%d: %d samples over 50 ms, with the agent's time runnable but not running over each: %s", n, slow, strings.Join(wait, ", "))
	}
	b.Logf("vs=%d: one EndpointSlice change right after a burst of %d creates, %d samples (%d while the burst was being programmed, which took %.1fs): event->kernel p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms (%d samples, %d left out: several changes timed in their window); API write->kernel p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms",
		n, burst, len(api), r.DuringProgramming, r.ProgrammedSeconds,
		r.EventToKernel.P50, r.EventToKernel.P90, r.EventToKernel.P99, r.EventToKernel.Max, len(event), multi,
		r.APIToKernel.P50, r.APIToKernel.P90, r.APIToKernel.P99, r.APIToKernel.Max)
	return r
}

// runQueueSeconds is how long the threads of process pid have waited on
// a run queue (runnable, not running), summed over its threads that are
// alive: the second field of /proc/PID/task/TID/schedstat, nanoseconds
// (CONFIG_SCHED_INFO, which the guest kernels have). 0 where it cannot
// be read.
func runQueueSeconds(pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			ns += v
		}
	}
	return ns / 1e9
}

// renice gives every thread of process pid the nice value nice; threads
// it starts later inherit it from the thread that starts them.
func renice(pid, nice int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("setpriority %d: %w", tid, err)
		}
	}
	return nil
}

// cpuSeconds is a process's user and system CPU time, in seconds.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th of them.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil // USER_HZ
}

// guestCPU returns the CPU time the guest's CPUs spent busy and in all,
// in ticks, from /proc/stat.
func guestCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		total += x
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy, total
}

// fetch saves what url serves into path.
func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// waitQueueEmpty waits until the agent's workqueue has been empty for five
// consecutive scrapes.
func waitQueueEmpty(tb testing.TB) {
	tb.Helper()
	settle := 0
	waitFor(tb, 30*time.Minute, "agent queue empty", func() error {
		m, err := scrape()
		if err != nil {
			return err
		}
		// Both lanes: kubelvs-agent and kubelvs-agent-changes.
		if !m.has("workqueue_depth", `name="kubelvs-agent`) {
			return errors.New("the agent exports no workqueue_depth for its queue")
		}
		if d := m.sum("workqueue_depth", `name="kubelvs-agent`); d != 0 {
			settle = 0
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("depth %v", d)
		}
		if settle++; settle < 5 {
			return fmt.Errorf("empty %d times", settle)
		}
		return nil
	})
}

func scaleSlice(i int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-1", i), Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range scaleRealServers {
		s.Endpoints = append(s.Endpoints, readyEndpoint(latEndpoint(i*scaleRealServers+j)))
	}
	return s
}

// procMemory reads a process's peak and current resident set (MiB).
func procMemory(pid int) (hwm, rss float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	kib := func(field string) (float64, error) {
		for l := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(l, field+":"); ok {
				n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				return n / 1024, err
			}
		}
		return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
	}
	if hwm, err = kib("VmHWM"); err != nil {
		return 0, 0, err
	}
	rss, err = kib("VmRSS")
	return hwm, rss, err
}

// mergeAgentScale stores r as the "agent" member of the size with r's
// number of virtual servers in the results file at path (adding the size,
// or creating the file, if needed), leaving everything else as it is: the
// other scenarios come from test/bench in the same `make bench` run.
func mergeAgentScale(path string, r AgentScale) error {
	doc := map[string]any{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(data, &doc); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var agent map[string]any
	if err := json.Unmarshal(raw, &agent); err != nil {
		return err
	}
	sizes, _ := doc["sizes"].([]any)
	found := false
	for _, s := range sizes {
		if m, ok := s.(map[string]any); ok && m["virtual_servers"] == float64(r.VirtualServers) {
			m["agent"] = agent
			found = true
		}
	}
	if !found {
		sizes = append(sizes, map[string]any{"virtual_servers": r.VirtualServers,
			"real_servers_per_virtual_server": r.RealServersPer, "agent": agent})
	}
	doc["sizes"] = sizes
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

func TestMergeAgentScale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	// No file yet: the size is created.
	if err := mergeAgentScale(path, AgentScale{VirtualServers: 1000, RealServersPer: 10, PeakRSSMiB: 50}); err != nil {
		t.Fatal(err)
	}
	// A file from test/bench: its figures stay, the agent's join the size.
	if err := os.WriteFile(path, []byte(`{"machine":{"guest":"uml"},"sizes":[{"virtual_servers":1000,"resync_nothing_changed":{"seconds":0.003}},{"virtual_servers":10000}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, r := range []AgentScale{{VirtualServers: 10000, PeakRSSMiB: 120}, {VirtualServers: 1000, PeakRSSMiB: 40}, {VirtualServers: 30000, PeakRSSMiB: 300}} {
		if err := mergeAgentScale(path, r); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Machine map[string]any `json:"machine"`
		Sizes   []struct {
			VirtualServers int                `json:"virtual_servers"`
			Resync         map[string]float64 `json:"resync_nothing_changed"`
			Agent          *AgentScale        `json:"agent"`
		} `json:"sizes"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Machine["guest"] != "uml" || len(got.Sizes) != 3 || got.Sizes[0].Resync["seconds"] != 0.003 {
		t.Fatalf("other figures not kept:\n%s", data)
	}
	for i, want := range []struct {
		vs  int
		rss float64
	}{{1000, 40}, {10000, 120}, {30000, 300}} {
		s := got.Sizes[i]
		if s.VirtualServers != want.vs || s.Agent == nil || s.Agent.PeakRSSMiB != want.rss {
			t.Errorf("size %d: %+v, want %d virtual servers with an agent peak RSS of %v", i, s, want.vs, want.rss)
		}
	}
}

func TestSummarize(t *testing.T) {
	var ms []float64
	for i := 100; i >= 1; i-- {
		ms = append(ms, float64(i))
	}
	s := summarize(ms)
	if s.P50 != 50 || s.P90 != 90 || s.P99 != 99 || s.Max != 100 || len(s.Samples) != 100 || s.Samples[0] != 100 {
		t.Fatalf("summarize(100..1) = p50 %v p90 %v p99 %v max %v, samples reordered: %v", s.P50, s.P90, s.P99, s.Max, s.Samples[0] != 100)
	}
}
