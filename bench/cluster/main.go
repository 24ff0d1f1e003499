// Command cluster measures what the agents' status reports cost the API
// server at cluster scale (issue 15): one real kube-apiserver and etcd
// (envtest, KUBEBUILDER_ASSETS), and in this one process the controller
// role and N agent roles, each with its own node name, client, rate limit,
// informers, metrics registry and a fake kernel (no root, no guest). After
// every agent has programmed a workload of VirtualServices with their
// EndpointSlices, it makes single changes one at a time (a VirtualService
// spec change, an EndpointSlice change) and reports, per change, the API
// requests by verb and resource, the watch events delivered and their
// bytes (kube-apiserver's own metrics), and the time until the controller
// says Programmed on all N nodes; with kube-apiserver's CPU time and
// memory, and the size of a VirtualService.
//
// It is a command rather than a test so that `go test ./...` never runs
// it: `make bench-cluster` does. Results are merged into
// bench/cluster-results.json (one record per number of nodes and kind of
// change) and drawn into bench/cluster-results.svg; -plot-only redraws the
// SVG from the JSON.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

type options struct {
	nodes       []int
	vs          int
	endpoints   int
	changes     int
	quiet       time.Duration
	bootTimeout time.Duration
	out, svg    string
	crds        string
	commit      string
}

