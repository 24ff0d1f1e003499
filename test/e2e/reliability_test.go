//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	nethttp "net/http"
	"net/netip"
	"os"
	"os/exec"
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
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/netif/netifnl"
	"github.com/kubelvs/kubelvs/pkg/ownership"
	"github.com/kubelvs/kubelvs/test/e2e/echo"
)

// foreignAtStart are the foreign objects' dump lines when TestReliability
// added them (nil when it did not run).
var foreignAtStart []string

// TestReliability runs what only the local driver can: it kills the agent
// process and reads the node's kernel directly. Its scenarios run before
// TestE2E (file order), which ends with the uninstall.
func TestReliability(t *testing.T) {
	l, ok := cluster.(*local)
	if !ok {
		t.Skip("needs the local driver: it kills the agent process and reads the kernel directly")
	}

	// Other programs' objects (100 IPVS services, ipsets, iptables rules)
	// from here to the end of the suite: uninstall-removes-only-what-
	// kubelvs-owns finds them byte-identical after everything.
	l.NodeKernel(t, "add-foreign")
	foreignAtStart = echo.Foreign(l.NodeKernel(t, "dump"))

	t.Run("churn-rolling-backends-under-tcp-and-udp-loses-nothing", func(t *testing.T) { churn(t, l) })
	t.Run("crash-mid-sync-converges-and-keeps-the-unchanged", func(t *testing.T) { crashMidSync(t, l) })
	t.Run("api-server-outage-keeps-traffic-and-recovers", func(t *testing.T) { apiOutage(t, l) })
	t.Run("manager-cleanup-after-a-kill-removes-only-ours", func(t *testing.T) { cleanupAfterKill(t, l) })
}

// cleanupAfterKill: the agent is SIGKILLed (as when a node's agent is
// removed by force); traffic keeps flowing on what it left in the kernel;
// `manager cleanup` then removes every kubelvs object on the node and
// nothing else (the 100 foreign IPVS services, their ipsets and iptables
// rules stay byte-identical), and a new agent programs it all again.
func cleanupAfterKill(t *testing.T, l *local) {
	vip := testVIP(14)
	bs := l.Backends(t, "cleanup", 2)
	l.SetEndpoints(t, "cleanup", bs)
	cl := l.Client(t)
	vs := webVS(l, "cleanup", "cleanup", vip)
	// With sourceRanges, the allow-list ipsets and the drop rule exist too.
	vs.Spec.SourceRanges = []lvsv1.CIDR{lvsv1.CIDR(netip.PrefixFrom(cl.Addr(), 32).String())}
	create(t, l, vs)
	addr := netip.AddrPortFrom(vip, 80)
	serving(t, cl, addr, bs)

	before := l.NodeKernel(t, "dump")
	owned := echo.Owned(before)
	if key := "tcp " + addr.String(); !owned[key] {
		t.Fatalf("kubelvs's ownership ipsets do not record %s:\n%s", key, strings.Join(before, "\n"))
	}
	if !slices.ContainsFunc(before, func(l string) bool { return strings.Contains(l, "-j KUBELVS-") }) {
		t.Fatalf("no kubelvs rule in the node's kernel:\n%s", strings.Join(before, "\n"))
	}
	if err := l.Agent.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Greet(addr); err != nil {
		t.Fatalf("traffic stopped with the agent killed: %v", err)
	}
	out, err := exec.Command(l.Env.Bin, "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("manager cleanup: %v\n%s", err, out)
	}
	t.Logf("manager cleanup:\n%s", out)
	after := l.NodeKernel(t, "dump")
	if left := echo.Leftovers(owned, after); len(left) > 0 {
		t.Errorf("kubelvs objects left after manager cleanup:\n%s", strings.Join(left, "\n"))
	}
	if got := echo.Foreign(after); !slices.Equal(got, foreignAtStart) {
		t.Errorf("manager cleanup changed other programs' objects:\n--- at the start\n%s\n--- after\n%s",
			strings.Join(foreignAtStart, "\n"), strings.Join(got, "\n"))
	}
	fmt.Fprintf(os.Stderr, "e2e: manager cleanup after a SIGKILL removed %d kubelvs virtual servers and left %d lines of foreign objects byte-identical\n",
		len(owned), len(foreignAtStart))

	start := time.Now()
	if err := l.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := l.AgentReady(); err != nil {
		t.Fatalf("%v\n%s", err, l.Agent.Tail())
	}
	serving(t, cl, addr, bs)
	timing("manager cleanup to a new agent serving again", start)
}

