//go:build e2e && linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvsnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/test/e2e/echo"
	"github.com/kubelvs/kubelvs/test/guestenv"
)

const nodeName = guestenv.NodeName

// local runs everything on this (guest) kernel: see package guestenv.
type local struct {
	*guestenv.Env
	ipvs ipvs.Interface

	mu      sync.Mutex
	nextNS  int
	servers map[string]*echo.Server
}

func newLocal() (Cluster, func(), error) {
	if !kerneltest.Enabled() {
		return nil, nil, fmt.Errorf("the local driver needs a guest kernel: run `make e2e` (or pass -kubeconfig for a cluster)")
	}
	bin := os.Getenv("KUBELVS_MANAGER")
	if bin == "" {
		return nil, nil, errors.New("KUBELVS_MANAGER (the manager binary) is not set")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return nil, nil, err
	}
	env, err := guestenv.Start(root, bin, func(f string, a ...any) { fmt.Fprintf(os.Stderr, "e2e: "+f+"\n", a...) })
	if err != nil {
		return nil, nil, err
	}
	l := &local{Env: env, servers: map[string]*echo.Server{}, nextNS: 40}
	if l.ipvs, err = ipvsnl.New(); err != nil {
		env.Stop()
		return nil, nil, err
	}
	return l, env.Stop, nil
}

func (l *local) API() client.Client { return l.Env.API }
func (l *local) Namespace() string  { return "default" }

func (l *local) newNS(t *testing.T, route bool) *kerneltest.NS {
	l.mu.Lock()
	l.nextNS++
	i := l.nextNS
	l.mu.Unlock()
	return kerneltest.NewNS(t, i, route)
}

func (l *local) Backends(t *testing.T, svc string, n int) []Backend {
	t.Helper()
	var out []Backend
	for i := 1; i <= n; i++ {
		// No default route: a backend answers clients only through the
		// director's masquerade, as a pod on another node would.
		ns := l.newNS(t, false)
		name := fmt.Sprintf("%s-%d", svc, i)
		var s *echo.Server
		if err := ns.Do(func() (err error) {
			s, err = echo.Listen(name, ns.IP(false).String(), 8080, 5353, 8081)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		l.mu.Lock()
		l.servers[name] = s
		l.mu.Unlock()
		out = append(out, Backend{Name: name, Addr: ns.IP(false)})
	}
	return out
}

func (l *local) SetEndpoints(t *testing.T, svc string, bs []Backend) {
	t.Helper()
	ctx := context.Background()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-e2e", Namespace: l.Namespace(), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
	}
	for _, b := range bs {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{b.Addr.String()}, NodeName: ptr.To(nodeName),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	var cur discoveryv1.EndpointSlice
	err := l.Env.API.Get(ctx, client.ObjectKeyFromObject(slice), &cur)
	switch {
	case apierrors.IsNotFound(err):
		err = l.Env.API.Create(ctx, slice)
		t.Cleanup(func() { _ = l.Env.API.Delete(context.Background(), slice) })
	case err == nil:
		cur.Endpoints = slice.Endpoints
		err = l.Env.API.Update(ctx, &cur)
	}
	if err != nil {
		t.Fatalf("EndpointSlice of %s: %v", svc, err)
	}
}

func (l *local) SetHealthy(t *testing.T, b Backend, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.servers[b.Name].SetHealthy(ok)
}

func (l *local) Client(t *testing.T) Client   { return &nsClient{ns: l.newNS(t, true)} }
func (l *local) Outsider(t *testing.T) Client { return &nsClient{ns: l.newNS(t, true)} }

func (l *local) KernelDump(t *testing.T, vip netip.Addr) string {
	ctx := context.Background()
	t.Helper()
	return kerneltest.DumpVIP(ctx, t, l.ipvs, vip)
}

// Can: the local driver installs kubelvs itself, so it may uninstall it;
// but it runs this build's agent as a process, without a chart release.
func (l *local) Can(op Op) error {
	switch op {
	case OpUpgrade:
		return errors.New("the local driver runs this build's agent as a process: there is no older release to upgrade from (the cluster driver does it with -install -previous-chart)")
	case OpRoll:
		return errors.New("the local driver has no DaemonSet to roll (deleting-the-agent-pod-keeps-traffic restarts its agent)")
	}
	return nil
}

func (l *local) UpgradeChart(t *testing.T) { t.Fatal(l.Can(OpUpgrade)) }
func (l *local) RollAgent(t *testing.T)    { t.Fatal(l.Can(OpRoll)) }

func (l *local) RestartAgent(t *testing.T) {
	t.Helper()
	if err := l.Env.RestartAgent(); err != nil {
		t.Fatal(err)
	}
}

func (l *local) Uninstall(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := l.Env.Uninstall(); err != nil {
		t.Errorf("uninstall: %v", err)
	}
	timing("uninstall to the agent stopped", start)
	t.Logf("agent log after uninstall:\n%s", l.Agent.Tail())
	t.Logf("controller log after uninstall:\n%s", l.Controller.Tail())
	if n := l.Controller.Restarts(); n > 0 {
		fmt.Fprintf(os.Stderr, "e2e: the controller exited and was started again %d times during the suite (see its log: a lost leader election?)\n", n)
	}
}

// NodeKernel runs the action here, in the guest's root namespace.
func (l *local) NodeKernel(t *testing.T, action string) []string {
	t.Helper()
	lines, err := echo.Kernel(action)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", iptablesScript, "sh", action, echo.ForeignChain).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %s: %v\n%s", action, err, out)
	}
	return append(lines, strings.Split(strings.TrimRight(string(out), "\n"), "\n")...)
}

// nsClient is a client in a network namespace.
type nsClient struct{ ns *kerneltest.NS }

func (c *nsClient) Addr() netip.Addr { return c.ns.IP(false) }

func (c *nsClient) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := c.ns.Do(func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

func (c *nsClient) Greet(addr netip.AddrPort) (string, error) {
	return echo.Greet(c.dial, addr.String(), 2*time.Second)
}

func (c *nsClient) Hold(addr netip.AddrPort) (Held, error) {
	conn, err := echo.Hold(c.dial, addr.String(), 3*time.Second)
	if err != nil {
		return nil, err
	}
	return heldConn{conn}, nil
}

func (c *nsClient) Ask(addr netip.AddrPort, sport uint16) (string, error) {
	return c.askWithin(addr, sport, 2*time.Second)
}

// askWithin is Ask with its own timeout.
func (c *nsClient) askWithin(addr netip.AddrPort, sport uint16, timeout time.Duration) (string, error) {
	var pc net.PacketConn
	if err := c.ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(c.ns.IP(false), sport).String())
		return err
	}); err != nil {
		return "", err
	}
	defer pc.Close()
	return echo.Ask(pc, net.UDPAddrFromAddrPort(addr), timeout)
}

type heldConn struct{ c *echo.Conn }

func (h heldConn) Backend() string { return h.c.Backend }
func (h heldConn) Ping(msg string) (string, error) {
	return h.c.Ping(msg, 5*time.Second)
}
func (h heldConn) Close() error { return h.c.Close() }
