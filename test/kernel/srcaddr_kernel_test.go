package kernel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// servePeer starts, in the namespace, TCP and UDP servers on port that
// answer "name peer": the backend's name and the source address it sees.
// A TCP connection then echoes every line as "name: line" until the client
// closes it.
func servePeer(t testing.TB, ns *kerneltest.NS, name string, port uint16) {
	t.Helper()
	serve(t, ns, name, port, port, func(peer netip.Addr) string { return name + " " + peer.String() }, "\n")
}

// answer is what a peer server said: who answered, and whom it saw.
type answer struct {
	backend string
	peer    netip.Addr
}

// ask connects (TCP) or sends a datagram (UDP, from a new socket) to addr,
// from inside ns or, when ns is nil, from the node itself (the guest's root
// namespace), and parses the answer.
func ask(ns *kerneltest.NS, network string, addr netip.AddrPort) (answer, error) {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout(network, addr.String(), 2*time.Second)
		return err
	}
	var err error
	if ns == nil {
		err = dial()
	} else {
		err = ns.Do(dial)
	}
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "udp" {
		if _, err := c.Write([]byte("who\n")); err != nil {
			return answer{}, err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return answer{}, err
	}
	name, peer, ok := strings.Cut(strings.TrimSpace(line), " ")
	a, perr := netip.ParseAddr(peer)
	if !ok || perr != nil {
		return answer{}, fmt.Errorf("answer %q", line)
	}
	return answer{backend: name, peer: a}, nil
}

// TestTrafficPolicyDecidesWhatSourceTheBackendSees: with trafficPolicy
// Cluster the node masquerades, so a backend sees the node's address and
// answers through it wherever it runs; with Local only the backends on this
// node serve, and they route through it, so they see the client's own
// address. Both ways and back, a backend calling its own VIP (scheduled to
// itself among others) and a client on the node itself are answered too,
// and a connection established through another node's backend under
// Cluster keeps working while that backend drains under Local.
func TestTrafficPolicyDecidesWhatSourceTheBackendSees(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	_, c, kc := apiServer(t)

	// p1 and p2 are pods on this node: the node is their gateway. r1 is on
	// another node: it has no route to clients, it answers only through
	// this node's masquerade.
	clientNS := kerneltest.NewNS(t, 12, true)
	backends := map[string]*kerneltest.NS{
		"p1": kerneltest.NewNS(t, 26, true), "p2": kerneltest.NewNS(t, 27, true), "r1": kerneltest.NewNS(t, 28, false),
	}
	var eps []discoveryv1.Endpoint
	for _, name := range []string{"p1", "p2", "r1"} {
		servePeer(t, backends[name], name, 8080)
		ep := endpointsOf(backends[name])[0]
		if name == "r1" {
			ep.NodeName = ptr.To("elsewhere")
		}
		eps = append(eps, ep)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "peer-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "peer"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.7.20")
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "peer", Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip.String())},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "tcp", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(8080))},
			{Name: "udp", Port: 80, Protocol: lvsv1.ProtocolUDP, TargetPort: ptr.To(intstr.FromInt32(8080))},
		},
		Scheduler:     lvsv1.SchedulerRoundRobin,
		Forwarding:    lvsv1.ForwardingMasquerade,
		TrafficPolicy: lvsv1.TrafficPolicyCluster,
		Backends:      lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "peer"}},
	}}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	startAgent(t, kc)
	addr := netip.AddrPortFrom(vip, 80)

	// node is this node's address on the link to the backend that
	// answered: the source its masquerade gives.
	node := func(a answer) netip.Addr {
		if ns := backends[a.backend]; ns != nil {
			return ns.HostIP(false)
		}
		return netip.Addr{}
	}
	// check sends TCP and UDP from the client, from p1 to its own VIP and
	// from the node, and fails on an error, a source other than want
	// says, or backends other than serving answering.
	check := func(policy string, serving []string, want func(from *kerneltest.NS, a answer) netip.Addr) {
		t.Helper()
		for _, from := range []struct {
			name string
			ns   *kerneltest.NS
		}{{"client", clientNS}, {"backend p1", backends["p1"]}, {"node", nil}} {
			for _, network := range []string{"tcp", "udp"} {
				seen := map[string]bool{}
				for i := 0; i < 2*len(serving); i++ { // rr: each serving backend twice
					a, err := ask(from.ns, network, addr)
					if err != nil {
						t.Fatalf("%s: %s from the %s through %s: %v", policy, network, from.name, addr, err)
					}
					if w := want(from.ns, a); a.peer != w {
						t.Fatalf("%s: %s from the %s: backend %s saw %s, want %s", policy, network, from.name, a.backend, a.peer, w)
					}
					seen[a.backend] = true
				}
				reached := len(seen)
				for _, b := range serving {
					delete(seen, b)
				}
				if len(seen) > 0 || reached != len(serving) {
					t.Fatalf("%s: %s from the %s reached %d backends, %v of them not serving; want %v", policy, network, from.name, reached, seen, serving)
				}
				t.Logf("%s: %s from the %s: %v saw the expected source", policy, network, from.name, serving)
			}
		}
	}
	// Cluster: every backend sees the node.
	cluster := func(_ *kerneltest.NS, a answer) netip.Addr { return node(a) }
	// Local: a backend sees the client's own address. A backend calling
	// its own VIP is masqueraded (scheduled to itself, it would drop a
	// packet from its own address). A client on the node has the VIP as
	// its source (the kernel's choice for a local destination): left as
	// it is, the backend answers it through the node.
	local := func(from *kerneltest.NS, a answer) netip.Addr {
		switch from {
		case clientNS:
			return clientNS.IP(false)
		case nil:
			return vip
		}
		return node(a)
	}
	// switchTo changes the policy and waits until the client's connections
	// show it.
	switchTo := func(p lvsv1.TrafficPolicy, want func(*kerneltest.NS, answer) netip.Addr) {
		t.Helper()
		patch := client.MergeFrom(vs.DeepCopy())
		vs.Spec.TrafficPolicy = p
		if err := c.Patch(ctx, vs, patch); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("trafficPolicy %s in the kernel", p), func() error {
			a, err := ask(clientNS, "tcp", addr)
			if err == nil && a.peer != want(clientNS, a) {
				err = fmt.Errorf("backend %s saw %s", a.backend, a.peer)
			}
			return err
		})
	}

	waitFor(t, 60*time.Second, "TCP through the VIP", func() error {
		_, err := ask(clientNS, "tcp", addr)
		return err
	})
	check("Cluster", []string{"p1", "p2", "r1"}, cluster)
	// A connection to r1, held through the changes.
	var held *conn
	for i := 0; i < 3 && held == nil; i++ {
		cc, hello := dial(t, clientNS, addr)
		if strings.HasPrefix(hello, "r1 ") {
			held = cc
		}
	}
	if held == nil {
		t.Fatal("rr over 3 backends: 3 connections, none to r1")
	}
	switchTo(lvsv1.TrafficPolicyLocal, local)
	check("Local", []string{"p1", "p2"}, local)
	if r, err := held.ping("still there"); err != nil || r != "r1: still there" {
		t.Fatalf("the connection to r1, established under Cluster, under Local: %q %v", r, err)
	}
	switchTo(lvsv1.TrafficPolicyCluster, cluster)
	check("Cluster again", []string{"p1", "p2", "r1"}, cluster)
	if r, err := held.ping("back"); err != nil || r != "r1: back" {
		t.Fatalf("the connection to r1, back under Cluster: %q %v", r, err)
	}
}
