package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	moby "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracknl"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/pkg/syncer"
)

const (
	changeSamples = 200    // scenario 3: single changes measured per size
	flowsTotal    = 100000 // scenario 4: conntrack flows in the table
	dnsFlows      = 10000  // of which to the UDP service, spread over its real servers
	removedReal   = 3      // the UDP real server removed in scenario 4
	setMembers    = 20000  // scenario 5
)

// sizes are the numbers of virtual servers, KUBELVS_BENCH_SIZES
// (comma-separated) or 1,000 and 10,000.
func sizes() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("KUBELVS_BENCH_SIZES"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{1000, 10000}
	}
	return out
}

// node holds the kernel handles, opened once, with request counters.
type node struct {
	ipvs       *countIPVS
	sets       *countSets
	rawSets    *ipsetnl.Netlink
	vips       *netifnl.Netlink
	rules      *iptables.Rules
	ct         *conntracknl.Netlink
	moby       *moby.Handle
	nfct       *netlink.Handle
	addrEvents atomic.Int64
	flowsMade  map[int]bool // UDP real servers whose flows exist
	close      func()       // closes the handles (the namespace goes with them)
}

func openNode(b *testing.B) *node {
	ctx := context.Background()
	n := &node{flowsMade: map[int]bool{}}
	raw, err := ipvsnl.New()
	if err != nil {
		b.Fatal(err)
	}
	n.ipvs = &countIPVS{Interface: raw}
	if n.rawSets, err = ipsetnl.New(); err != nil {
		b.Fatal(err)
	}
	n.sets = &countSets{Interface: n.rawSets}
	if n.vips, err = netifnl.New(); err != nil {
		b.Fatal(err)
	}
	if err := n.vips.EnsureDevice(ctx); err != nil {
		b.Fatal(err)
	}
	if n.rules, err = iptables.New(ctx, n.sets, iptables.ExecRunner{}, netfilter.Config{}); err != nil {
		b.Fatal(err)
	}
	if _, err := n.rules.SyncRules(ctx, true); err != nil {
		b.Fatal(err)
	}
	if n.ct, err = conntracknl.New(); err != nil {
		b.Fatal(err)
	}
	if n.moby, err = moby.New(""); err != nil {
		b.Fatal(err)
	}
	if n.nfct, err = netlink.NewHandle(unix.NETLINK_NETFILTER); err != nil {
		b.Fatal(err)
	}
	// Every address added to or removed from any interface is an event:
	// the resync must see none.
	ch, done := make(chan netlink.AddrUpdate, 1024), make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ReceiveBufferSize: 16 << 20, ReceiveBufferForceSize: true}); err != nil {
		b.Fatal(err)
	}
	go func() {
		for range ch {
			n.addrEvents.Add(1)
		}
	}()
	var once sync.Once
	n.close = func() {
		once.Do(func() {
			// The namespace goes with the last handle: nothing else to undo.
			close(done)
			n.moby.Close()
			n.nfct.Close()
			n.ct.Close()
			n.vips.Close()
			n.rawSets.Close()
			raw.Close()
		})
	}
	b.Cleanup(n.close)
	return n
}

func (n *node) counts() counts {
	return counts{n.ipvs.reads.Load(), n.ipvs.writes.Load(), n.sets.reads.Load(), n.sets.writes.Load(), n.addrEvents.Load()}
}

// syncer starts an agent's syncer on the node: a fresh ownership record
// loaded from the kernel, the guard, kubelvs0, the netfilter members and
// conntrack, wired as pkg/roles wires them.
func (n *node) syncer(b *testing.B) *syncer.Syncer {
	ctx := context.Background()
	own, err := ownership.NewSetRecords(ctx, n.sets)
	if err != nil {
		b.Fatal(err)
	}
	return syncer.New(syncer.Kernel{
		IPVS: ownership.NewGuard(n.ipvs, own), Owns: own.Owns, VIPs: n.vips,
		Netfilter: n.rules, Conntrack: n.ct,
	}, clock.RealClock{}, nil)
}

