// Command cluster measures what the agents' status reports cost the API
// server at cluster scale (issue 15): one real kube-apiserver and etcd
// (envtest, KUBEBUILDER_ASSETS), and in this one process the controller
// role and N agent roles, each with its own node name, client, rate limit,
// informers, metrics registry and a fake kernel (no root, no guest). After
// every agent has programmed a workload of VirtualServices with their
// EndpointSlices, it makes single changes one at a time (a VirtualService
// spec change, an EndpointSlice change) and reports, per change, the API
// requests by verb and resource, the watch events delivered and their
// bytes (kube-apiserver's own metrics), and the time until the change is
// programmed on all N nodes; with kube-apiserver's CPU time and memory,
// and the size of a VirtualService.
//
// It measures both designs of the reports (-designs), each number of nodes
// in each design a run of its own, with its own kube-apiserver and etcd:
//
//   - status-nodes: every agent server-side-applies its own entry into
//     every VirtualService's status.nodes. A change is programmed on all
//     nodes when the controller says Programmed=True at the new generation
//     with all N entries programmed at it (for an EndpointSlice change,
//     each counting the new number of backends).
//   - node-reports: every agent writes one NodeReport (agent option
//     NodeReports), whose watermark says up to which resourceVersion it
//     has synced the VirtualServices; the controller folds the reports
//     into Programmed and counts the backends from the EndpointSlices. A
//     spec change is programmed on all nodes when the controller says
//     Programmed=True "programmed on N nodes" at the new generation; an
//     EndpointSlice change, when status.backends counts the new number and
//     every one of the N NodeReports has a watermark at or past the
//     resourceVersion of the slice's update (the program watches the
//     NodeReports for it). It fails the run if a VirtualService holds any
//     status.nodes entry.
//
// Per change the figures are taken from just before the write until no
// VirtualService or NodeReport event has been seen for -quiet; with
// NodeReports, then until every report has caught up with the newest
// VirtualService event (an agent writes its report within a second of a
// sync, but a watermark moved only by the controller's own status writes
// waits for the agent's idle tick, up to 30 s later), of which only the
// NodeReport requests and events count. What kube-apiserver does with
// nothing changing (its upkeep every 10 s, bookmarks to every watch about
// every minute), measured as rates over -baseline before the changes, is
// taken out. The program also reads every node's fake IPVS table when the
// status says programmed on all nodes, and records how many nodes' tables
// did not have the change yet (kernels_behind_at_programmed; 0 unless a
// status runs ahead of the kernels).
//
// It is a command rather than a test so that `go test ./...` never runs
// it: `make bench-cluster` does. Results are merged into
// bench/cluster-results.json (one record per design, number of nodes and
// kind of change; records without a design are status-nodes) and drawn
// into bench/cluster-results.svg, the designs side by side; -plot-only
// redraws the SVG from the JSON.
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
	designs     []string
	vs          int
	endpoints   int
	changes     int
	quiet       time.Duration
	baseline    time.Duration
	bootTimeout time.Duration
	// changeTimeout bounds one change's wait for Programmed on all
	// nodes, and for its events to stop.
	changeTimeout time.Duration
	out, svg      string
	crds          string
	commit        string
}

