//go:build linux

// Package multinode runs several kubelvs "nodes" in one guest kernel (the
// guest of hack/test-kernel.sh): IPVS, conntrack, iptables and interfaces
// are per network namespace, so a node is a network namespace running its
// own agent process under its own node name.
//
// Topology (every address private or documentation, every interface in a
// namespace the harness creates and deletes):
//
//	          ext 10.20.0.2/24 fd00:20::2/64           (external client)
//	           │ eth0
//	           │ eth1 10.20.0.1/24 fd00:20::1/64
//	          rtr  eth0 10.10.0.254/24 fd00:10::254/64 (router, BIRD)
//	           │
//	lan0 ──────┼──────────┬───────────┬──────────┐     (bridge in netns "lan")
//	           │          │           │          │
//	         l2c         n1          n2   …     nN     eth0 10.10.0.(10+i)/24
//	10.10.0.100/24        │ veth-pod                   fd00:10::(10+i)/64
//	fd00:10::100/64       │ 10.244.i.1/24 fd00:244:i::1/64
//	                    pod-n1 eth0 10.244.i.2/24 fd00:244:i::2/64 (echo server)
//
// The bridge lives in its own namespace, not the guest's root namespace:
// the root namespace holds the API server and other tests' IPVS, iptables
// and ipsets, which must neither see nor filter the lan's traffic, and the
// nodes must not reach the root namespace other than through their API
// proxy. Nodes route every other node's pod network through that node
// (a flat pod network, as host-gw routing does); everything else goes
// through the router. The router forwards with layer-4 multipath hashing
// (fib_multipath_hash_policy=1 for IPv4 and IPv6), so the connections of
// one client spread over ECMP next hops.
//
// The agents reach the API server through a TCP proxy per node, listening
// inside the node's namespace on 127.0.0.1 at the API server's own port, so
// the agents' kubeconfig is the one guestenv writes for the chart's agent
// ServiceAccount. A node's link can be cut (eth0 down) with or without its
// API server (Node.CutAPI).
package multinode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/test/guestenv"
)

func init() { logf.SetLogger(logr.Discard()) }

const (
	// Namespace is the Kubernetes namespace of the tests' objects; the
	// AddressPool admits it (and only it) to VIPv4 and VIPv6.
	Namespace = "mn"
	// EchoPort is the TCP and UDP port of the pods' echo servers.
	EchoPort = 8080
	// RouterASN is the router's default BGP autonomous system.
	RouterASN = 64500
	// NodeASN is the nodes' default BGP autonomous system (eBGP).
	NodeASN = 64501
)

// The addresses of the topology.
var (
	// LAN4 is the nodes' LAN (lan0), IPv4.
	LAN4 = netip.MustParsePrefix("10.10.0.0/24")
	// LAN6 is the nodes' LAN (lan0), IPv6.
	LAN6 = netip.MustParsePrefix("fd00:10::/64")
	// RouterLAN4 is the router's address on the LAN, IPv4.
	RouterLAN4 = netip.MustParseAddr("10.10.0.254")
	// RouterLAN6 is the router's address on the LAN, IPv6.
	RouterLAN6 = netip.MustParseAddr("fd00:10::254")
	// RouterExt4 is the router's address toward ext, IPv4.
	RouterExt4 = netip.MustParseAddr("10.20.0.1")
	// RouterExt6 is the router's address toward ext, IPv6.
	RouterExt6 = netip.MustParseAddr("fd00:20::1")
	// ExtIP4 is the external client's address, IPv4.
	ExtIP4 = netip.MustParseAddr("10.20.0.2")
	// ExtIP6 is the external client's address, IPv6.
	ExtIP6 = netip.MustParseAddr("fd00:20::2")
	// L2CIP4 is the LAN client's address, IPv4.
	L2CIP4 = netip.MustParseAddr("10.10.0.100")
	// L2CIP6 is the LAN client's address, IPv6.
	L2CIP6 = netip.MustParseAddr("fd00:10::100")
	// VIPv4 is the AddressPool's IPv4 range.
	VIPv4 = netip.MustParsePrefix("10.30.0.0/24")
	// VIPv6 is the AddressPool's IPv6 range.
	VIPv6 = netip.MustParsePrefix("fd00:30::/64")
)

// Options shape a Cluster.
type Options struct {
	// Nodes is the number of nodes (default 3, at most 200).
	Nodes int
}