// makeFlows fills the conntrack table up to flowsTotal UDP flows: 1,000 to
// each real server of the UDP service, the rest to other addresses.
func (n *node) makeFlows(b *testing.B) {
	per := dnsFlows / realsPerVS
	create := func(i int, vip, be netip.AddrPort) {
		client := net.IP{10, byte(100 + i>>16), byte(i >> 8), byte(i)}
		f := &netlink.ConntrackFlow{
			FamilyType: unix.AF_INET,
			Forward:    netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: client, DstIP: net.IP(vip.Addr().AsSlice()), SrcPort: 40000, DstPort: vip.Port()},
			Reverse:    netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IP(be.Addr().AsSlice()), DstIP: client, SrcPort: be.Port(), DstPort: 40000},
			TimeOut:    3600,
		}
		if err := n.nfct.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			b.Fatalf("create flow %d: %v", i, err)
		}
	}
	if len(n.flowsMade) == 0 {
		for i := dnsFlows; i < flowsTotal; i++ {
			other := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 203, byte(i >> 8), byte(i)}), 53)
			be := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 204, byte(i >> 8), byte(i)}), 53)
			create(i, other, be)
		}
	}
	for r := 0; r < realsPerVS; r++ {
		if n.flowsMade[r] {
			continue
		}
		rs := dnsReal(r)
		for i := r * per; i < (r+1)*per; i++ {
			create(i, dnsVIP, netip.AddrPortFrom(rs.Address, rs.Port))
		}
		n.flowsMade[r] = true
	}
}

func peakRSSReset() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// procStatusMiB reads a "VmHWM:   1234 kB" line.
func procStatusMiB(field string) float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func machine() Machine {
	var u unix.Utsname
	_ = unix.Uname(&u)
	m := Machine{
		Guest: os.Getenv("KUBELVS_BENCH_GUEST"), Kernel: unix.ByteSliceToString(u.Release[:]),
		CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Host: os.Getenv("KUBELVS_BENCH_HOST"),
		Date: time.Now().UTC().Format(time.RFC3339),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			kb, _ := strconv.Atoi(f[1])
			m.MemoryMiB = kb / 1024
		}
	}
	if out, err := exec.Command("ipvsadm", "--version").CombinedOutput(); err == nil {
		m.Ipvsadm = strings.TrimSpace(string(bytes.SplitN(out, []byte("\n"), 2)[0]))
	}
	return m
}

// BenchmarkScale runs the scenarios of issue 6 at each size and writes
// KUBELVS_BENCH_OUT (default ../../bench/results.json). Run it once
// (-test.benchtime 1x) in the guest: hack/bench.sh.
func BenchmarkScale(b *testing.B) {
	kerneltest.Require(b)
	out := os.Getenv("KUBELVS_BENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "results.json")
	}
	// Global (the initial namespace's); read-only in the others.
	if err := os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_max", []byte("400000"), 0); err != nil {
		b.Fatal(err)
	}
	res := Results{Machine: machine()}
	for _, size := range sizes() {
		b.Run(fmt.Sprintf("vs=%d", size), func(b *testing.B) {
			sz := runSize(b, size)
			res.Sizes = append(res.Sizes, sz)
			if err := res.write(out); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(sz.Cold["kubelvs"].Seconds, "s-cold-kubelvs")
			b.ReportMetric(sz.Cold["ipvsadm-R"].Seconds, "s-cold-ipvsadm-R")
			b.ReportMetric(sz.Cold["kube-proxy-pattern"].Seconds, "s-cold-kube-proxy")
			b.ReportMetric(sz.Resync.Seconds*1000, "ms-resync")
			b.ReportMetric(sz.Change.P99, "ms-change-p99")
			b.ReportMetric(sz.Conntrack.TotalMs, "ms-conntrack")
			b.ReportMetric(sz.IPSet.Seconds*1000, "ms-ipset")
			b.ReportMetric(sz.Memory.PeakRSSMiB, "MiB-peak-rss")
		})
	}
}