func main() {
	var o options
	var nodes, designs string
	plotOnly := flag.Bool("plot-only", false, "only redraw -svg from -out")
	flag.StringVar(&nodes, "nodes", "50,100,200", "numbers of simulated nodes, one run each per design")
	flag.StringVar(&designs, "designs", designStatusNodes+","+designNodeReports,
		"how the agents report, one run each per number of nodes: "+designStatusNodes+" (an entry per node in every VirtualService's status), "+designNodeReports+" (one NodeReport per node, agent option NodeReports)")
	flag.IntVar(&o.vs, "virtualservices", 1000, "VirtualServices, each with its own Service and EndpointSlice")
	flag.IntVar(&o.endpoints, "endpoints", 10, "ready endpoints per EndpointSlice")
	flag.IntVar(&o.changes, "changes", 10, "single changes of each kind measured per run")
	flag.DurationVar(&o.quiet, "quiet", 2*time.Second, "no VirtualService event for this long: a change has settled")
	flag.DurationVar(&o.baseline, "baseline", time.Minute,
		"a quiet period before the changes whose rates (kube-apiserver's upkeep, watch bookmarks) are taken out of every change's figures; 0: none")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 40*time.Minute, "how long every agent may take to program the workload")
	flag.DurationVar(&o.changeTimeout, "change-timeout", 5*time.Minute,
		"how long one change may take to be programmed on all nodes (status.nodes at 200 nodes takes longer than the default)")
	flag.StringVar(&o.out, "out", "bench/cluster-results.json", "results, merged by design, number of nodes and kind of change")
	flag.StringVar(&o.svg, "svg", "bench/cluster-results.svg", "the plot")
	flag.StringVar(&o.crds, "crds", "config/crd/bases", "the CRDs to install")
	flag.StringVar(&o.commit, "commit", "", "the commit measured (recorded in the results)")
	flag.BoolVar(&traceEvents, "trace", false, "print every VirtualService and NodeReport event the observer sees (stderr)")
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
	for f := range strings.SplitSeq(designs, ",") {
		d := strings.TrimSpace(f)
		if d != designStatusNodes && d != designNodeReports {
			log.Fatalf("-designs: %q is neither %s nor %s", f, designStatusNodes, designNodeReports)
		}
		if !slices.Contains(o.designs, d) {
			o.designs = append(o.designs, d)
		}
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
	var all []record
runs:
	for _, n := range o.nodes {
		for _, design := range o.designs {
			start := time.Now()
			recs, err := runOnce(ctx, o, n, design)
			wall := time.Since(start)
			for i := range recs {
				recs[i].WallSeconds = round(wall.Seconds(), 1)
			}
			if len(recs) > 0 {
				if err := merge(o.out, o, recs); err != nil {
					errs = append(errs, err)
				}
				printTable(recs)
				all = append(all, recs...)
			}
			log.Printf("N=%d %s: wall time %s", n, design, wall.Round(time.Second))
			if err != nil {
				errs = append(errs, fmt.Errorf("with %d nodes, %s: %w", n, design, err))
				if ctx.Err() != nil {
					break runs
				}
			}
		}
	}
	if len(o.designs) > 1 {
		printComparison(all, o.designs)
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

// The designs of the agents' status reports.
const (
	// designStatusNodes: every agent applies its own entry into every
	// VirtualService's status.nodes.
	designStatusNodes = "status-nodes"
	// designNodeReports: every agent writes one NodeReport (agent option
	// NodeReports), which the controller folds into the conditions.
	designNodeReports = "node-reports"
)

// designLabel names a design in the table and the plot.
func designLabel(d string) string {
	if d == designNodeReports {
		return "NodeReports"
	}
	return "status.nodes"
}

// results is the file: the machine and one record per design, N and kind.
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

// record is one kind of change at one number of nodes in one design;
// per-change figures are means over the changes, latencies are every
// sample.
type record struct {
	// Design is designStatusNodes or designNodeReports; records written
	// before there were two have none, and are status-nodes.
	Design          string `json:"design"`
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
	// WindowSeconds is the mean time from before a change until it
	// settled; the background (kube-apiserver's own requests and watch
	// events with nothing changing, measured over BackgroundSeconds) of
	// that long is taken out of the figures above. Records without them
	// include it.
	WindowSeconds float64 `json:"window_seconds,omitempty"`
	// TailSeconds (node-reports) is the mean time after a change settled
	// until every NodeReport caught up (the agents' idle tick); of it,
	// only the requests and events of NodeReports (and of VirtualServices,
	// if there were any) count, TailWritesPerChange of the writes.
	TailSeconds                 float64 `json:"tail_seconds,omitempty"`
	TailWritesPerChange         float64 `json:"tail_writes_per_change,omitempty"`
	BackgroundSeconds           float64 `json:"background_seconds,omitempty"`
	BackgroundRequestsPerSecond float64 `json:"background_requests_per_second,omitempty"`
	BackgroundEventsPerSecond   float64 `json:"background_watch_events_per_second,omitempty"`

	APIServerCPUPerChange float64 `json:"apiserver_cpu_seconds_per_change"`
	SimCPUPerChange       float64 `json:"simulation_cpu_seconds_per_change"`
	// ReconcilesPerChange counts the controller's reconciles of
	// VirtualServices per change (any VirtualService, every result): with
	// NodeReports each one folds the reports of every node. Records
	// written before it was measured have none.
	ReconcilesPerChange float64 `json:"controller_reconciles_per_change,omitempty"`
	APIServerRSSMiB     float64 `json:"apiserver_rss_mib"`
	APIServerPeakRSSMiB float64 `json:"apiserver_peak_rss_mib"`
	SimPeakRSSMiB       float64 `json:"simulation_peak_rss_mib"`
	VSBytes             int     `json:"virtualservice_bytes"`
	VSBytesNoManaged    int     `json:"virtualservice_bytes_without_managed_fields"`
	// ReportBytes is the size of one NodeReport (node-reports).
	ReportBytes int `json:"nodereport_bytes,omitempty"`
	// StatusNodeEntries counts the entries of status.nodes over all
	// VirtualServices after the changes (node-reports: must be 0).
	StatusNodeEntries int `json:"status_nodes_entries"`
	// KernelsBehind counts, over the changes, the nodes whose fake kernel
	// did not have the change yet when the status said programmed on all
	// nodes (0 unless the status runs ahead of the kernels).
	KernelsBehind    int     `json:"kernels_behind_at_programmed"`
	BootSeconds      float64 `json:"initial_programming_seconds"`
	BootAPIServerCPU float64 `json:"initial_programming_apiserver_cpu_seconds"`
	RoleErrors       int64   `json:"role_errors_logged"`
	WallSeconds      float64 `json:"wall_seconds"`
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

// readResults reads the results at path; records without a design are
// status-nodes (written before there were two).
func readResults(path string) (results, error) {
	var r results
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	for i := range r.Records {
		if r.Records[i].Design == "" {
			r.Records[i].Design = designStatusNodes
		}
	}
	return r, nil
}

// merge writes recs into path, replacing the records of the same design,
// N and kind.
func merge(path string, o options, recs []record) error {
	r, err := readResults(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	r.Machine = describeMachine()
	for _, n := range recs {
		r.Records = slices.DeleteFunc(r.Records, func(x record) bool {
			return x.Design == n.Design && x.Nodes == n.Nodes && x.Kind == n.Kind
		})
	}
	r.Records = append(r.Records, recs...)
	slices.SortFunc(r.Records, func(a, b record) int {
		if a.Design != b.Design {
			return strings.Compare(a.Design, b.Design)
		}
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
	fmt.Printf("\n%-5s %-12s %-14s %-44s %9s %9s %15s %9s %8s %9s\n", "N", "design", "change", "requests per change (verb resource)", "events", "MiB", "programmed p50/p99", "api CPU", "api RSS", "VS bytes")
	for _, r := range recs {
		fmt.Printf("%-5d %-12s %-14s %-44s %9.0f %9.1f %15s %8.2fs %7.0fM %9d\n", r.Nodes, designLabel(r.Design), r.Kind, requestSummary(r.RequestsPerChange),
			r.EventsTotal, r.BytesPerChange/(1<<20), fmt.Sprintf("%.0f/%.0f ms", r.ProgrammedMS.P50, r.ProgrammedMS.P99),
			r.APIServerCPUPerChange, r.APIServerRSSMiB, r.VSBytes)
	}
	fmt.Println()
}

// printComparison prints the designs side by side, one line per N and
// kind of change: per change, writes, watch events, MiB delivered,
// kube-apiserver CPU and the time to Programmed on all nodes (p50), and
// the size of a VirtualService.
func printComparison(recs []record, designs []string) {
	type key struct {
		nodes int
		kind  string
	}
	by := map[key]map[string]record{}
	var keys []key
	for _, r := range recs {
		k := key{r.Nodes, r.Kind}
		if by[k] == nil {
			by[k] = map[string]record{}
			keys = append(keys, k)
		}
		by[k][r.Design] = r
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.nodes != b.nodes {
			return a.nodes - b.nodes
		}
		return strings.Compare(b.kind, a.kind) // virtualservice first
	})
	cols := []struct {
		name string
		f    func(record) string
	}{
		{"writes", func(r record) string { return fmt.Sprintf("%.1f", r.WritesPerChange) }},
		{"events", func(r record) string { return fmt.Sprintf("%.0f", r.EventsTotal) }},
		{"MiB", func(r record) string { return fmt.Sprintf("%.2f", r.BytesPerChange/(1<<20)) }},
		{"api CPU s", func(r record) string { return fmt.Sprintf("%.2f", r.APIServerCPUPerChange) }},
		{"programmed p50 ms", func(r record) string { return fmt.Sprintf("%.0f", r.ProgrammedMS.P50) }},
		{"VS bytes", func(r record) string { return fmt.Sprint(r.VSBytes) }},
	}
	labels := make([]string, len(designs))
	for i, d := range designs {
		labels[i] = designLabel(d)
	}
	fmt.Printf("\nPer change, %s:\n%-5s %-14s", strings.Join(labels, " | "), "N", "change")
	for _, c := range cols {
		fmt.Printf(" %27s", c.name)
	}
	fmt.Println()
	for _, k := range keys {
		fmt.Printf("%-5d %-14s", k.nodes, k.kind)
		for _, c := range cols {
			vals := make([]string, len(designs))
			for i, d := range designs {
				vals[i] = "-"
				if r, ok := by[k][d]; ok {
					vals[i] = c.f(r)
				}
			}
			fmt.Printf(" %27s", strings.Join(vals, " | "))
		}
		fmt.Println()
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