// Cluster is the topology, and once StartAPI ran, the API server with the
// chart's RBAC, the Node objects and the AddressPool.
type Cluster struct {
	// Dir holds the logs, BIRD configurations and sockets.
	Dir    string
	Nodes  []*Node
	Router *Router
	// Ext is the external client behind the router; L2C a client on the
	// nodes' LAN; LAN holds the bridge lan0.
	Ext, L2C, LAN *Netns
	// Env is the API server (StartAPI); API a client as its admin.
	Env *guestenv.Env
	API client.Client
	// Controller runs once StartController did.
	Controller *guestenv.Proc

	t       testing.TB
	all     []*Netns
	procs   []*guestenv.Proc
	closers []io.Closer
}

// Node is a node: a network namespace with eth0 on the LAN, its pod, its
// API server proxy and its agent.
type Node struct {
	Name  string
	Index int // 1…N
	*Netns
	// Pod is the node's one pod, running an echo server that answers with
	// the node's name.
	Pod *Netns
	// Agent is the agent process once StartAgent ran.
	Agent *guestenv.Proc

	c         *Cluster
	proxy     *proxy
	agentArgs []string // before StartAgent's extraArgs
}

// Node returns the node of that name, nil if none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// IP is the node's eth0 address: 10.10.0.(10+i), fd00:10::(10+i) (the
// same digits).
func (n *Node) IP(v6 bool) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10::%d", 10+n.Index))
	}
	return netip.AddrFrom4([4]byte{10, 10, 0, byte(10 + n.Index)})
}

// PodIP is the address of the node's pod (host .2; the node's end is .1).
func (n *Node) PodIP(v6 bool) netip.Addr { return n.podAddr(v6, 2) }

// PodNet is the node's pod network.
func (n *Node) PodNet(v6 bool) netip.Prefix {
	if v6 {
		return netip.PrefixFrom(n.podAddr(true, 0), 64)
	}
	return netip.PrefixFrom(n.podAddr(false, 0), 24)
}

func (n *Node) podAddr(v6 bool, host byte) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:244:%d::%d", n.Index, host))
	}
	return netip.AddrFrom4([4]byte{10, 244, byte(n.Index), host})
}

// New builds the topology with the pods' echo servers; everything is torn
// down when the test ends (processes killed, namespaces deleted). On
// failure, every process's log tail is logged.
func New(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	c := &Cluster{t: t, Dir: t.TempDir()}
	t.Cleanup(c.teardown)
	if err := c.build(o.Nodes); err != nil {
		t.Fatalf("multinode topology: %v", err)
	}
	return c
}

func (c *Cluster) netns(name string) *Netns {
	n, err := newNetns(name)
	if err != nil {
		c.t.Fatal(err)
	}
	c.all = append(c.all, n)
	return n
}