func main() {
	var o options
	var nodes string
	plotOnly := flag.Bool("plot-only", false, "only redraw -svg from -out")
	flag.StringVar(&nodes, "nodes", "50,100,200", "numbers of simulated nodes, one run each")
	flag.IntVar(&o.vs, "virtualservices", 1000, "VirtualServices, each with its own Service and EndpointSlice")
	flag.IntVar(&o.endpoints, "endpoints", 10, "ready endpoints per EndpointSlice")
	flag.IntVar(&o.changes, "changes", 10, "single changes of each kind measured per run")
	flag.DurationVar(&o.quiet, "quiet", 2*time.Second, "no VirtualService event for this long: a change has settled")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 40*time.Minute, "how long every agent may take to program the workload")
	flag.StringVar(&o.out, "out", "bench/cluster-results.json", "results, merged by number of nodes and kind of change")
	flag.StringVar(&o.svg, "svg", "bench/cluster-results.svg", "the plot")
	flag.StringVar(&o.crds, "crds", "config/crd/bases", "the CRDs to install")
	flag.StringVar(&o.commit, "commit", "", "the commit measured (recorded in the results)")
	flag.Parse()
	log.SetFlags(log.Ltime)

	if *plotOnly {
		if err := plotFile(o.out, o.svg); err != nil {
			log.Fatal(err)
		}
		return
	}
	for f := range strings.SplitSeq(nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("-nodes: %q is not a number of nodes", f)
		}
		o.nodes = append(o.nodes, n)
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		log.Fatal("KUBEBUILDER_ASSETS is not set: run `make bench-cluster` (it builds kube-apiserver and etcd)")
	}
	// client-go's own log lines (client-side throttling, watch restarts)
	// would drown the table; the roles' errors are counted and the first
	// ones printed (errorSink).
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	ctrl.SetLogger(newErrorLogger())
	if err := raiseFileLimit(); err != nil {
		log.Printf("raise the file descriptor limit: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var errs []error
	for _, n := range o.nodes {
		start := time.Now()
		recs, err := runOnce(ctx, o, n)
		wall := time.Since(start)
		for i := range recs {
			recs[i].WallSeconds = round(wall.Seconds(), 1)
		}
		if len(recs) > 0 {
			if err := merge(o.out, o, recs); err != nil {
				errs = append(errs, err)
			}
			printTable(recs)
		}
		log.Printf("N=%d: wall time %s", n, wall.Round(time.Second))
		if err != nil {
			errs = append(errs, fmt.Errorf("with %d nodes: %w", n, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	if err := plotFile(o.out, o.svg); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		stop()
		log.Fatal(err) //nolint:gocritic // stop has run
	}
}

// raiseFileLimit lifts the soft limit on open files to the hard one, before
// kube-apiserver and etcd are started so that they inherit it: every agent
// holds its own connections.
func raiseFileLimit() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// results is the file: the machine and one record per N and kind.
type results struct {
	Machine machine  `json:"machine"`
	Records []record `json:"records"`
}

type machine struct {
	CPU        string `json:"cpu"`
	CPUs       int    `json:"cpus"`
	MemoryGiB  int    `json:"memory_gib"`
	Go         string `json:"go"`
	APIServer  string `json:"kube_apiserver"`
	Note       string `json:"note"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

// record is one kind of change at one number of nodes; per-change figures
// are means over the changes, latencies are every sample.
type record struct {
	Nodes           int    `json:"nodes"`
	Kind            string `json:"kind"`
	VirtualServices int    `json:"virtual_services"`
	Endpoints       int    `json:"endpoints_per_slice"`
	Changes         int    `json:"changes"`
	Commit          string `json:"commit,omitempty"`
	Date            string `json:"date"`

	RequestsPerChange map[string]float64 `json:"requests_per_change"`
	WritesPerChange   float64            `json:"writes_per_change"`
	ReadsPerChange    float64            `json:"reads_per_change"`
	EventsPerChange   map[string]float64 `json:"watch_events_per_change"`
	EventsTotal       float64            `json:"watch_events_total_per_change"`
	BytesPerChange    float64            `json:"watch_event_bytes_per_change"`
	ObserverEvents    float64            `json:"observer_events_per_change"`
	ProgrammedMS      latency            `json:"programmed_on_all_nodes"`

	APIServerCPUPerChange float64 `json:"apiserver_cpu_seconds_per_change"`
	SimCPUPerChange       float64 `json:"simulation_cpu_seconds_per_change"`
	APIServerRSSMiB       float64 `json:"apiserver_rss_mib"`
	APIServerPeakRSSMiB   float64 `json:"apiserver_peak_rss_mib"`
	SimPeakRSSMiB         float64 `json:"simulation_peak_rss_mib"`
	VSBytes               int     `json:"virtualservice_bytes"`
	VSBytesNoManaged      int     `json:"virtualservice_bytes_without_managed_fields"`
	BootSeconds           float64 `json:"initial_programming_seconds"`
	BootAPIServerCPU      float64 `json:"initial_programming_apiserver_cpu_seconds"`
	RoleErrors            int64   `json:"role_errors_logged"`
	WallSeconds           float64 `json:"wall_seconds"`
}

type latency struct {
	Samples []float64 `json:"samples_ms"`
	P50     float64   `json:"p50_ms"`
	P99     float64   `json:"p99_ms"`
}

func newLatency(samples []float64) latency {
	s := slices.Clone(samples)
	slices.Sort(s)
	return latency{Samples: samples, P50: rank(s, 0.50), P99: rank(s, 0.99)}
}

// rank is the nearest-rank percentile of sorted s (with 10 samples the p99
// is the largest).
func rank(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func round(x float64, digits int) float64 {
	f := 1.0
	for range digits {
		f *= 10
	}
	return float64(int64(x*f+0.5)) / f
}

// merge writes recs into path, replacing the records of the same N and kind.
func merge(path string, o options, recs []record) error {
	var r results
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	r.Machine = describeMachine()
	for _, n := range recs {
		r.Records = slices.DeleteFunc(r.Records, func(x record) bool { return x.Nodes == n.Nodes && x.Kind == n.Kind })
	}
	r.Records = append(r.Records, recs...)
	slices.SortFunc(r.Records, func(a, b record) int {
		if a.Nodes != b.Nodes {
			return a.Nodes - b.Nodes
		}
		return strings.Compare(a.Kind, b.Kind)
	})
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		Note: "kube-apiserver, etcd and the simulation (controller + N agents) on the same host"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGiB = (kb + 512*1024) / (1024 * 1024)
		}
	}
	m.APIServer = apiserverVersion()
	return m
}

// printTable prints one line per record.
func printTable(recs []record) {
	fmt.Printf("\n%-5s %-14s %-44s %9s %9s %15s %9s %8s %9s\n", "N", "change", "requests per change (verb resource)", "events", "MiB", "programmed p50/p99", "api CPU", "api RSS", "VS bytes")
	for _, r := range recs {
		fmt.Printf("%-5d %-14s %-44s %9.0f %9.1f %15s %8.2fs %7.0fM %9d\n", r.Nodes, r.Kind, requestSummary(r.RequestsPerChange),
			r.EventsTotal, r.BytesPerChange/(1<<20), fmt.Sprintf("%.0f/%.0f ms", r.ProgrammedMS.P50, r.ProgrammedMS.P99),
			r.APIServerCPUPerChange, r.APIServerRSSMiB, r.VSBytes)
	}
	fmt.Println()
}

// requestSummary renders the requests per change, largest first.
func requestSummary(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v >= 0.05 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.1f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
