// Package kernel runs the agent binary against a real kernel (in the guest
// of hack/test-kernel.sh) and a real kube-apiserver and etcd started inside
// the same guest, with clients and backends in network namespaces.
package kernel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/test/guestenv"
)

// apiServer starts etcd and kube-apiserver in the guest, with the CRD, and
// writes a kubeconfig for the agent binary.
func init() { logf.SetLogger(logr.Discard()) }

func apiServer(t testing.TB) (*rest.Config, client.Client, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set (hack/test-kernel.sh sets it)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	env, err := guestenv.StartAPIServer(root, nil)
	if err != nil {
		t.Fatalf("start API server in the guest: %v", err)
	}
	t.Logf("etcd and kube-apiserver up in the guest after %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(env.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			// Why the API server went away, if it did (e.g. the guest
			// ran out of memory).
			t.Logf("API server output:\n%s", env.APIServerLogTail(20))
			out, _ := exec.Command("dmesg").CombinedOutput()
			t.Logf("guest kernel log:\n%s", tail(string(out), 20))
		}
	})
	// The agent binds only addresses an AddressPool admits: one pool
	// admits every namespace to the VIPs of the tests that run it.
	if err := env.AdmitAll("kernel-tests", "10.96.0.0/16", "10.97.0.0/16"); err != nil {
		t.Fatal(err)
	}
	return env.Config, env.API, env.AdminKubeconfig
}

// agentProc is the manager binary running as the agent.
type agentProc struct {
	cmd *exec.Cmd
	log string
}

func startAgent(t testing.TB, kubeconfig string, extra ...string) *agentProc {
	t.Helper()
	return startManager(t, append([]string{"agent", "--kubeconfig", kubeconfig, "--node-name", "guest",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--drain-interval=100ms"}, extra...))
}

// startController runs the manager binary as the controller role.
func startController(t testing.TB, kubeconfig string, extra ...string) *agentProc {
	t.Helper()
	return startManager(t, append([]string{"controller", "--kubeconfig", kubeconfig,
		"--metrics-bind-address=0", "--health-probe-bind-address=0"}, extra...))
}

// startManager runs the manager binary with args (a role first) until the
// test ends.
func startManager(t testing.TB, args []string) *agentProc {
	t.Helper()
	bin := os.Getenv("KUBELVS_MANAGER")
	if bin == "" {
		t.Fatal("KUBELVS_MANAGER (the manager binary) is not set; hack/test-kernel.sh builds it")
	}
	logf, err := os.CreateTemp(t.TempDir(), args[0]+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, log: logf.Name()}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM, as the kubelet does, and waits.
func (p *agentProc) stop(t testing.TB) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.cmd.Wait()
	if t.Failed() || err != nil {
		b, _ := os.ReadFile(p.log)
		t.Logf("%s exited (%v); its log:\n%s", p.cmd.Args[1], err, tail(string(b), 40))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// serveEcho starts, in the namespace, a TCP server that greets with its
// name and then answers every line with "name: line" for as long as the
// client stays, and a UDP server that answers with its name.
func serveEcho(t testing.TB, ns *kerneltest.NS, name string, tcp, udp uint16) {
	t.Helper()
	serve(t, ns, name, tcp, udp, func(netip.Addr) string { return name }, "")
}

// serve starts the TCP and UDP servers of serveEcho and servePeer: greet
// makes the TCP greeting line and the UDP answer (followed by udpEnd) from
// the source address the server sees.
func serve(t testing.TB, ns *kerneltest.NS, name string, tcp, udp uint16, greet func(peer netip.Addr) string, udpEnd string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(ns.IP(false), tcp).String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(ns.IP(false), udp).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", greet(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()))
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s: %s\n", name, sc.Text())
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(greet(from.(*net.UDPAddr).AddrPort().Addr().Unmap())+udpEnd), from)
		}
	}()
}

// conn is a client's established TCP connection through the VIP.
type conn struct {
	c  net.Conn
	rd *bufio.Reader
}

func dial(t testing.TB, ns *kerneltest.NS, addr netip.AddrPort) (*conn, string) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cc := &conn{c: c, rd: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hello, err := cc.rd.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting over %s: %v", addr, err)
	}
	return cc, strings.TrimSpace(hello)
}

// ping sends a line over the established connection and returns the answer.
func (c *conn) ping(msg string) (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c.c, "%s\n", msg); err != nil {
		return "", err
	}
	s, err := c.rd.ReadString('\n')
	return strings.TrimSpace(s), err
}