func (c *Cluster) build(nodes int) error {
	c.LAN = c.netns("lan")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, MulticastSnooping: ptr.To(false)}
	if err := c.LAN.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge lan0: %w", err)
	}
	if err := c.LAN.SetLink("lan0", true); err != nil {
		return err
	}
	brl, err := c.LAN.nl.LinkByName("lan0")
	if err != nil {
		return err
	}
	bridge := brl.Attrs().Index
	// onLAN joins ns's eth0 to lan0 with the two addresses.
	onLAN := func(ns *Netns, a4, a6 netip.Addr) error {
		if err := c.LAN.veth(ns.Name, ns, "eth0", bridge); err != nil {
			return err
		}
		if err := ns.AddAddr("eth0", netip.PrefixFrom(a4, 24)); err != nil {
			return err
		}
		return ns.AddAddr("eth0", netip.PrefixFrom(a6, 64))
	}
	defaultVia := func(ns *Netns, gw4, gw6 netip.Addr) error {
		if err := ns.AddRoute(netip.Prefix{}, gw4); err != nil {
			return err
		}
		return ns.AddRoute(netip.PrefixFrom(netip.IPv6Unspecified(), 0), gw6)
	}

	// The router and the external client.
	c.Router = &Router{Netns: c.netns("rtr"), c: c}
	c.Ext = c.netns("ext")
	if err := onLAN(c.Router.Netns, RouterLAN4, RouterLAN6); err != nil {
		return err
	}
	if err := c.Router.veth("eth1", c.Ext, "eth0", 0); err != nil {
		return err
	}
	for _, a := range []struct {
		ns *Netns
		ip netip.Prefix
	}{
		{c.Router.Netns, netip.PrefixFrom(RouterExt4, 24)}, {c.Router.Netns, netip.PrefixFrom(RouterExt6, 64)},
		{c.Ext, netip.PrefixFrom(ExtIP4, 24)}, {c.Ext, netip.PrefixFrom(ExtIP6, 64)},
	} {
		link := "eth0"
		if a.ns == c.Router.Netns {
			link = "eth1"
		}
		if err := a.ns.AddAddr(link, a.ip); err != nil {
			return err
		}
	}
	if err := defaultVia(c.Ext, RouterExt4, RouterExt6); err != nil {
		return err
	}
	for _, s := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		// Hash on the 5-tuple: one client's connections spread over the
		// next hops of a multipath route.
		{"net/ipv4/fib_multipath_hash_policy", "1"},
		{"net/ipv6/fib_multipath_hash_policy", "1"},
	} {
		if err := c.Router.Sysctl(s[0], s[1]); err != nil {
			return err
		}
	}

	// The LAN client.
	c.L2C = c.netns("l2c")
	if err := onLAN(c.L2C, L2CIP4, L2CIP6); err != nil {
		return err
	}
	if err := defaultVia(c.L2C, RouterLAN4, RouterLAN6); err != nil {
		return err
	}

	// The nodes and their pods.
	for i := 1; i <= nodes; i++ {
		n := &Node{Name: fmt.Sprintf("n%d", i), Index: i, c: c}
		n.Netns = c.netns(n.Name)
		n.Pod = c.netns("pod-" + n.Name)
		c.Nodes = append(c.Nodes, n)
		if err := onLAN(n.Netns, n.IP(false), n.IP(true)); err != nil {
			return err
		}
		if err := defaultVia(n.Netns, RouterLAN4, RouterLAN6); err != nil {
			return err
		}
		if err := n.veth("veth-pod", n.Pod, "eth0", 0); err != nil {
			return err
		}
		for _, v6 := range []bool{false, true} {
			bits := n.PodNet(v6).Bits()
			if err := n.AddAddr("veth-pod", netip.PrefixFrom(n.podAddr(v6, 1), bits)); err != nil {
				return err
			}
			if err := n.Pod.AddAddr("eth0", netip.PrefixFrom(n.PodIP(v6), bits)); err != nil {
				return err
			}
		}
		if err := defaultVia(n.Pod, n.podAddr(false, 1), n.podAddr(true, 1)); err != nil {
			return err
		}
		for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := n.Sysctl(s, "1"); err != nil {
				return err
			}
		}
		if err := c.serveEcho(n.Pod, n.Name, netip.AddrPortFrom(netip.IPv6Unspecified(), EchoPort)); err != nil {
			return err
		}
	}
	// A flat pod network: each node reaches the others' pods through them.
	for _, n := range c.Nodes {
		for _, m := range c.Nodes {
			if m == n {
				continue
			}
			for _, v6 := range []bool{false, true} {
				if err := n.AddRoute(m.PodNet(v6), m.IP(v6)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ServeEcho starts, inside ns, a TCP server on addr that writes name and a
// newline and closes, and a UDP server that answers every datagram with
// name. The unspecified address ([::]) serves both families. They stop when
// the test ends.
func (c *Cluster) ServeEcho(ns *Netns, name string, addr netip.AddrPort) {
	c.t.Helper()
	if err := c.serveEcho(ns, name, addr); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) serveEcho(ns *Netns, name string, addr netip.AddrPort) error {
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", addr.String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", addr.String())
		return err
	}); err != nil {
		return fmt.Errorf("echo server %s in %s: %w", addr, ns.Name, err)
	}
	c.closers = append(c.closers, ln, pc)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte(name + "\n"))
			conn.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name+"\n"), from)
		}
	}()
	return nil
}

// StartProc runs a command inside ns until the test ends, logging to
// Dir/<name>.log; its stop and log tail are the harness's (teardown, failure
// dump).
func (c *Cluster) StartProc(ns *Netns, name string, args ...string) *guestenv.Proc {
	c.t.Helper()
	p := &guestenv.Proc{Name: name, Args: args, Log: filepath.Join(c.Dir, name+".log"), Launch: ns.Start}
	if err := p.Start(); err != nil {
		c.t.Fatalf("start %s in %s: %v", name, ns.Name, err)
	}
	c.procs = append(c.procs, p)
	return p
}