func runSize(b *testing.B, size int) Size {
	svcs := ruleSet(size)
	sz := Size{VirtualServers: size, RealServersPer: realsPerVS, Cold: map[string]Timing{}}
	logf := func(format string, a ...any) { b.Logf("%d VS: "+format, append([]any{size}, a...)...) }

	// Scenario 1, baselines (KUBELVS_BENCH_BASELINES=off skips them and
	// the IPVS-only cold sync, for a quick run of the other scenarios).
	if os.Getenv("KUBELVS_BENCH_BASELINES") == "off" {
		kerneltest.InFreshNetns(b, func() { runKubelvs(b, svcs, &sz, logf) })
		return sz
	}
	kerneltest.InFreshNetns(b, func() {
		h, err := moby.New("")
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		start := time.Now()
		reqs, err := kerneltest.KubeProxyPattern(h, svcs)
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		sz.Cold["kube-proxy-pattern"] = Timing{Seconds: d.Seconds(), counts: counts{IPVSWrites: int64(size * (1 + realsPerVS)), IPVSReads: int64(reqs - size*(1+realsPerVS))}}
		logf("kube-proxy pattern %v (%d requests)", d, reqs)
	})
	kerneltest.InFreshNetns(b, func() {
		d, err := ipvsadmRestore(svcs)
		if err != nil {
			b.Fatal(err)
		}
		sz.Cold["ipvsadm-R"] = Timing{Seconds: d.Seconds(), Note: "one exec, whole rule set on stdin"}
		logf("ipvsadm -R %v", d)
	})
	kerneltest.InFreshNetns(b, func() { runKubelvsCold(b, svcs, &sz, logf) })
	// The node-state run and what follows get a namespace of their own
	// too: re-adding real servers right after 110,000 were deleted in the
	// same namespace walks the kernel's trash list on every add (that
	// made this figure 215 s instead of about a minute at 10,000).
	kerneltest.InFreshNetns(b, func() { runKubelvs(b, svcs, &sz, logf) })
	return sz
}

// runKubelvsCold is scenario 1 for kubelvs on the identical IPVS rule set:
// a new agent's syncer adopts (reads the kernel) and syncs everything.
func runKubelvsCold(b *testing.B, svcs []ipvs.Service, sz *Size, logf func(string, ...any)) {
	ctx := context.Background()
	n := openNode(b)
	defer n.close()
	c0, start := n.counts(), time.Now()
	s := n.syncer(b)
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := s.SyncAll(ctx, groups(svcs, false)); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	sz.Cold["kubelvs"] = Timing{Seconds: d.Seconds(), counts: n.counts().sub(c0), Note: "Adopt + SyncAll, IPVS rule set only (+ ownership ipset)"}
	logf("kubelvs cold %v %+v", d, sz.Cold["kubelvs"].counts)
}

