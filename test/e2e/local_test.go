//go:build e2e && linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/test/e2e/echo"
)

const (
	systemNS = "kubelvs-system"
	nodeName = "guest"
)

// local runs everything on this (guest) kernel.
type local struct {
	env   *envtest.Environment
	api   client.Client
	ipvs  ipvs.Interface
	dir   string
	bin   string
	chart []*unstructured.Unstructured
	agent *proc
	ctrl  *proc

	mu      sync.Mutex
	nextNS  int
	servers map[string]*echo.Server
}

// proc is a manager process with its log.
type proc struct {
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	log  string
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	return p.cmd.Start()
}

// stop sends SIGTERM, as the kubelet does, and waits.
func (p *proc) stop() error {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("%s did not stop within 60s", p.name)
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func newLocal() (Cluster, func(), error) {
	if !kerneltest.Enabled() {
		return nil, nil, fmt.Errorf("the local driver needs a guest kernel: run `make e2e` (or pass -kubeconfig for a cluster)")
	}
	l := &local{servers: map[string]*echo.Server{}, nextNS: 40}
	l.bin = os.Getenv("KUBELVS_MANAGER")
	if l.bin == "" {
		return nil, nil, errors.New("KUBELVS_MANAGER (the manager binary) is not set")
	}
	var err error
	if l.dir, err = os.MkdirTemp("", "kubelvs-e2e-"); err != nil {
		return nil, nil, err
	}
	if err := l.startAPIServer(); err != nil {
		return nil, nil, err
	}
	stop := func() {
		_ = l.agent.stop()
		_ = l.ctrl.stop()
		_ = l.env.Stop()
	}
	if err := l.install(); err != nil {
		stop()
		return nil, nil, err
	}
	if l.ipvs, err = ipvs.New(); err != nil {
		stop()
		return nil, nil, err
	}
	return l, stop, nil
}

func (l *local) startAPIServer() error {
	// kube-apiserver needs a non-loopback address to advertise; the guest
	// has only loopback.
	const dummy, addr = "e2eapi0", "192.0.2.251"
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dummy}}
	if err := netlink.LinkAdd(link); err != nil {
		return fmt.Errorf("dummy %s: %w", dummy, err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(addr), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	l.env = &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 3 * time.Minute,
	}
	l.env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", addr)
	start := time.Now()
	cfg, err := l.env.Start()
	if err != nil {
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: etcd and kube-apiserver up after %s\n", time.Since(start).Round(time.Second))
	l.api, err = client.New(cfg, client.Options{Scheme: roles.Scheme()})
	return err
}

// install renders the Helm chart and applies what a cluster without a
// kubelet can use: namespace, ServiceAccounts, RBAC, the DaemonSet and
// Deployment objects (their pods never start here); then it runs the
// controller and the agent as processes, with the arguments of the rendered
// containers and as their ServiceAccounts, so the RBAC the chart ships is
// the RBAC they run with.
func (l *local) install() error {
	ctx := context.Background()
	helm := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "helm")
	out, err := exec.Command(helm, "template", "kubelvs", filepath.Join("..", "..", "charts", "kubelvs"), "--namespace", systemNS).Output()
	if err != nil {
		return fmt.Errorf("helm template: %w", err)
	}
	if err := l.api.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}); err != nil {
		return err
	}
	if err := l.api.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}); err != nil {
		return err
	}
	var ds appsv1.DaemonSet
	var dep appsv1.Deployment
	for _, doc := range bytes.Split(out, []byte("\n---")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil || len(u.Object) == 0 {
			continue
		}
		switch u.GetKind() {
		case "ServiceMonitor":
			continue
		case "DaemonSet":
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ds); err != nil {
				return err
			}
		case "Deployment":
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &dep); err != nil {
				return err
			}
		}
		if u.GetNamespace() == "" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" {
			u.SetNamespace(systemNS)
		}
		if err := l.api.Create(ctx, u); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		l.chart = append(l.chart, u)
	}
	if ds.Name == "" || dep.Name == "" {
		return errors.New("the chart rendered no agent DaemonSet or controller Deployment")
	}
	// The agent's pod, owned by the DaemonSet, as the DaemonSet controller
	// would make it: the agent reads it to tell an uninstall from a restart.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-guest", Namespace: systemNS,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}}},
		Spec: ds.Spec.Template.Spec}
	pod.Spec.NodeName = nodeName
	if err := l.createOwnedPod(ctx, pod, ds.Name); err != nil {
		return err
	}

	agentKC, err := l.kubeconfigFor(ds.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		return err
	}
	ctrlKC, err := l.kubeconfigFor(dep.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		return err
	}
	l.agent = &proc{name: "agent", log: filepath.Join(l.dir, "agent.log"),
		args: append(append([]string{l.bin}, containerArgs(ds.Spec.Template.Spec, "agent")...), "--kubeconfig", agentKC),
		env:  []string{"NODE_NAME=" + nodeName, "POD_NAME=" + pod.Name, "POD_NAMESPACE=" + systemNS}}
	l.ctrl = &proc{name: "controller", log: filepath.Join(l.dir, "controller.log"),
		args: append(append([]string{l.bin}, containerArgs(dep.Spec.Template.Spec, "controller")...), "--kubeconfig", ctrlKC),
		env:  []string{"POD_NAMESPACE=" + systemNS}}
	if err := l.ctrl.start(); err != nil {
		return err
	}
	if err := l.agent.start(); err != nil {
		return err
	}
	return l.agentReady()
}

