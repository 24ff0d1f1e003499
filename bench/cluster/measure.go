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
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

const (
	kindVS    = "virtualservice"
	kindSlice = "endpointslice"
)

// sample is what is read before and after each change.
type sample struct {
	requests map[string]float64 // "VERB resource[/subresource]", then the code unless 2xx
	events   map[string]float64 // by resource
	bytes    map[string]float64 // by resource
	cpu      float64            // kube-apiserver's utime+stime, seconds
	simCPU   float64            // this process's
	observed int64              // the observer's own events
}

func (c *cluster) sample(ctx context.Context) (sample, error) {
	s := sample{requests: map[string]float64{}, events: map[string]float64{}, bytes: map[string]float64{}}
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
	s.observed, _ = c.obs.counts()
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

// measure makes the changes of one kind, one at a time, each on another
// VirtualService, and turns them into a record.
func (c *cluster) measure(ctx context.Context, kind string) (record, error) {
	r := record{
		Nodes: c.n, Kind: kind, VirtualServices: c.o.vs, Endpoints: c.o.endpoints, Changes: c.o.changes,
		Commit: c.o.commit, Date: time.Now().UTC().Format(time.RFC3339),
		RequestsPerChange: map[string]float64{}, EventsPerChange: map[string]float64{},
	}
	var ms []float64
	var cpu, simCPU float64
	for k := range c.o.changes {
		if err := c.settle(ctx); err != nil {
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
		took, err := c.change(ctx, kind, i, k)
		if err != nil {
			return r, fmt.Errorf("%s change %d: %w", kind, k, err)
		}
		if err := c.settle(ctx); err != nil {
			return r, err
		}
		after, err := c.sample(ctx)
		if err != nil {
			return r, err
		}
		ms = append(ms, float64(took.Microseconds())/1000)
		req := delta(before.requests, after.requests)
		ev := delta(before.events, after.events)
		by := delta(before.bytes, after.bytes)
		// The observer's watch is not part of the design: its events (all
		// VirtualService events, each as large as the others') come out.
		obs := float64(after.observed - before.observed)
		if vsEv := ev["virtualservices"]; vsEv > 0 {
			by["virtualservices"] *= (vsEv - obs) / vsEv
			ev["virtualservices"] = vsEv - obs
		}
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
		r.ObserverEvents += obs / float64(c.o.changes)
		cpu += after.cpu - before.cpu
		simCPU += after.simCPU - before.simCPU
		log.Printf("N=%d %s change %d (%s): programmed on all nodes after %s; %.0f requests, %.0f watch events, %.1f MiB",
			c.n, kind, k+1, vsName(i), took.Round(time.Millisecond), sum(req), events, b/(1<<20))
	}
	for key, v := range r.RequestsPerChange {
		r.RequestsPerChange[key] = round(v, 1)
		if verb, _, _ := strings.Cut(key, " "); isRead(verb) {
			r.ReadsPerChange += v
		} else {
			r.WritesPerChange += v
		}
	}
	for key, v := range r.EventsPerChange {
		r.EventsPerChange[key] = round(v, 1)
	}
	r.ReadsPerChange, r.WritesPerChange = round(r.ReadsPerChange, 1), round(r.WritesPerChange, 1)
	r.EventsTotal, r.BytesPerChange, r.ObserverEvents = round(r.EventsTotal, 1), round(r.BytesPerChange, 0), round(r.ObserverEvents, 1)
	r.ProgrammedMS = newLatency(ms)
	r.APIServerCPUPerChange = round(cpu/float64(c.o.changes), 3)
	r.SimCPUPerChange = round(simCPU/float64(c.o.changes), 3)
	var err error
	if r.APIServerRSSMiB, r.APIServerPeakRSSMiB, err = rss(c.apiPID); err != nil {
		return r, err
	}
	if _, r.SimPeakRSSMiB, err = rss(os.Getpid()); err != nil {
		return r, err
	}
	if r.VSBytes, r.VSBytesNoManaged, err = c.objectSize(ctx, vsName(0)); err != nil {
		return r, err
	}
	r.RoleErrors = roleErrors.Load()
	return r, nil
}

func isRead(verb string) bool { return verb == "GET" || verb == "LIST" || verb == "WATCH" }

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// settle waits until no VirtualService event has been seen for o.quiet.
func (c *cluster) settle(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		_, since := c.obs.counts()
		if since >= c.o.quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VirtualService events did not stop for %s within 5 minutes", c.o.quiet)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.o.quiet - since):
		}
	}
}

// change makes change k of kind on VirtualService i and returns the time
// from the write until the observer sees it programmed on all nodes.
func (c *cluster) change(ctx context.Context, kind string, i, k int) (time.Duration, error) {
	key := types.NamespacedName{Namespace: namespace, Name: vsName(i)}
	cur := c.obs.get(key)
	if cur == nil {
		return 0, fmt.Errorf("%s not seen", key)
	}
	var done <-chan time.Time
	var write func() error
	switch kind {
	case kindVS:
		gen := cur.Generation
		sched := lvsv1.SchedulerWeightedRoundRobin
		if cur.Spec.Scheduler == sched {
			sched = lvsv1.SchedulerRoundRobin
		}
		done = c.obs.expect(key, func(vs *lvsv1.VirtualService) bool {
			return vs.Generation > gen && programmedOnAll(vs, c.n, -1)
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
			return 0, err
		}
		total := int32(count)
		done = c.obs.expect(key, func(vs *lvsv1.VirtualService) bool { return programmedOnAll(vs, c.n, total) })
		write = func() error {
			s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: sliceName(i), Namespace: namespace}}
			return c.k8s.Patch(ctx, s, client.RawPatch(types.MergePatchType, []byte(`{"endpoints":`+string(eps)+`}`)))
		}
	}
	start := time.Now()
	if err := write(); err != nil {
		c.obs.cancel()
		return 0, err
	}
	select {
	case at := <-done:
		return at.Sub(start), nil
	case <-time.After(5 * time.Minute):
		c.obs.cancel()
		return 0, fmt.Errorf("%s not programmed on all %d nodes within 5 minutes", key, c.n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// objectSize is the size of a VirtualService as the API server sends it
// (JSON), and without its managedFields.
func (c *cluster) objectSize(ctx context.Context, name string) (full, noManaged int, err error) {
	raw, err := c.kube.Discovery().RESTClient().Get().
		AbsPath("/apis", lvsv1.GroupVersion.Group, lvsv1.GroupVersion.Version, "namespaces", namespace, "virtualservices", name).DoRaw(ctx)
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
