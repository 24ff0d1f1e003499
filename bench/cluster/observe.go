package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// observer watches the VirtualServices and, when the nodes report in
// NodeReports, the NodeReports (watches of its own, whose events are
// counted and taken out of the figures), and tells when a condition on
// what it has seen first holds.
type observer struct {
	nodes   int
	design  string
	kernels []*ipvstest.Fake

	mu sync.Mutex
	seenState
	last   time.Time // of the last event
	events int64     // VirtualService events
	wait   *waiter
}

// seenState is what the observer has seen: the latest of each object.
type seenState struct {
	latest  map[types.NamespacedName]*lvsv1.VirtualService
	reports map[string]*lvsv1.NodeReport
	// maxSpecRV is the newest resourceVersion at which a VirtualService
	// was created or changed its generation: what the agents' reports
	// follow (a watermark moved only by status writes is reported at the
	// next sync or every few minutes, not per change).
	maxSpecRV    uint64
	reportEvents int64
}

type waiter struct {
	cond func(*seenState) bool
	done chan time.Time
}

func startObserver(ctx context.Context, cfg *rest.Config, nodes int, design string, kernels []*ipvstest.Fake) (*observer, error) {
	o := &observer{nodes: nodes, design: design, kernels: kernels, last: time.Now(), seenState: seenState{
		latest: map[types.NamespacedName]*lvsv1.VirtualService{}, reports: map[string]*lvsv1.NodeReport{},
	}}
	byObject := map[client.Object]cache.ByObject{&lvsv1.VirtualService{}: {}}
	if design == designNodeReports {
		byObject[&lvsv1.NodeReport{}] = cache.ByObject{}
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            roles.Scheme(),
		DefaultNamespaces: map[string]cache.Config{namespace: {}},
		ByObject:          byObject,
	})
	if err != nil {
		return nil, err
	}
	inf, err := c.GetInformer(ctx, &lvsv1.VirtualService{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.seen(obj) },
		UpdateFunc: func(_, obj any) { o.seen(obj) },
	}); err != nil {
		return nil, err
	}
	if design == designNodeReports {
		inf, err := c.GetInformer(ctx, &lvsv1.NodeReport{})
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { o.seen(obj) },
			UpdateFunc: func(_, obj any) { o.seen(obj) },
		}); err != nil {
			return nil, err
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("observer: cache not synced")
	}
	return o, nil
}

// traceEvents (-trace) prints every event the observer sees.
var traceEvents bool

func (o *observer) seen(obj any) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch x := obj.(type) {
	case *lvsv1.VirtualService:
		if traceEvents {
			c := meta.FindStatusCondition(x.Status.Conditions, lvsv1.ConditionProgrammed)
			msg := ""
			if c != nil {
				msg = string(c.Status) + " " + c.Message
			}
			fmt.Fprintf(os.Stderr, "trace %s vs %s rv=%s gen=%d entries=%d programmed=%q backends=%v\n", now.Format("15:04:05.000"), x.Name, x.ResourceVersion, x.Generation, len(x.Status.Nodes), msg, x.Status.Backends)
		}
		key := types.NamespacedName{Namespace: x.Namespace, Name: x.Name}
		if prev := o.latest[key]; prev == nil || prev.Generation != x.Generation {
			if rv, err := strconv.ParseUint(x.ResourceVersion, 10, 64); err == nil {
				o.maxSpecRV = max(o.maxSpecRV, rv)
			}
		}
		o.latest[key] = x
		o.events++
	case *lvsv1.NodeReport:
		if traceEvents {
			fmt.Fprintf(os.Stderr, "trace %s report %s rv=%s watermark=%s vs=%d\n", now.Format("15:04:05.000"), x.Name, x.ResourceVersion, x.Status.ResourceVersion, x.Status.VirtualServices)
		}
		o.reports[x.Name] = x
		o.reportEvents++
	default:
		return
	}
	o.last = now
	if w := o.wait; w != nil && w.cond(&o.seenState) {
		o.wait = nil
		w.done <- now
	}
}

// expect arms a waiter; cond is also tried on what is seen already. cond
// runs with the observer locked.
func (o *observer) expect(cond func(*seenState) bool) <-chan time.Time {
	w := &waiter{cond: cond, done: make(chan time.Time, 1)}
	o.mu.Lock()
	defer o.mu.Unlock()
	if cond(&o.seenState) {
		w.done <- time.Now()
		return w.done
	}
	o.wait = w
	return w.done
}

// recheck tries the armed waiter's condition again (after something it
// reads outside the observer changed).
func (o *observer) recheck() {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.wait; w != nil && w.cond(&o.seenState) {
		o.wait = nil
		w.done <- now
	}
}

func (o *observer) cancel() {
	o.mu.Lock()
	o.wait = nil
	o.mu.Unlock()
}

func (o *observer) get(key types.NamespacedName) *lvsv1.VirtualService {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest[key]
}