// greet opens a connection through addr, reads the backend's greeting (its
// name) and closes.
func greet(ns *kerneltest.NS, addr netip.AddrPort) (string, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	timeout = kerneltest.Timeout(timeout)
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelDump lists the kernel's IPVS table for one VIP.
func kernelDump(ctx context.Context, t testing.TB, h ipvs.Interface, vip netip.Addr) string {
	t.Helper()
	return kerneltest.DumpVIP(ctx, t, h, vip)
}

func endpointsOf(nss ...*kerneltest.NS) []discoveryv1.Endpoint {
	var out []discoveryv1.Endpoint
	for _, n := range nss {
		out = append(out, discoveryv1.Endpoint{Addresses: []string{n.IP(false).String()}, NodeName: ptr.To("guest"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return out
}

func TestAgentProgramsTrafficDrainsAndSurvivesRestart(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	_, c, kc := apiServer(t)
	h, err := ipvsnl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	client1 := kerneltest.NewNS(t, 11, true)
	backends := map[string]*kerneltest.NS{}
	var all []*kerneltest.NS
	for i, name := range []string{"b1", "b2", "b3"} {
		ns := kerneltest.NewNS(t, 21+i, false)
		serveEcho(t, ns, name, 8080, 5353)
		backends[name] = ns
		all = append(all, ns)
	}

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
		Endpoints: endpointsOf(all...),
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.7.1")
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip.String())},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromString("http"))},
			{Name: "dns", Port: 53, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromString("dns"))},
		},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
		Drain:     &lvsv1.Drain{TimeoutSeconds: 30},
	}}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}

	agent := startAgent(t, kc)
	http := netip.AddrPortFrom(vip, 80)
	dns := netip.AddrPortFrom(vip, 53)

	// Programmed: TCP and UDP reach every backend through the VIP.
	start := time.Now()
	waitFor(t, 60*time.Second, "TCP through the VIP", func() error {
		_, err := greet(client1, http)
		return err
	})
	t.Logf("first TCP answer through the VIP %s after the agent started", time.Since(start).Round(time.Millisecond))
	seen := map[string]bool{}
	for i := 0; i < 9; i++ {
		got, err := greet(client1, http)
		if err != nil {
			t.Fatal(err)
		}
		seen[got] = true
	}
	if len(seen) != 3 {
		t.Fatalf("rr over 3 backends reached %v", seen)
	}
	udp := client1.UDPClient(t, false, 40053)
	udpBackend, err := udp.Ask(dns, 2*time.Second)
	if err != nil {
		t.Fatalf("UDP through the VIP: %v", err)
	}

	// An established TCP connection, and the backend it landed on.
	established, tcpBackend := dial(t, client1, http)
	if r, err := established.ping("hello"); err != nil || r != tcpBackend+": hello" {
		t.Fatalf("established connection: %q %v", r, err)
	}

	// Remove both backends (the same one, possibly) from the EndpointSlice.
	var keep []*kerneltest.NS
	for name, ns := range backends {
		if name != tcpBackend && name != udpBackend {
			keep = append(keep, ns)
		}
	}
	slice.Endpoints = endpointsOf(keep...)
	if err := c.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	tcpKey := ipvs.Key{Address: vip, Protocol: ipvs.TCP, Port: 80}
	// Wait for the whole change: the dump is read while the agent may be
	// half-way through it. Removed TCP real servers drain at weight 0, UDP
	// ones are gone at once.
	want := fmt.Sprintf("%s\n", ipvs.VirtualServer{Address: vip, Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"})
	for _, name := range []string{"b1", "b2", "b3"} {
		w := 1
		if name == tcpBackend || name == udpBackend {
			w = 0
		}
		want += fmt.Sprintf("  -> %s\n", ipvs.RealServer{Address: backends[name].IP(false), Port: 8080, Weight: w})
	}
	want += fmt.Sprintf("%s\n", ipvs.VirtualServer{Address: vip, Protocol: ipvs.UDP, Port: 53, Scheduler: "rr"})
	for _, ns := range keep {
		want += fmt.Sprintf("  -> %s\n", ipvs.RealServer{Address: ns.IP(false), Port: 5353, Weight: 1})
	}
	waitFor(t, 20*time.Second, "removed backends drained or deleted", func() error {
		if d := kernelDump(ctx, t, h, vip); d != want {
			return fmt.Errorf("kernel:\n%s\nwant:\n%s", d, want)
		}
		return nil
	})
	t.Logf("after removing %s (TCP) and %s (UDP):\n%s", tcpBackend, udpBackend, kernelDump(ctx, t, h, vip))

	// No new connection goes to a removed backend...
	for i := 0; i < 10; i++ {
		b, err := greet(client1, http)
		if err != nil {
			t.Fatal(err)
		}
		if b == tcpBackend || b == udpBackend {
			t.Fatalf("new connection %d went to removed backend %s", i, b)
		}
	}
	// ...while the established one keeps working.
	if r, err := established.ping("still there"); err != nil || r != tcpBackend+": still there" {
		t.Fatalf("established connection broken by the drain: %q %v", r, err)
	}
	// The UDP client keeps its source port and is answered by a backend that
	// is still there: its stale flow was flushed.
	waitFor(t, 10*time.Second, "UDP answered by a remaining backend", func() error {
		got, err := udp.Ask(dns, time.Second)
		if err != nil {
			return err
		}
		if got == udpBackend {
			return fmt.Errorf("still answered by removed %s", got)
		}
		return nil
	})

	// Restart the agent: the established connection survives, and the
	// kernel is not rewritten (nothing deleted and re-added).
	before := kernelDump(ctx, t, h, vip)
	agent.stop(t)
	if r, err := established.ping("agent down"); err != nil || r != tcpBackend+": agent down" {
		t.Fatalf("connection broken while the agent is down: %q %v", r, err)
	}
	// Its NodeReport goes with it (if it wrote one yet: on a loaded guest
	// its first write may still have been retrying): the new agent
	// writes a new one once it has synced.
	if err := c.Delete(ctx, &lvsv1.NodeReport{ObjectMeta: metav1.ObjectMeta{Name: "guest"}}); client.IgnoreNotFound(err) != nil {
		t.Fatalf("delete the old agent's NodeReport: %v", err)
	}
	agent = startAgent(t, kc)
	_ = agent
	waitFor(t, 60*time.Second, "the new agent reports", func() error {
		var cur lvsv1.VirtualService
		if err := c.Get(ctx, client.ObjectKeyFromObject(vs), &cur); err != nil {
			return err
		}
		var rep lvsv1.NodeReport
		if err := c.Get(ctx, client.ObjectKey{Name: "guest"}, &rep); err != nil {
			return err
		}
		rv, _ := strconv.ParseUint(cur.ResourceVersion, 10, 64)
		wm, _ := strconv.ParseUint(rep.Status.ResourceVersion, 10, 64)
		if wm >= rv && rep.Status.FailedCount == 0 && rep.Status.VirtualServices > 0 {
			return nil
		}
		return fmt.Errorf("NodeReport %+v, VirtualService at resourceVersion %d", rep.Status, rv)
	})
	if after := kernelDump(ctx, t, h, vip); after != before {
		t.Fatalf("restart changed the kernel:\n--- before\n%s--- after\n%s", before, after)
	}
	if r, err := established.ping("agent back"); err != nil || r != tcpBackend+": agent back" {
		t.Fatalf("connection broken by the restart: %q %v", r, err)
	}

	// The client closes: the drained real server is deleted.
	established.c.Close()
	rs := netip.AddrPortFrom(backends[tcpBackend].IP(false), 8080).String()
	waitFor(t, 45*time.Second, "drained real server deleted", func() error {
		rss, err := h.ListRealServers(ctx, tcpKey)
		if err != nil {
			return err
		}
		for _, r := range rss {
			if r.Key().String() == rs {
				return fmt.Errorf("%s still there (active %d, inactive %d)", r, r.ActiveConns, r.InactiveConns)
			}
		}
		return nil
	})

	// Deleting the VirtualService removes what the agent made.
	if err := c.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "VirtualService removed from the kernel", func() error {
		if d := kernelDump(ctx, t, h, vip); d != "" {
			return fmt.Errorf("\n%s", d)
		}
		return nil
	})

	// Another one, with static backends; then the agent stops: the kernel
	// stays as it is (traffic keeps flowing), until `manager cleanup`.
	vip2 := netip.MustParseAddr("10.96.7.2")
	static := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "static", Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip2.String())},
		Ports:     []lvsv1.VirtualServicePort{{Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(8080))}},
		Scheduler: lvsv1.SchedulerWeightedRoundRobin,
		Backends: lvsv1.Backends{Static: []lvsv1.StaticBackend{
			{Address: lvsv1.IPAddress(backends["b1"].IP(false).String()), Weight: ptr.To[int32](2)},
		}},
	}}
	if err := c.Create(ctx, static); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "static backend serves", func() error {
		got, err := greet(client1, netip.AddrPortFrom(vip2, 80))
		if err == nil && got != "b1" {
			return fmt.Errorf("answered by %s", got)
		}
		return err
	})
	agent.stop(t)
	if got, err := greet(client1, netip.AddrPortFrom(vip2, 80)); err != nil || got != "b1" {
		t.Fatalf("traffic stopped with the agent: %q %v", got, err)
	}
	out, err := exec.Command(os.Getenv("KUBELVS_MANAGER"), "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("manager cleanup: %v\n%s", err, out)
	}
	t.Logf("manager cleanup:\n%s", out)
	if d := kernelDump(ctx, t, h, vip2); d != "" {
		t.Fatalf("cleanup left IPVS state:\n%s", d)
	}
	if _, err := netlink.LinkByName("kubelvs0"); err == nil {
		t.Fatal("cleanup left kubelvs0")
	}
	for _, name := range []string{"iptables-legacy-save", "ipset"} {
		args := []string{}
		if name == "ipset" {
			args = []string{"list", "-n"}
		}
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if strings.Contains(string(out), "KUBELVS") {
			t.Fatalf("cleanup left KUBELVS objects in %s:\n%s", name, out)
		}
	}
}
