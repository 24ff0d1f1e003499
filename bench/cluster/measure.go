package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
)

const (
	kindVS    = "virtualservice"
	kindSlice = "endpointslice"
)

// sample is what is read before and after each change.
type sample struct {
	at       time.Time
	requests map[string]float64 // "VERB resource[/subresource]", then the code unless 2xx
	events   map[string]float64 // by resource
	bytes    map[string]float64 // by resource
	cpu      float64            // kube-apiserver's utime+stime, seconds
	simCPU   float64            // this process's
	observed int64              // the observer's own VirtualService events
	obsRep   int64              // and NodeReport events
	// reconciles of VirtualServices by the controller (in this process:
	// controller-runtime's registry), each a fold of every NodeReport.
	reconciles float64
}

// reconciles reads how many VirtualServices the controller reconciled so
// far (controller_runtime_reconcile_total, every result).
func reconciles() (float64, error) {
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return 0, fmt.Errorf("read the controller's metrics: %w", err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "virtualservice" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n, nil
}

func (c *cluster) sample(ctx context.Context) (sample, error) {
	s := sample{at: time.Now(), requests: map[string]float64{}, events: map[string]float64{}, bytes: map[string]float64{}}
	raw, err := c.kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return s, fmt.Errorf("read kube-apiserver /metrics: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, labels, v, ok := parseLine(sc.Text())
		if !ok {
			continue
		}
		res := labels["resource"]
		if res == "" {
			res = labels["kind"]
		}
		switch name {
		case "apiserver_request_total":
			if res == "" { // non-resource: this program's GET /metrics
				continue
			}
			if sub := labels["subresource"]; sub != "" {
				res += "/" + sub
			}
			key := labels["verb"] + " " + res
			if code := labels["code"]; !strings.HasPrefix(code, "2") {
				key += " " + code // refused or failed
			}
			s.requests[key] += v
		case "apiserver_watch_events_total":
			s.events[res] += v
		case "apiserver_watch_events_sizes_sum":
			s.bytes[res] += v
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if s.cpu, err = cpuSeconds(c.apiPID); err != nil {
		return s, err
	}
	if s.simCPU, err = cpuSeconds(os.Getpid()); err != nil {
		return s, err
	}
	if s.reconciles, err = reconciles(); err != nil {
		return s, err
	}
	s.observed, s.obsRep, _ = c.obs.counts()
	return s, nil
}

// parseLine reads one sample of Prometheus's text format:
// name{k="v",...} value.
func parseLine(l string) (name string, labels map[string]string, v float64, ok bool) {
	if l == "" || l[0] == '#' {
		return "", nil, 0, false
	}
	open, end := strings.IndexByte(l, '{'), strings.LastIndexByte(l, '}')
	if open < 0 || end < open {
		return "", nil, 0, false
	}
	name = l[:open]
	labels = map[string]string{}
	rest := l[open+1 : end]
	for rest != "" {
		k, after, found := strings.Cut(rest, `="`)
		if !found {
			return "", nil, 0, false
		}
		end := strings.IndexByte(after, '"')
		if end < 0 {
			return "", nil, 0, false
		}
		labels[k] = after[:end]
		rest = strings.TrimPrefix(after[end+1:], ",")
	}
	f := strings.Fields(l[end+1:])
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}

// delta is after - before.
func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// usage is what happened between two samples: requests by verb and
// resource, watch events and their bytes by resource (the observer's own
// taken out), CPU seconds, over seconds.
type usage struct {
	requests, events, bytes map[string]float64
	cpu, simCPU             float64
	reconciles              float64
	observed                float64 // the observer's events, taken out
	seconds                 float64
}

// between is the usage from before to after. The observer's watches are
// not part of the design: their events (all VirtualService and NodeReport
// events, each as large as the others of its kind) come out.
func between(before, after sample) usage {
	u := usage{
		requests: delta(before.requests, after.requests), events: delta(before.events, after.events),
		bytes: delta(before.bytes, after.bytes), cpu: after.cpu - before.cpu, simCPU: after.simCPU - before.simCPU,
		reconciles: after.reconciles - before.reconciles, seconds: after.at.Sub(before.at).Seconds(),
	}
	obs := float64(after.observed - before.observed)
	obsRep := float64(after.obsRep - before.obsRep)
	for res, o := range map[string]float64{"virtualservices": obs, "nodereports": obsRep} {
		if e := u.events[res]; e > 0 {
			u.bytes[res] *= (e - o) / e
			u.events[res] = e - o
		}
	}
	u.observed = obs + obsRep
	return u
}

// background is the rate of usage with nothing changing (kube-apiserver's
// own upkeep every 10 s, bookmarks to every watch about every minute), per
// second; nil: none measured.
type background struct {
	requests, events, bytes map[string]float64
	cpu, simCPU, reconciles float64
	seconds                 float64 // measured over
}

// measureBackground samples a quiet period of o.baseline.
func (c *cluster) measureBackground(ctx context.Context) (*background, error) {
	if c.o.baseline <= 0 {
		return nil, nil
	}
	if err := c.settle(ctx, true); err != nil {
		return nil, err
	}
	before, err := c.sample(ctx)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(c.o.baseline):
	}
	after, err := c.sample(ctx)
	if err != nil {
		return nil, err
	}
	u := between(before, after)
	if u.observed > 0 {
		log.Printf("%s: %.0f VirtualService or NodeReport events while measuring the background: it is overestimated", c.tag(), u.observed)
	}
	per := func(m map[string]float64) map[string]float64 {
		out := map[string]float64{}
		for k, v := range m {
			out[k] = v / u.seconds
		}
		return out
	}
	bg := &background{requests: per(u.requests), events: per(u.events), bytes: per(u.bytes),
		cpu: u.cpu / u.seconds, simCPU: u.simCPU / u.seconds, reconciles: u.reconciles / u.seconds, seconds: u.seconds}
	log.Printf("%s: background over %s: %.2f requests/s, %.2f watch events/s, kube-apiserver CPU %.3f s/s",
		c.tag(), c.o.baseline, sum(bg.requests), sum(bg.events), bg.cpu)
	return bg, nil
}

// keep drops all but the requests, events and bytes of the resources
// that wanted says.
func (u *usage) keep(wanted func(resource string) bool) {
	for k := range u.requests {
		if !wanted(resourceOf(k)) {
			delete(u.requests, k)
		}
	}
	for _, m := range []map[string]float64{u.events, u.bytes} {
		for k := range m {
			if !wanted(k) {
				delete(m, k)
			}
		}
	}
}

// add adds t's requests, events, bytes and reconciles to u (not its CPU
// or time).
func (u *usage) add(t usage) {
	for _, p := range []struct{ to, from map[string]float64 }{{u.requests, t.requests}, {u.events, t.events}, {u.bytes, t.bytes}} {
		for k, v := range p.from {
			p.to[k] += v
		}
	}
	u.reconciles += t.reconciles
	u.observed += t.observed
}

// minus takes the background of u's duration out of u.
func (u *usage) minus(bg *background) {
	if bg == nil {
		return
	}
	sub := func(m, rate map[string]float64) {
		for k, r := range rate {
			m[k] -= r * u.seconds
		}
	}
	sub(u.requests, bg.requests)
	sub(u.events, bg.events)
	sub(u.bytes, bg.bytes)
	u.cpu -= bg.cpu * u.seconds
	u.simCPU -= bg.simCPU * u.seconds
	u.reconciles -= bg.reconciles * u.seconds
}

// measure makes the changes of one kind, one at a time, each on another
// VirtualService, and turns them into a record.
func (c *cluster) measure(ctx context.Context, kind string) (record, error) {
	r := record{
		Design: c.design, Nodes: c.n, Kind: kind, VirtualServices: c.o.vs, Endpoints: c.o.endpoints, Changes: c.o.changes,
		Commit: c.o.commit, Date: time.Now().UTC().Format(time.RFC3339),
		RequestsPerChange: map[string]float64{}, EventsPerChange: map[string]float64{},
	}
	var ms []float64
	var cpu, simCPU, window, tail, tailWrites, recs float64
	var behind int
	for k := range c.o.changes {
		if err := c.settle(ctx, true); err != nil {
			return r, err
		}
		before, err := c.sample(ctx)
		if err != nil {
			return r, err
		}
		i := (k*97 + 13) % c.o.vs
		if kind == kindSlice {
			i = (k*89 + 501) % c.o.vs
		}
		took, kernelBehind, err := c.change(ctx, kind, i, k)
		behind += kernelBehind
		if err != nil {
			return r, fmt.Errorf("%s change %d: %w", kind, k, err)
		}
		if err := c.settle(ctx, false); err != nil {
			return r, err
		}
		after, err := c.sample(ctx)
		if err != nil {
			return r, err
		}
		ms = append(ms, float64(took.Microseconds())/1000)
		u := between(before, after)
		u.minus(c.bg)
		if c.design == designNodeReports {
			// Reports written late (settle) would be part of the change;
			// the rest of that long tail is not
			// (bookmarks to every watch, kube-apiserver's upkeep), nor its
			// CPU, which the background would drown.
			if err := c.settle(ctx, true); err != nil {
				return r, err
			}
			end, err := c.sample(ctx)
			if err != nil {
				return r, err
			}
			t := between(after, end)
			t.minus(c.bg)
			vsEvents := float64(end.observed - after.observed)
			t.keep(func(res string) bool {
				return res == "nodereports" || (vsEvents > 0 && strings.HasPrefix(res, "virtualservices"))
			})
			tailWrites += writes(t.requests)
			tail += t.seconds
			u.add(t)
		}
		req, ev, by := u.requests, u.events, u.bytes
		for key, v := range req {
			r.RequestsPerChange[key] += v / float64(c.o.changes)
		}
		var events, b float64
		for key, v := range ev {
			r.EventsPerChange[key] += v / float64(c.o.changes)
			events += v
		}
		for _, v := range by {
			b += v
		}
		r.EventsTotal += events / float64(c.o.changes)
		r.BytesPerChange += b / float64(c.o.changes)
		r.ObserverEvents += u.observed / float64(c.o.changes)
		cpu += u.cpu
		simCPU += u.simCPU
		recs += u.reconciles
		window += u.seconds
		log.Printf("%s %s change %d (%s): programmed on all nodes after %s; %.0f requests, %.0f watch events, %.1f MiB, %.0f controller reconciles",
			c.tag(), kind, k+1, vsName(i), took.Round(time.Millisecond), sum(req), events, b/(1<<20), u.reconciles)
	}
	r.WritesPerChange = writes(r.RequestsPerChange)
	r.ReadsPerChange = sum(r.RequestsPerChange) - r.WritesPerChange
	for key, v := range r.RequestsPerChange {
		r.RequestsPerChange[key] = round(v, 1)
	}
	for key, v := range r.EventsPerChange {
		r.EventsPerChange[key] = round(v, 1)
	}
	r.ReadsPerChange, r.WritesPerChange = round(r.ReadsPerChange, 1), round(r.WritesPerChange, 1)
	r.EventsTotal, r.BytesPerChange, r.ObserverEvents = round(r.EventsTotal, 1), round(r.BytesPerChange, 0), round(r.ObserverEvents, 1)
	r.ProgrammedMS = newLatency(ms)
	r.WindowSeconds = round(window/float64(c.o.changes), 1)
	r.TailSeconds = round(tail/float64(c.o.changes), 1)
	r.TailWritesPerChange = round(tailWrites/float64(c.o.changes), 1)
	if c.bg != nil {
		r.BackgroundSeconds = round(c.bg.seconds, 1)
		r.BackgroundEventsPerSecond = round(sum(c.bg.events), 2)
		r.BackgroundRequestsPerSecond = round(sum(c.bg.requests), 2)
	}
	r.APIServerCPUPerChange = round(cpu/float64(c.o.changes), 3)
	r.SimCPUPerChange = round(simCPU/float64(c.o.changes), 3)
	r.ReconcilesPerChange = round(recs/float64(c.o.changes), 1)
	var err error
	if r.APIServerRSSMiB, r.APIServerPeakRSSMiB, err = rss(c.apiPID); err != nil {
		return r, err
	}
	if _, r.SimPeakRSSMiB, err = rss(os.Getpid()); err != nil {
		return r, err
	}
	vsPath := []string{"/apis", lvsv1.GroupVersion.Group, lvsv1.GroupVersion.Version, "namespaces", namespace, "virtualservices", vsName(0)}
	if r.VSBytes, r.VSBytesNoManaged, err = c.objectSize(ctx, vsPath...); err != nil {
		return r, err
	}
	if c.design == designNodeReports {
		if r.ReportBytes, _, err = c.objectSize(ctx, "/apis", lvsv1.GroupVersion.Group, lvsv1.GroupVersion.Version, "nodereports", nodeName(0)); err != nil {
			return r, err
		}
	}
	r.KernelsBehind = behind
	r.StatusNodeEntries = c.obs.statusNodeEntries()
	r.RoleErrors = roleErrors.Load()
	if c.design == designNodeReports && r.StatusNodeEntries > 0 {
		return r, fmt.Errorf("with NodeReports, the VirtualServices hold %d entries of status.nodes", r.StatusNodeEntries)
	}
	return r, nil
}

func isRead(verb string) bool { return verb == "GET" || verb == "LIST" || verb == "WATCH" }

// writes sums the requests that are not reads.
func writes(requests map[string]float64) float64 {
	var w float64
	for key, v := range requests {
		if verb, _, _ := strings.Cut(key, " "); !isRead(verb) {
			w += v
		}
	}
	return w
}

// resourceOf is the resource of a request key ("VERB resource[/sub] [code]").
func resourceOf(key string) string {
	f := strings.Fields(key)
	if len(f) < 2 {
		return ""
	}
	res, _, _ := strings.Cut(f[1], "/")
	return res
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// settle waits until no VirtualService (or NodeReport) event has been
// seen for o.quiet and, with NodeReports and reports set, until every
// node's report has caught up with the newest spec change (a watermark
// moved only by status writes, e.g. the controller's Programmed=True, is
// not reported per change: at the agent's next sync, or every few
// minutes).
func (c *cluster) settle(ctx context.Context, reports bool) error {
	deadline := time.Now().Add(c.o.changeTimeout)
	for {
		_, _, since := c.obs.counts()
		behind := 0
		if reports && c.design == designNodeReports {
			behind = c.obs.reportsBehind()
		}
		if since >= c.o.quiet && behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("events did not stop for %s within %s (%d NodeReports behind)", c.o.quiet, c.o.changeTimeout, behind)
		}
		wait := c.o.quiet - since
		if wait <= 0 {
			wait = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// change makes change k of kind on VirtualService i and returns the time
// from the write until the observer sees it programmed on all nodes, and
// how many nodes' (fake) kernels did not have the change yet at that
// moment.
//
// status-nodes: the controller's Programmed=True at the new generation
// with all N entries of status.nodes programmed at it (for an
// EndpointSlice change, each counting the new number of backends).
//
// node-reports: a spec change is programmed on all nodes when the
// controller says Programmed=True "programmed on N nodes" at the new
// generation. An EndpointSlice change, when status.backends counts the
// new number of backends and every one of the N NodeReports has a
// watermark at or past the resourceVersion of the slice's update (the
// controller's counts come from the slices, not from the nodes).
func (c *cluster) change(ctx context.Context, kind string, i, k int) (time.Duration, int, error) {
	key := types.NamespacedName{Namespace: namespace, Name: vsName(i)}
	cur := c.obs.get(key)
	if cur == nil {
		return 0, 0, fmt.Errorf("%s not seen", key)
	}
	behind := 0 // written by the condition, read after done
	var done <-chan time.Time
	var write func() error
	switch kind {
	case kindVS:
		gen := cur.Generation
		sched := lvsv1.SchedulerWeightedRoundRobin
		if cur.Spec.Scheduler == sched {
			sched = lvsv1.SchedulerRoundRobin
		}
		kernelHas := func(v ipvs.VirtualServer, _ []ipvs.RealServer) bool { return v.Scheduler == string(sched) }
		done = c.obs.expect(func(s *seenState) bool {
			vs := s.latest[key]
			if vs == nil || vs.Generation <= gen || !c.obs.programmedOnAll(vs, -1) {
				return false
			}
			behind = c.obs.kernelsBehind(vip(i), kernelHas)
			return true
		})
		write = func() error {
			patch := fmt.Sprintf(`{"spec":{"scheduler":%q}}`, sched)
			return c.k8s.Patch(ctx, &lvsv1.VirtualService{ObjectMeta: cur.ObjectMeta}, client.RawPatch(types.MergePatchType, []byte(patch)))
		}
	case kindSlice:
		// Each change is on another slice, still as created: even changes
		// add an endpoint, odd ones remove one. A merge patch replaces the
		// list, so that no read precedes the write.
		count := c.o.endpoints + 1
		if k%2 == 1 {
			count = c.o.endpoints - 1
		}
		eps, err := json.Marshal(endpointsOf(i, count, c.n))
		if err != nil {
			return 0, 0, err
		}
		total := int32(count)
		// The slice's resourceVersion, once its update returned (0 before).
		var sliceRV atomic.Uint64
		kernelHas := func(_ ipvs.VirtualServer, rss []ipvs.RealServer) bool {
			n := 0
			for _, rs := range rss {
				if rs.Weight > 0 {
					n++
				}
			}
			return n == count
		}
		done = c.obs.expect(func(s *seenState) bool {
			vs := s.latest[key]
			if vs == nil || !c.obs.programmedOnAll(vs, total) {
				return false
			}
			if c.design == designNodeReports {
				if rv := sliceRV.Load(); rv == 0 || s.watermarksAtLeast(rv) < c.n {
					return false
				}
			}
			behind = c.obs.kernelsBehind(vip(i), kernelHas)
			return true
		})
		write = func() error {
			s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: sliceName(i), Namespace: namespace}}
			if err := c.k8s.Patch(ctx, s, client.RawPatch(types.MergePatchType, []byte(`{"endpoints":`+string(eps)+`}`))); err != nil {
				return err
			}
			rv, err := strconv.ParseUint(s.ResourceVersion, 10, 64)
			if err != nil {
				return fmt.Errorf("resourceVersion %q of the updated EndpointSlice: %w", s.ResourceVersion, err)
			}
			sliceRV.Store(rv)
			c.obs.recheck()
			return nil
		}
	}
	start := time.Now()
	if err := write(); err != nil {
		c.obs.cancel()
		return 0, 0, err
	}
	select {
	case at := <-done:
		return at.Sub(start), behind, nil
	case <-time.After(c.o.changeTimeout):
		c.obs.cancel()
		return 0, 0, fmt.Errorf("%s not programmed on all %d nodes within %s (-change-timeout)", key, c.n, c.o.changeTimeout)
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// objectSize is the size of the object at path as the API server sends it
// (JSON), and without its managedFields.
func (c *cluster) objectSize(ctx context.Context, path ...string) (full, noManaged int, err error) {
	raw, err := c.kube.Discovery().RESTClient().Get().AbsPath(path...).DoRaw(ctx)
	if err != nil {
		return 0, 0, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, 0, err
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "managedFields")
	}
	b, err := json.Marshal(m)
	return len(raw), len(b), err
}

type procStat struct {
	comm       string
	ppid       int
	utime, sys float64 // seconds
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is the state (field 3); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	st := procStat{comm: s[open+1 : end]}
	st.ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	stm, _ := strconv.ParseFloat(f[12], 64)
	const ticks = 100 // USER_HZ on Linux
	st.utime, st.sys = ut/ticks, stm/ticks
	return st, nil
}

func cpuSeconds(pid int) (float64, error) {
	st, err := readStat(pid)
	return st.utime + st.sys, err
}

// rss returns VmRSS and VmHWM in MiB.
func rss(pid int) (cur, peak float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		var kb float64
		if _, err := fmt.Sscanf(l, "VmRSS: %f kB", &kb); err == nil {
			cur = round(kb/1024, 0)
		}
		if _, err := fmt.Sscanf(l, "VmHWM: %f kB", &kb); err == nil {
			peak = round(kb/1024, 0)
		}
	}
	return cur, peak, nil
}

func apiserverVersion() string {
	out, err := exec.Command(os.Getenv("KUBEBUILDER_ASSETS")+"/kube-apiserver", "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