// counts returns the events seen so far (VirtualServices, NodeReports) and
// how long ago the last one was.
func (o *observer) counts() (vs, reports int64, since time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events, o.reportEvents, time.Since(o.last)
}

// reportsBehind counts the nodes whose NodeReport is missing or has a
// watermark below the newest spec change seen: they have a report still
// to write.
func (o *observer) reportsBehind() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nodes - o.watermarksAtLeast(o.maxSpecRV)
}

// statusNodeEntries counts the entries of status.nodes over all
// VirtualServices.
func (o *observer) statusNodeEntries() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, vs := range o.latest {
		n += len(vs.Status.Nodes)
	}
	return n
}

// progress counts the VirtualServices programmed on all nodes, and the
// node entries at their current generation (status-nodes) or the
// VirtualServices the NodeReports say their nodes program (node-reports).
func (o *observer) progress() (done, entries int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, vs := range o.latest {
		if o.programmedOnAll(vs, -1) {
			done++
		}
		for _, n := range vs.Status.Nodes {
			if n.ObservedGeneration == vs.Generation && n.Programmed {
				entries++
			}
		}
	}
	for _, r := range o.reports {
		entries += int(r.Status.VirtualServices)
	}
	return done, entries
}

// programmedOnAll is the condition of the design measured.
func (o *observer) programmedOnAll(vs *lvsv1.VirtualService, total int32) bool {
	if o.design == designNodeReports {
		return reportedOnAll(vs, o.nodes, total)
	}
	return programmedOnAll(vs, o.nodes, total)
}

// programmedOnAll (status-nodes): the controller's Programmed=True for the
// current generation, with all nodes' entries programmed at it, and
// (total >= 0) each reporting that many backends.
func programmedOnAll(vs *lvsv1.VirtualService, nodes int, total int32) bool {
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
	if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != vs.Generation || len(vs.Status.Nodes) != nodes {
		return false
	}
	for _, n := range vs.Status.Nodes {
		if n.ObservedGeneration != vs.Generation || !n.Programmed || n.Message != "" || (total >= 0 && n.Backends.Total != total) {
			return false
		}
	}
	return true
}

// reportedOnAll (node-reports): the controller's Programmed=True for the
// current generation, saying programmed on all nodes (pkg/vsstatus:
// "programmed on N nodes", N counting the live nodes that have a
// NodeReport, so a True of fewer nodes is not enough), no per-node entry,
// and (total >= 0) the controller's backend total.
func reportedOnAll(vs *lvsv1.VirtualService, nodes int, total int32) bool {
	c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionProgrammed)
	if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != vs.Generation || c.Reason != vsstatus.ReasonProgrammed {
		return false
	}
	var n int
	if _, err := fmt.Sscanf(c.Message, "programmed on %d nodes", &n); err != nil || n != nodes {
		return false
	}
	if len(vs.Status.Nodes) != 0 {
		return false
	}
	return total < 0 || (vs.Status.Backends != nil && vs.Status.Backends.Total == total)
}

// watermarksAtLeast counts the NodeReports whose watermark (compared as an
// unsigned integer) is rv or later.
func (s *seenState) watermarksAtLeast(rv uint64) int {
	n := 0
	for _, r := range s.reports {
		if w, err := strconv.ParseUint(r.Status.ResourceVersion, 10, 64); err == nil && w >= rv {
			n++
		}
	}
	return n
}

// kernelsBehind counts the fake kernels (one per node) where the virtual
// server at addr TCP:80 does not have ok: how many nodes had not
// programmed a change yet when the status said they had.
func (o *observer) kernelsBehind(addr string, ok func(ipvs.VirtualServer, []ipvs.RealServer) bool) int {
	k := ipvs.Key{Address: netip.MustParseAddr(addr), Protocol: ipvs.TCP, Port: 80}
	behind := 0
	for _, f := range o.kernels {
		vs, err := f.GetVirtualServer(context.Background(), k)
		if err != nil {
			behind++
			continue
		}
		rss, err := f.ListRealServers(context.Background(), k)
		if err != nil || !ok(vs, rss) {
			behind++
		}
	}
	return behind
}

// roleErrors counts the errors the roles logged; the first are printed.
var roleErrors atomic.Int64

const printedErrors = 20

type errorSink struct{ name string }

func newErrorLogger() logr.Logger { return logr.New(errorSink{}) }

func (errorSink) Init(logr.RuntimeInfo)            {}
func (errorSink) Enabled(int) bool                 { return false }
func (errorSink) Info(int, string, ...any)         {}
func (s errorSink) WithValues(...any) logr.LogSink { return s }
func (s errorSink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "." + name
	}
	return errorSink{name: name}
}

func (s errorSink) Error(err error, msg string, kv ...any) {
	n := roleErrors.Add(1)
	if n <= printedErrors {
		fmt.Fprintf(os.Stderr, "role error (%s): %s: %v %v\n", s.name, msg, err, kv)
	}
	if n == printedErrors {
		fmt.Fprintln(os.Stderr, "role error: further errors are only counted")
	}
}