// createOwnedPod creates the pod with the DaemonSet's real UID.
func (l *local) createOwnedPod(ctx context.Context, pod *corev1.Pod, ds string) error {
	var cur appsv1.DaemonSet
	if err := l.api.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: ds}, &cur); err != nil {
		return err
	}
	pod.OwnerReferences[0].UID = cur.UID
	return l.api.Create(ctx, pod)
}

func containerArgs(spec corev1.PodSpec, name string) []string {
	for _, c := range spec.Containers {
		if c.Name == name || len(spec.Containers) == 1 {
			return c.Args
		}
	}
	return nil
}

// kubeconfigFor writes a kubeconfig that authenticates as the
// ServiceAccount (by its user name, which RBAC subjects of kind
// ServiceAccount match).
func (l *local) kubeconfigFor(sa string) (string, error) {
	user, err := l.env.AddUser(envtest.User{
		Name:   fmt.Sprintf("system:serviceaccount:%s:%s", systemNS, sa),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNS, "system:authenticated"},
	}, nil)
	if err != nil {
		return "", err
	}
	return writeKubeconfig(user.Config(), filepath.Join(l.dir, sa+".kubeconfig"))
}

func writeKubeconfig(cfg *rest.Config, path string) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	return path, clientcmd.WriteToFile(*kc, path)
}

// agentReady waits for the agent's /readyz (first full sync done).
func (l *local) agentReady() error {
	addr := "127.0.0.1:9742"
	for _, a := range l.agent.args {
		if v, ok := strings.CutPrefix(a, "--health-probe-bind-address="); ok {
			addr = "127.0.0.1" + v[strings.LastIndex(v, ":"):]
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if l.agent.cmd.ProcessState != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the agent is not ready; its log:\n%s", l.agent.tail())
}

func (l *local) API() client.Client   { return l.api }
func (l *local) Namespace() string    { return "default" }
func (l *local) VIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 96, 9, byte(n)}) }

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
	err := l.api.Get(ctx, client.ObjectKeyFromObject(slice), &cur)
	switch {
	case apierrors.IsNotFound(err):
		err = l.api.Create(ctx, slice)
		t.Cleanup(func() { _ = l.api.Delete(context.Background(), slice) })
	case err == nil:
		cur.Endpoints = slice.Endpoints
		err = l.api.Update(ctx, &cur)
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
	t.Helper()
	vss, err := l.ipvs.ListVirtualServers()
	if err != nil {
		t.Fatal(err)
	}
	ipvs.SortVirtualServers(vss)
	var b strings.Builder
	for _, v := range vss {
		if v.Address != vip {
			continue
		}
		rs, err := l.ipvs.ListRealServers(v.Key())
		if err != nil {
			t.Fatal(err)
		}
		ipvs.SortRealServers(rs)
		fmt.Fprintf(&b, "%s\n", v)
		for _, r := range rs {
			fmt.Fprintf(&b, "  -> %s\n", r)
		}
	}
	return b.String()
}

func (l *local) RestartAgent(t *testing.T) {
	t.Helper()
	if err := l.agent.stop(); err != nil {
		t.Fatalf("stop agent: %v\n%s", err, l.agent.tail())
	}
	if err := l.agent.start(); err != nil {
		t.Fatal(err)
	}
	if err := l.agentReady(); err != nil {
		t.Fatal(err)
	}
}

// Uninstall deletes what `helm uninstall` deletes (the rendered objects;
// CRDs and VirtualServices stay), then stops the processes as the kubelet
// would once their pods are deleted.
func (l *local) Uninstall(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	for i := len(l.chart) - 1; i >= 0; i-- {
		if err := l.api.Delete(ctx, l.chart[i]); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete %s %s: %v", l.chart[i].GetKind(), l.chart[i].GetName(), err)
		}
	}
	if err := l.agent.stop(); err != nil {
		t.Errorf("agent: %v", err)
	}
	t.Logf("agent log after uninstall:\n%s", l.agent.tail())
	if err := l.ctrl.stop(); err != nil {
		t.Errorf("controller: %v", err)
	}
	return leftovers(t)
}

// leftovers lists kubelvs's kernel objects: IPVS services on the suite's
// VIPs, kubelvs0, KUBELVS- ipsets and chains.
func leftovers(t *testing.T) []string {
	var left []string
	h, err := ipvs.New()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	vss, err := h.ListVirtualServers()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vss {
		if netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, 9, 0}), 24).Contains(v.Address) {
			left = append(left, "IPVS "+v.String())
		}
	}
	if _, err := netlink.LinkByName("kubelvs0"); err == nil {
		left = append(left, "interface kubelvs0")
	}
	for _, c := range [][]string{{"ipset", "list", "-n"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "KUBELVS") {
				left = append(left, c[0]+": "+line)
			}
		}
	}
	return left
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
	var pc net.PacketConn
	if err := c.ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(c.ns.IP(false), sport).String())
		return err
	}); err != nil {
		return "", err
	}
	defer pc.Close()
	return echo.Ask(pc, net.UDPAddrFromAddrPort(addr), 2*time.Second)
}

type heldConn struct{ c *echo.Conn }

func (h heldConn) Backend() string { return h.c.Backend }
func (h heldConn) Ping(msg string) (string, error) {
	return h.c.Ping(msg, 5*time.Second)
}
func (h heldConn) Close() error { return h.c.Close() }