// churn replaces backends the way a Deployment's rolling update does (a
// new endpoint ready; the oldest terminating, still serving; then gone and
// its process stopped two seconds later) for KUBELVS_CHURN_SECONDS (60;
// `make soak` runs 300) under a steady stream of new TCP connections and
// UDP requests from reused source ports: not one may fail. The agent's
// CPU time and resident memory are logged along the way.
//
// A UDP request is a datagram and, if no answer comes within 500 ms, one
// retransmission from the same source port, as resolvers do. The first
// datagram of a flow whose real server was just removed can be lost: IPVS
// (expire_nodest_conn) drops a datagram that arrives between the real
// server's removal and the flush of its conntrack flow, so that the next
// one is scheduled afresh rather than sent to a server that may be gone.
// Those lost datagrams are counted and reported; a request whose
// retransmission also fails is a failure.
func churn(t *testing.T, l *local) {
	dur := time.Duration(envInt(t, "KUBELVS_CHURN_SECONDS", 60)) * time.Second
	ctx := context.Background()
	vip := testVIP(12)
	const svc = "churn"
	type member struct {
		b           Backend
		terminating bool
	}
	var pool []member
	round := 0
	fresh := func() Backend {
		round++
		return l.Backends(t, fmt.Sprintf("%s%d", svc, round), 1)[0]
	}
	for range 3 {
		pool = append(pool, member{b: fresh()})
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-e2e", Namespace: l.Namespace(), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
	}
	var evMu sync.Mutex
	var events []string
	event := func(f string, a ...any) {
		evMu.Lock()
		defer evMu.Unlock()
		events = append(events, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(f, a...))
	}
	write := func() {
		t.Helper()
		var st []string
		for _, m := range pool {
			st = append(st, fmt.Sprintf("%s(%s,term=%t)", m.b.Name, m.b.Addr, m.terminating))
		}
		event("slice: %s", strings.Join(st, " "))
		slice.Endpoints = nil
		for _, m := range pool {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{m.b.Addr.String()}, NodeName: ptr.To(nodeName),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!m.terminating), Serving: ptr.To(true), Terminating: ptr.To(m.terminating)}})
		}
		var err error
		if slice.ResourceVersion == "" {
			err = l.API().Create(ctx, slice)
		} else {
			err = l.API().Update(ctx, slice)
		}
		if err != nil {
			t.Fatalf("EndpointSlice: %v", err)
		}
	}
	write()
	t.Cleanup(func() { _ = l.API().Delete(context.Background(), slice) })
	create(t, l, webVS(l, svc, svc, vip))
	cl := l.Client(t)
	http, dns := netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(vip, 53)
	var first []Backend
	for _, m := range pool {
		first = append(first, m.b)
	}
	serving(t, cl, http, first)
	eventually(t, 20*time.Second, "UDP answers", func() error { _, err := cl.Ask(dns, 43000); return err })

	// Traffic: new TCP connections back to back, and UDP requests from four
	// source ports in turn (a resolver's sockets: their flows must follow
	// the backends, not stay with one that left).
	tr := startTraffic(cl.(*nsClient), vip, 43000, 0, 10*time.Millisecond)

	// The agent's CPU and memory, every 10 s.
	pid := l.Agent.Pid()
	cpu0, _ := procCPU(pid)
	start := time.Now()
	sample := func() string {
		cpu, rss := procCPU(pid)
		return fmt.Sprintf("t=%3.0fs agent cpu=%5.2fs rss=%5.1fMiB %s",
			time.Since(start).Seconds(), cpu-cpu0, float64(rss)/(1<<20), tr)
	}
	var samples []string
	nextSample := start.Add(10 * time.Second)
	replaced := 0
	type leaving struct {
		b  Backend
		at time.Time
	}
	var stopLater []leaving
	for time.Since(start) < dur {
		// A new pod is ready.
		pool = append(pool, member{b: fresh()})
		write()
		time.Sleep(time.Second)
		// The oldest is terminating: still serving, no new connections.
		pool[0].terminating = true
		write()
		time.Sleep(time.Second)
		// It is gone; its process stops two seconds later (a preStop
		// grace, as pods behind load balancers have).
		stopLater = append(stopLater, leaving{b: pool[0].b, at: time.Now().Add(2 * time.Second)})
		pool = pool[1:]
		write()
		replaced++
		for len(stopLater) > 0 && time.Now().After(stopLater[0].at) {
			event("stop %s", stopLater[0].b.Name)
			l.stopBackend(t, stopLater[0].b)
			stopLater = stopLater[1:]
		}
		if time.Now().After(nextSample) {
			samples = append(samples, sample())
			nextSample = nextSample.Add(10 * time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // the last removal's flush and drain
	tr.Stop()
	samples = append(samples, sample())
	t.Logf("churn for %s: %d backends replaced\n  %s", dur, replaced, strings.Join(samples, "\n  "))
	fmt.Fprintf(os.Stderr, "e2e: churn: %s, %d backends replaced: %s\n", dur, replaced, tr)
	if tr.failed() {
		t.Fatalf("requests failed during the churn: %s; the first ones:\n  %s\nevents:\n  %s", tr, strings.Join(tr.failures, "\n  "), strings.Join(events, "\n  "))
	}
}

// stopBackend stops a backend's server, as its pod's process exiting.
func (l *local) stopBackend(t *testing.T, b Backend) {
	t.Helper()
	l.mu.Lock()
	s := l.servers[b.Name]
	delete(l.servers, b.Name)
	l.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// procCPU returns a process's CPU time (user + system) in seconds and its
// resident memory in bytes.
func procCPU(pid int) (float64, int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The fields after the command name (which may hold spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 22 {
		return 0, 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return (ut + st) / 100, rss * int64(os.Getpagesize())
}

// crashMidSync kills the agent (SIGKILL) while it programs 300 new
// VirtualServices next to 50 that do not change, and starts it again: the
// kernel converges to exactly the 350, with nothing duplicated, and none of
// the 50 loses a real server at any point.
func crashMidSync(t *testing.T, l *local) {
	ctx := context.Background()
	const stable, added = 50, 300
	vipOf := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 234, byte(i / 200), byte(1 + i%200)}) }
	backends := []lvsv1.StaticBackend{{Address: "10.235.0.1"}, {Address: "10.235.0.2"}, {Address: "10.235.0.3"}}
	vsOf := func(i int) *lvsv1.VirtualService {
		return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("crash-%03d", i), Namespace: l.Namespace(),
			Labels: map[string]string{"e2e": "crash"}}, Spec: lvsv1.VirtualServiceSpec{
			Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vipOf(i).String())},
			Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP}},
			Backends:  lvsv1.Backends{Static: backends},
		}}
	}
	createAll := func(from, to int) {
		var wg sync.WaitGroup
		work := make(chan int)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					if err := l.API().Create(ctx, vsOf(i)); err != nil {
						t.Errorf("create %d: %v", i, err)
					}
				}
			}()
		}
		for i := from; i < to; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
	}
	t.Cleanup(func() {
		_ = l.API().DeleteAllOf(context.Background(), &lvsv1.VirtualService{}, client.InNamespace(l.Namespace()),
			client.MatchingLabels{"e2e": "crash"})
	})
	h, err := ipvsnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ours := func() (map[netip.Addr]int, error) { // VIP → real servers
		vss, err := h.ListVirtualServers(ctx)
		if err != nil {
			return nil, err
		}
		out := map[netip.Addr]int{}
		for _, v := range vss {
			if a := v.Address.As4(); a[0] != 10 || a[1] != 234 {
				continue
			}
			rs, err := h.ListRealServers(ctx, v.Key())
			if err != nil {
				return nil, err
			}
			if _, dup := out[v.Address]; dup {
				return nil, fmt.Errorf("%s twice", v.Address)
			}
			out[v.Address] = len(rs)
		}
		return out, nil
	}
	createAll(0, stable)
	eventually(t, 120*time.Second, "the 50 programmed", func() error {
		got, err := ours()
		if err != nil {
			return err
		}
		for i := range stable {
			if got[vipOf(i)] != 3 {
				return fmt.Errorf("%d of %d", len(got), stable)
			}
		}
		return nil
	})

	// Watch the 50 from now on: every one, every time, with its 3 real servers.
	var lost atomic.Int64
	var firstLoss atomic.Value
	watchStop := make(chan struct{})
	watchDone := make(chan int)
	go func() {
		polls := 0
		defer func() { watchDone <- polls }()
		for {
			select {
			case <-watchStop:
				return
			default:
			}
			got, err := ours()
			if err == nil {
				polls++
				for i := range stable {
					if got[vipOf(i)] != 3 {
						if lost.Add(1) == 1 {
							firstLoss.Store(fmt.Sprintf("%s has %d real servers", vipOf(i), got[vipOf(i)]))
						}
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	go createAll(stable, stable+added)
	// Kill it once it has programmed some of the 300, not all.
	eventually(t, 120*time.Second, "the agent halfway through the 300", func() error {
		got, err := ours()
		if err != nil {
			return err
		}
		if n := len(got) - stable; n < 30 {
			return fmt.Errorf("%d of the 300 programmed", n)
		}
		return nil
	})
	killedAt, _ := ours()
	if err := l.Agent.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := l.AgentReady(); err != nil {
		t.Fatalf("%v\n%s", err, l.Agent.Tail())
	}
	timing("agent SIGKILLed mid-sync to ready again", start)
	eventually(t, 180*time.Second, "all 350 programmed after the restart", func() error {
		got, err := ours()
		if err != nil {
			return err
		}
		if len(got) != stable+added {
			return fmt.Errorf("%d virtual servers, want %d", len(got), stable+added)
		}
		for i := range stable + added {
			if got[vipOf(i)] != 3 {
				return fmt.Errorf("%s has %d real servers", vipOf(i), got[vipOf(i)])
			}
		}
		return nil
	})
	timing("agent SIGKILLed mid-sync to all 350 programmed", start)
	close(watchStop)
	polls := <-watchDone
	fmt.Fprintf(os.Stderr, "e2e: crash mid-sync: killed with %d of %d VirtualServices programmed; %d polls of the %d unchanged ones, %d lost a real server\n",
		len(killedAt), stable+added, polls, stable, lost.Load())
	if lost.Load() > 0 {
		t.Fatalf("an unchanged VirtualService lost real servers across the crash (%d times; first: %v)", lost.Load(), firstLoss.Load())
	}
	// Nothing duplicated or left over: one ownership record and one VIP on
	// kubelvs0 per VirtualService.
	sets, err := ipsetnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer sets.Close()
	records, err := sets.ListEntries(ctx, ownership.SetV4)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range records {
		if a := e.IP.As4(); a[0] == 10 && a[1] == 234 {
			n++
		}
	}
	dev, err := netifnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	addrs, err := dev.ListAddresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := 0
	for _, a := range addrs {
		if b := a.As4(); a.Is4() && b[0] == 10 && b[1] == 234 {
			m++
		}
	}
	if n != stable+added || m != stable+added {
		t.Fatalf("%d ownership records and %d VIPs on kubelvs0 for %d VirtualServices", n, m, stable+added)
	}
}

// apiOutage stops kube-apiserver (SIGSTOP: requests hang, as with a server
// that stopped answering) for KUBELVS_OUTAGE_SECONDS (60) while TCP and UDP
// traffic flows, KUBELVS_OUTAGE_RUNS times (1; `make soak`: 10): no request
// fails, the agent reports not ready while its watches fail, and an
// EndpointSlice change made the moment the API server is back reaches the
// kernel within seconds.
func apiOutage(t *testing.T, l *local) {
	dur := time.Duration(envInt(t, "KUBELVS_OUTAGE_SECONDS", 60)) * time.Second
	runs := envInt(t, "KUBELVS_OUTAGE_RUNS", 1)
	pid := apiServerPid(t)
	vip := testVIP(13)
	bs := l.Backends(t, "outage", runs+2)
	l.SetEndpoints(t, "outage", bs[:2])
	create(t, l, webVS(l, "outage", "outage", vip))
	cl := l.Client(t)
	serving(t, cl, netip.AddrPortFrom(vip, 80), bs[:2])

	tr := startTraffic(cl.(*nsClient), vip, 44000, 20*time.Millisecond, 20*time.Millisecond)
	defer tr.Stop()

	ready := func() error {
		resp, err := nethttp.Get("http://127.0.0.1:9742/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != nethttp.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	}
	current := bs[:2]
	for run := 1; run <= runs; run++ {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		sawUnready := false
		for time.Since(start) < dur {
			if ready() != nil {
				sawUnready = true
			}
			time.Sleep(time.Second)
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// The moment it is back: the second backend is replaced.
		next := []Backend{current[0], bs[run+1]}
		changed := time.Now()
		l.SetEndpoints(t, "outage", next)
		eventually(t, 30*time.Second, "the change made after the outage in the kernel", func() error {
			d := l.KernelDump(t, vip)
			if !strings.Contains(d, bs[run+1].Addr.String()+":8080") || strings.Contains(d, current[1].Addr.String()+":5353") {
				return fmt.Errorf("kernel:\n%s", d)
			}
			return nil
		})
		took := time.Since(changed)
		eventually(t, 30*time.Second, "ready again", ready)
		fmt.Fprintf(os.Stderr, "e2e: api-server outage %d of %d: %s; the agent reported not ready during it: %t; the change made as it returned reached the kernel in %.1fs; %s\n",
			run, runs, dur, sawUnready, took.Seconds(), tr)
		if !sawUnready {
			t.Errorf("run %d: the agent never reported not ready while the API server was stopped", run)
		}
		if took > 10*time.Second {
			t.Errorf("run %d: the change took %s to reach the kernel after the outage", run, took)
		}
		current = next
	}
	tr.Stop()
	if tr.failed() {
		t.Fatalf("requests failed during the outages: %s; the first ones:\n  %s", tr, strings.Join(tr.failures, "\n  "))
	}
}

// apiServerPid finds the guest's kube-apiserver.
func apiServerPid(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.HasSuffix(strings.SplitN(string(cmd), "\x00", 2)[0], "kube-apiserver") {
			return pid
		}
	}
	t.Fatal("no kube-apiserver process in the guest")
	return 0
}

// envInt reads a number from the environment, def when unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// traffic sends new TCP connections and UDP requests through a VIP (ports
// 80 and 53) until stopped. A UDP request is a datagram from one of four
// source ports in turn and, if no answer comes within 500 ms, one
// retransmission from the same port, as resolvers do: IPVS
// (expire_nodest_conn) drops a datagram that arrives between a real
// server's removal and the flush of its flow, and the retransmission is
// scheduled afresh. Lost first datagrams are counted; a request whose
// retransmission is lost too is a failure.
type traffic struct {
	tcpOK, tcpFail, udpOK, udpFail, udpLost atomic.Int64

	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	mu       sync.Mutex
	failures []string // the first 20, with the time and what failed
}

func startTraffic(cl *nsClient, vip netip.Addr, sport uint16, tcpPause, udpPause time.Duration) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	http, dns := netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(vip, 53)
	loop := func(pause time.Duration, once func(i int)) {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				once(i)
				time.Sleep(pause)
			}
		}()
	}
	loop(tcpPause, func(int) {
		if _, err := cl.Greet(http); err != nil {
			tr.tcpFail.Add(1)
			tr.fail("TCP", err)
		} else {
			tr.tcpOK.Add(1)
		}
	})
	var last [4]string // who last answered each source port
	loop(udpPause, func(i int) {
		port := sport + uint16(i%4)
		who, err := cl.askWithin(dns, port, 500*time.Millisecond)
		if err != nil {
			tr.udpLost.Add(1)
			who, err = cl.askWithin(dns, port, 2*time.Second)
		}
		if err != nil {
			tr.udpFail.Add(1)
			tr.fail(fmt.Sprintf("UDP from %d (last answered by %s)", port, last[i%4]), err)
		} else {
			last[i%4] = who
			tr.udpOK.Add(1)
		}
	})
	return tr
}

func (tr *traffic) fail(what string, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.failures) < 20 {
		tr.failures = append(tr.failures, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err))
	}
}

// Stop ends the traffic and waits for it; a second Stop does nothing.
func (tr *traffic) Stop() {
	tr.once.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

// failed reports whether a request failed, or none got through at all.
func (tr *traffic) failed() bool {
	return tr.tcpFail.Load()+tr.udpFail.Load() > 0 || tr.tcpOK.Load() == 0 || tr.udpOK.Load() == 0
}

func (tr *traffic) String() string {
	return fmt.Sprintf("%d TCP connections (%d failed), %d UDP requests (%d failed; %d first datagrams lost and retransmitted)",
		tr.tcpOK.Load()+tr.tcpFail.Load(), tr.tcpFail.Load(), tr.udpOK.Load()+tr.udpFail.Load(), tr.udpFail.Load(), tr.udpLost.Load())
}