func (c *Cluster) teardown() {
	if c.t.Failed() {
		for _, p := range c.procs {
			c.t.Logf("--- %s (%s), last lines of its log:\n%s", p.Name, p.Log, p.Tail())
		}
		if c.Env != nil {
			c.t.Logf("API server output:\n%s", c.Env.APIServerLogTail(20))
		}
		out, _ := exec.Command("dmesg").CombinedOutput()
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		c.t.Logf("guest kernel log:\n%s", strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Go(func() { _ = p.Kill() })
	}
	wg.Wait()
	for _, n := range c.Nodes {
		if n.proxy != nil {
			n.proxy.close()
		}
	}
	for _, cl := range c.closers {
		_ = cl.Close()
	}
	if c.Env != nil {
		c.Env.Stop()
	}
	for i := len(c.all) - 1; i >= 0; i-- {
		c.all[i].delete()
	}
}

// StartAPI starts etcd and kube-apiserver in the guest's root namespace
// (guestenv), applies the chart's namespace, ServiceAccounts and RBAC,
// creates the Node objects, namespace Namespace and an AddressPool that
// admits it to VIPv4 and VIPv6, and a proxy to the API server inside each
// node.
func (c *Cluster) StartAPI() {
	t := c.t
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" || os.Getenv("KUBELVS_MANAGER") == "" {
		t.Fatal("KUBEBUILDER_ASSETS and KUBELVS_MANAGER must be set (hack/test-kernel.sh sets them)")
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
	c.Env, c.API = env, env.API
	env.Bin = os.Getenv("KUBELVS_MANAGER")
	t.Logf("etcd and kube-apiserver up after %s", time.Since(start).Round(time.Millisecond))
	if err := env.ApplyChart(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.API.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		t.Fatal(err)
	}
	pool := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "multinode"}, Spec: lvsv1.AddressPoolSpec{
		CIDRs: []lvsv1.PoolCIDR{lvsv1.PoolCIDR(VIPv4.String()), lvsv1.PoolCIDR(VIPv6.String())},
		NamespaceSelector: &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: corev1.LabelMetadataName, Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{Namespace}}}},
	}}
	if err := c.API.Create(ctx, pool); err != nil {
		t.Fatalf("AddressPool: %v", err)
	}
	u, err := url.Parse(env.Config.Host)
	var apiAddr netip.AddrPort
	if err == nil {
		apiAddr, err = netip.ParseAddrPort(u.Host)
	}
	if err != nil {
		t.Fatalf("API server address %q: %v", env.Config.Host, err)
	}
	for _, n := range c.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			corev1.LabelHostname: n.Name, corev1.LabelOSStable: "linux"}}}
		if err := c.API.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP(false).String()},
			{Type: corev1.NodeInternalIP, Address: n.IP(true).String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		}
		if err := c.API.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
		n.proxy = &proxy{ns: n.Netns, listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), apiAddr.Port()), to: apiAddr.String()}
		if err := n.proxy.start(); err != nil {
			t.Fatal(err)
		}
	}
}

// StartController runs the controller (the chart's arguments, its
// ServiceAccount) in the root namespace, restarted if it exits on its own.
func (c *Cluster) StartController() {
	c.t.Helper()
	p, err := c.Env.ControllerProc()
	if err == nil {
		err = p.Start()
	}
	if err != nil {
		c.t.Fatalf("controller: %v", err)
	}
	c.procs = append(c.procs, p)
	c.Controller = p
}

// StartAgent runs the agent of the node inside its namespace: the chart's
// arguments, then --node-name and extraArgs (a later flag wins), as the
// chart's agent ServiceAccount, with a pod of the agent's DaemonSet on the
// node. It does not wait for readiness (AgentReady).
func (n *Node) StartAgent(extraArgs ...string) *guestenv.Proc {
	t := n.c.t
	t.Helper()
	if n.c.Env == nil {
		t.Fatal("StartAgent before StartAPI")
	}
	if n.Agent == nil {
		p, err := n.c.Env.AgentProc(n.Name)
		if err != nil {
			t.Fatalf("agent of %s: %v", n.Name, err)
		}
		p.Launch = n.Start
		p.Args = append(p.Args, "--node-name="+n.Name)
		n.Agent = p
		n.c.procs = append(n.c.procs, p)
		n.agentArgs = p.Args
	}
	n.Agent.Args = append(append([]string(nil), n.agentArgs...), extraArgs...)
	if err := n.Agent.Start(); err != nil {
		t.Fatalf("start agent of %s: %v", n.Name, err)
	}
	return n.Agent
}