func runKubelvs(b *testing.B, svcs []ipvs.Service, sz *Size, logf func(string, ...any)) {
	ctx := context.Background()
	n := openNode(b)
	size := len(svcs)
	var d time.Duration

	// The agent's whole node state: also a VIP on kubelvs0 and a
	// masquerade ipset member per virtual server, and the UDP service of
	// scenario 4. Memory is measured from here.
	runtime.GC()
	debug.FreeOSMemory()
	peakRSSReset()
	gs := append(groups(svcs, true), dnsGroup())
	c0, start := n.counts(), time.Now()
	s := n.syncer(b)
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := s.SyncAll(ctx, gs); err != nil {
		b.Fatal(err)
	}
	d = time.Since(start)
	sz.Cold["kubelvs-node"] = Timing{Seconds: d.Seconds(), counts: n.counts().sub(c0), Note: "Adopt + SyncAll, with a VIP on kubelvs0 and a masquerade ipset member per virtual server"}
	logf("kubelvs cold, node state %v %+v", d, sz.Cold["kubelvs-node"].counts)

	// Scenario 2: nothing changed.
	time.Sleep(200 * time.Millisecond) // let address events of the cold sync arrive
	c0, start = n.counts(), time.Now()
	if _, err := s.SyncAll(ctx, gs); err != nil {
		b.Fatal(err)
	}
	d = time.Since(start)
	time.Sleep(200 * time.Millisecond)
	sz.Resync = Timing{Seconds: d.Seconds(), counts: n.counts().sub(c0), Note: "SyncAll of the same groups"}
	logf("resync %v %+v", d, sz.Resync.counts)

	// Scenario 3: one EndpointSlice change at a time: one group's real
	// server replaced by a new address (one added, one draining).
	lat := make([]time.Duration, 0, changeSamples)
	c0 = n.counts()
	for k := 0; k < changeSamples; k++ {
		j := (k*7919 + 13) % size
		g := gs[j]
		reals := append([]desired.Real(nil), g.Services[0].Reals...)
		r := k % len(reals)
		reals[r].Address = netip.AddrFrom4([4]byte{10, 205, byte(k >> 8), byte(k)})
		g.Services = []desired.Service{{VirtualServer: g.Services[0].VirtualServer, Reals: reals}}
		gs[j] = g
		start = time.Now()
		if _, err := s.SyncGroup(ctx, g); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	sz.Change = latency(lat)
	sz.Change.Writes = float64(n.counts().sub(c0).Writes()) / changeSamples
	sz.Change.Samples = sz.Change.Samples[:min(len(sz.Change.Samples), changeSamples)]
	logf("one change p50 %.2f ms p99 %.2f ms, %.1f writes each", sz.Change.P50, sz.Change.P99, sz.Change.Writes)

	// Scenario 6: memory, with everything programmed and the changes done.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sz.Memory = Memory{
		PeakRSSMiB: procStatusMiB("VmHWM"), HeapInuseMiB: float64(ms.HeapInuse) / (1 << 20), SysMiB: float64(ms.Sys) / (1 << 20),
		Note: "the benchmark process (syncer, desired groups, kernel handles) from building the groups through the cold sync, resync and changes; no API client or informer caches",
	}
	logf("memory %+v", sz.Memory)

	// Scenario 3 again, while the agent's periodic repair pass (Verify:
	// a dump of every virtual server and its real servers, the netfilter
	// chains rewritten, kubelvs0 and the ipsets compared with the kernel)
	// runs: the same kind of change every 5 ms until it ends. Verify runs
	// on this goroutine, whose thread is in the benchmark's namespace (it
	// execs iptables); the changes only use the netlink handles.
	lat = lat[:0]
	stop, changed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(changed)
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			j := (k*7919 + 29) % size
			g := gs[j]
			reals := append([]desired.Real(nil), g.Services[0].Reals...)
			reals[k%len(reals)].Address = netip.AddrFrom4([4]byte{10, 207, byte(k >> 8), byte(k)})
			g.Services = []desired.Service{{VirtualServer: g.Services[0].VirtualServer, Reals: reals}}
			gs[j] = g
			t := time.Now()
			if _, err := s.SyncGroup(ctx, g); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	start = time.Now()
	_, err := s.Verify(ctx)
	d = time.Since(start)
	close(stop)
	<-changed
	if err != nil {
		b.Fatal(err)
	}
	sz.Verify = Timing{Seconds: d.Seconds(), Note: "Verify of the whole node state, netfilter rules included, with changes going on"}
	sz.ChangeDuringVerify = latency(lat)
	logf("verify %v; %d changes during it: p50 %.2f ms p99 %.2f ms max %.2f ms", d, len(lat),
		sz.ChangeDuringVerify.P50, sz.ChangeDuringVerify.P99, sz.ChangeDuringVerify.Max)

	// Scenario 4: one UDP real server leaves while 100,000 flows exist.
	n.makeFlows(b)
	start = time.Now()
	if _, err := s.SyncGroup(ctx, dnsGroup(removedReal)); err != nil {
		b.Fatal(err)
	}
	synced := time.Since(start)
	deleted := s.FlushNow(ctx)
	total := time.Since(start)
	n.flowsMade[removedReal] = false
	sz.Conntrack = Flush{Flows: flowsTotal, Deleted: deleted, RealServers: 1,
		SyncMs: float64(synced.Microseconds()) / 1000, FlushMs: float64((total - synced).Microseconds()) / 1000, TotalMs: float64(total.Microseconds()) / 1000}
	logf("conntrack %+v", sz.Conntrack)
	if deleted != dnsFlows/realsPerVS {
		b.Errorf("deleted %d flows, want %d", deleted, dnsFlows/realsPerVS)
	}

	// Scenario 5: an owned ipset of 20,000 members replaced atomically.
	set := ipset.Set{Name: "KUBELVS-BENCH", Type: ipset.HashIPPort, Family: ipset.IPv4}
	es := make([]ipset.Entry, setMembers)
	for i := range es {
		es[i] = ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 206, byte(i >> 8), byte(i)}), Protocol: ipset.ProtoTCP, Port: uint16(80 + i%2)}
	}
	if err := n.rawSets.EnsureSet(ctx, set); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	if err := n.rawSets.Replace(ctx, set, es); err != nil {
		b.Fatal(err)
	}
	sz.IPSet = Timing{Seconds: time.Since(start).Seconds(), Note: "Replace: build a scratch set, swap, destroy"}
	if got, err := n.rawSets.ListEntries(ctx, set.Name); err != nil || len(got) != setMembers {
		b.Fatalf("ipset holds %d members (%v)", len(got), err)
	}
	if err := n.rawSets.DestroySet(ctx, set.Name); err != nil {
		b.Fatal(err)
	}
	logf("ipset replace %.3f s", sz.IPSet.Seconds)

	// Leave the table as found: the agent's cleanup path.
	if _, err := s.SyncAll(ctx, nil); err != nil {
		b.Fatal(err)
	}
}