// StopAgent sends SIGTERM, as the kubelet does, and waits.
func (n *Node) StopAgent() error { return n.Agent.Stop() }

// KillAgent sends SIGKILL, as a crash would, and waits.
func (n *Node) KillAgent() { _ = n.Agent.Kill() }

// RestartAgent stops the agent (SIGTERM) and starts it again with the same
// arguments.
func (n *Node) RestartAgent() {
	n.c.t.Helper()
	if err := n.Agent.Stop(); err != nil {
		n.c.t.Logf("stop agent of %s: %v", n.Name, err)
	}
	if err := n.Agent.Start(); err != nil {
		n.c.t.Fatalf("restart agent of %s: %v", n.Name, err)
	}
}

// AgentReady waits until the agent's /readyz answers 200 (first full sync
// done), or fails the test.
func (n *Node) AgentReady(timeout time.Duration) {
	t := n.c.t
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.Dial(network, netip.MustParseAddrPort(addr), time.Second)
		}}}
	defer hc.CloseIdleConnections()
	WaitFor(t, timeout, "agent of "+n.Name+" ready", func() error {
		if n.Agent.Exited() {
			t.Fatalf("the agent of %s exited:\n%s", n.Name, n.Agent.Tail())
		}
		resp, err := hc.Get("http://" + n.Agent.ProbeAddr() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
}

// CutAPI closes the node's proxy to the API server and its connections:
// the agent loses the API server (its link stays up).
func (n *Node) CutAPI() { n.proxy.close() }

// RestoreAPI opens the node's proxy to the API server again.
func (n *Node) RestoreAPI() {
	if err := n.proxy.start(); err != nil {
		n.c.t.Fatal(err)
	}
}

// IPVS lists the node's IPVS virtual servers of vip with their real servers
// (kerneltest.DumpVIP), "" if none.
func (n *Node) IPVS(vip netip.Addr) string {
	t := n.c.t
	t.Helper()
	var h *ipvsnl.Netlink
	if err := n.Do(func() (err error) {
		h, err = ipvsnl.New() // its socket stays in the namespace
		return err
	}); err != nil {
		t.Fatalf("IPVS handle in %s: %v", n.Name, err)
	}
	defer h.Close()
	return kerneltest.DumpVIP(context.Background(), t, h, vip)
}

// SetEndpoints creates or updates the EndpointSlice "<service>-ipv4" (or
// "-ipv6") of Service service in Namespace: the pods of ready and of
// notReady (ready=false), each with its node's name, on port "echo"
// EchoPort TCP and "echo-udp" EchoPort UDP.
func (c *Cluster) SetEndpoints(service string, v6 bool, ready, notReady []*Node) {
	c.t.Helper()
	ctx := context.Background()
	fam, at := "ipv4", discoveryv1.AddressTypeIPv4
	if v6 {
		fam, at = "ipv6", discoveryv1.AddressTypeIPv6
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-" + fam, Namespace: Namespace, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: at,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("echo"), Port: ptr.To[int32](EchoPort), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("echo-udp"), Port: ptr.To[int32](EchoPort), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
	}
	for _, g := range []struct {
		nodes []*Node
		ready bool
	}{{ready, true}, {notReady, false}} {
		for _, n := range g.nodes {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{n.PodIP(v6).String()},
				NodeName:   ptr.To(n.Name),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: Namespace, Name: service + "-" + n.Name},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(g.ready), Serving: ptr.To(g.ready), Terminating: ptr.To(false)},
			})
		}
	}
	var cur discoveryv1.EndpointSlice
	err := c.API.Get(ctx, client.ObjectKeyFromObject(s), &cur)
	switch {
	case apierrors.IsNotFound(err):
		err = c.API.Create(ctx, s)
	case err == nil:
		s.ResourceVersion = cur.ResourceVersion
		err = c.API.Update(ctx, s)
	}
	if err != nil {
		c.t.Fatalf("EndpointSlice %s: %v", s.Name, err)
	}
}

// WaitFor polls f every 100 ms until it returns nil, or fails the test after
// timeout (scaled by kerneltest.Timeout) with f's last error.
func WaitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
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
		time.Sleep(100 * time.Millisecond)
	}
}

// proxy forwards TCP connections from a listener inside a namespace to an
// address of the root namespace.
type proxy struct {
	ns     *Netns
	listen netip.AddrPort
	to     string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func (p *proxy) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	var ln net.Listener
	if err := p.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", p.listen.String())
		return err
	}); err != nil {
		return fmt.Errorf("API proxy in %s: %w", p.ns.Name, err)
	}
	p.ln, p.conns = ln, map[net.Conn]bool{}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(in)
		}
	}()
	return nil
}

func (p *proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add && p.conns == nil {
		return false // closed
	}
	if add {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *proxy) forward(in net.Conn) {
	// Dialed from an ordinary goroutine: in the root namespace.
	out, err := net.DialTimeout("tcp", p.to, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, true) || !p.track(out, true) {
		in.Close()
		out.Close()
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
	in.Close()
	out.Close()
	p.track(in, false)
	p.track(out, false)
}

// close stops listening and cuts every forwarded connection.
func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Router is the router namespace, with its BIRD once StartBIRD ran.
type Router struct {
	*Netns
	BIRD *BIRD
	c    *Cluster
}

// Routes returns the next hops of the router's kernel FIB (main table) for
// exactly prefix: the gateway of a single-path route or of each path of a
// multipath one, sorted; none if there is no such route.
func (r *Router) Routes(prefix netip.Prefix) ([]netip.Addr, error) {
	fam := netlink.FAMILY_V4
	if prefix.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	rs, err := r.nl.RouteListFiltered(fam, &netlink.Route{Dst: prefixNet(prefix), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, rt := range rs {
		if a, ok := netip.AddrFromSlice(rt.Gw); ok {
			out = append(out, a.Unmap())
		}
		for _, nh := range rt.MultiPath {
			if a, ok := netip.AddrFromSlice(nh.Gw); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// errNoBIRD is returned by BIRDShow before StartBIRD.
var errNoBIRD = errors.New("no BIRD runs on the router")

// BIRDShow runs a birdc command (e.g. "show protocols") against the
// router's BIRD.
func (r *Router) BIRDShow(cmd string) (string, error) {
	if r.BIRD == nil {
		return "", errNoBIRD
	}
	return r.BIRD.Show(cmd)
}

// StartBIRD runs BIRD with conf in the router's namespace (RouterConfig
// renders one that peers with every node).
func (r *Router) StartBIRD(conf string) *BIRD {
	r.BIRD = r.c.StartBIRD(r.Netns, "bird-rtr", conf)
	return r.BIRD
}

// BIRD is a BIRD daemon and its control socket.
type BIRD struct {
	Proc   *guestenv.Proc
	Socket string
}

// StartBIRD runs `bird -f -c <conf> -s <socket>` inside ns, with the
// configuration and socket in Dir (name.conf, name.ctl), until the test
// ends; the configuration is checked (bird -p) first.
func (c *Cluster) StartBIRD(ns *Netns, name, conf string) *BIRD {
	t := c.t
	t.Helper()
	path := filepath.Join(c.Dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bird", "-p", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("BIRD configuration %s: %v: %s\n%s", name, err, out, numbered(conf))
	}
	b := &BIRD{Socket: filepath.Join(c.Dir, name+".ctl")}
	b.Proc = c.StartProc(ns, name, "bird", "-f", "-c", path, "-s", b.Socket)
	return b
}

// Show runs a birdc command and returns its output.
func (b *BIRD) Show(cmd string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Socket}, strings.Fields(cmd)...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

// Reconfigure replaces BIRD's configuration file with conf and makes it
// load it (birdc configure).
func (b *BIRD) Reconfigure(conf string) error {
	path := ""
	for i, a := range b.Proc.Args {
		if a == "-c" && i+1 < len(b.Proc.Args) {
			path = b.Proc.Args[i+1]
		}
	}
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := b.Show("configure")
	return err
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		fmt.Fprintf(&b, "%3d %s\n", i+1, l)
	}
	return b.String()
}
