//go:build linux

// Package guestenv brings up kubelvs inside a guest kernel the way a
// cluster would run it, minus the kubelet: etcd and kube-apiserver
// (envtest), the Helm chart's namespace, ServiceAccounts, RBAC, DaemonSet
// and Deployment objects, and the controller and the agent as processes
// with the arguments of the rendered containers, authenticated as their
// ServiceAccounts, so the RBAC the chart ships is the RBAC they run with.
// The end-to-end suite and `make demo` use it.
package guestenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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

	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/roles"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

const (
	// SystemNamespace is where the chart installs kubelvs.
	SystemNamespace = "kubelvs-system"
	// NodeName is the guest's node.
	NodeName = "guest"
)

// Env is kubelvs running in the guest.
type Env struct {
	// Root is the repository root (config/crd, charts/kubelvs).
	Root string
	// Bin is the manager binary.
	Bin string
	// Dir holds kubeconfigs and logs.
	Dir             string
	API             client.Client
	Config          *rest.Config
	AdminKubeconfig string
	Chart           []*unstructured.Unstructured
	Agent           *Proc
	Controller      *Proc
	Logf            func(format string, args ...any)
	// AgentDaemonSet and ControllerDeployment are the chart's, as
	// ApplyChart created them.
	AgentDaemonSet       *appsv1.DaemonSet
	ControllerDeployment *appsv1.Deployment

	env         *envtest.Environment
	kubeconfigs map[string]string // ServiceAccount: kubeconfig path
}

func (e *Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

// StartAPIServer starts only etcd and kube-apiserver, with the CRD, and
// writes AdminKubeconfig; KUBEBUILDER_ASSETS must name the directory of etcd
// and kube-apiserver.
func StartAPIServer(root string, logf func(string, ...any)) (*Env, error) {
	e := &Env{Root: root, Logf: logf}
	var err error
	if e.Dir, err = os.MkdirTemp("", "kubelvs-guest-"); err != nil {
		return nil, err
	}
	e.logf("starting etcd and kube-apiserver in the guest")
	if err := e.startAPIServer(); err != nil {
		return nil, err
	}
	return e, nil
}

// Start brings everything up: StartAPIServer, then the chart's objects and
// the two processes; KUBEBUILDER_ASSETS must also hold helm.
func Start(root, bin string, logf func(string, ...any)) (*Env, error) {
	e, err := StartAPIServer(root, logf)
	if err != nil {
		return nil, err
	}
	e.Bin = bin
	e.logf("installing the Helm chart's RBAC and objects; starting the controller and the agent")
	if err := e.install(); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// AdmitAll creates an AddressPool that admits every namespace to cidrs:
// the agent binds only addresses a pool admits.
func (e *Env) AdmitAll(name string, cidrs ...string) error {
	p := &lvsv1.AddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       lvsv1.AddressPoolSpec{NamespaceSelector: &lvsv1.LabelSelector{}},
	}
	for _, c := range cidrs {
		p.Spec.CIDRs = append(p.Spec.CIDRs, lvsv1.PoolCIDR(c))
	}
	if err := e.API.Create(context.Background(), p); err != nil {
		return fmt.Errorf("create AddressPool %s: %w", name, err)
	}
	return nil
}

// Stop stops the processes and the API server; the kernel stays as it is.
func (e *Env) Stop() {
	if e.Agent != nil {
		_ = e.Agent.Stop()
	}
	if e.Controller != nil {
		_ = e.Controller.Stop()
	}
	if e.env != nil {
		_ = e.env.Stop()
	}
}

// APIServerLogTail returns the last n lines of kube-apiserver's and etcd's
// output.
func (e *Env) APIServerLogTail(n int) string {
	var b strings.Builder
	for _, name := range []string{"kube-apiserver.log", "etcd.log"} {
		data, err := os.ReadFile(filepath.Join(e.Dir, name))
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", name, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- %s (last %d of %d lines)\n%s\n", name, min(n, len(lines)), len(lines), strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}

// RestartAgent stops the agent and starts it again, as a rollout does.
func (e *Env) RestartAgent() error {
	if err := e.Agent.Stop(); err != nil {
		return fmt.Errorf("stop agent: %w\n%s", err, e.Agent.Tail())
	}
	if err := e.Agent.Start(); err != nil {
		return err
	}
	return e.AgentReady()
}

// Uninstall deletes what `helm uninstall` deletes (the rendered objects;
// CRDs and VirtualServices stay), then stops the processes as the kubelet
// would once their pods are deleted.
func (e *Env) Uninstall() error {
	ctx := context.Background()
	for i := len(e.Chart) - 1; i >= 0; i-- {
		if err := e.API.Delete(ctx, e.Chart[i]); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s: %w", e.Chart[i].GetKind(), e.Chart[i].GetName(), err)
		}
	}
	// The controller cannot release its Lease once its Role is gone, and
	// says so in its exit status; only the agent's stop is checked.
	_ = e.Controller.Stop()
	return e.Agent.Stop()
}

// Proc is a manager process with its log.
type Proc struct {
	Name string
	Args []string
	Env  []string
	Log  string
	// Restart starts it again a second after it exits on its own, as the
	// kubelet restarts a pod's container: the controller exits when it
	// loses its leader election, which a starved single-CPU guest can make
	// it do.
	Restart bool
	// Launch starts cmd (default cmd.Start): e.g. from a thread inside a
	// network namespace, which the process then runs in.
	Launch func(cmd *exec.Cmd) error

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	err      error         // cmd's exit
	stopping bool
	restarts int
}

// Start starts the process.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = false
	return p.startLocked()
}

func (p *Proc) startLocked() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	launch := p.Launch
	if launch == nil {
		launch = (*exec.Cmd).Start
	}
	if err := launch(cmd); err != nil {
		f.Close()
		return err
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		close(exited)
		again := p.Restart && !p.stopping && p.cmd == cmd
		p.mu.Unlock()
		if !again {
			return
		}
		time.Sleep(time.Second)
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopping && p.cmd == cmd {
			p.restarts++
			if err := p.startLocked(); err != nil {
				fmt.Fprintf(os.Stderr, "guestenv: restart %s: %v\n", p.Name, err)
			}
		}
	}()
	return nil
}

// Restarts is how many times it was started again after exiting on its own.
func (p *Proc) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// signal sends sig and waits up to 60 s for the process to exit, returning
// its exit; nil if it was not running.
func (p *Proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.stopping = true
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil // exited already
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(kerneltest.Timeout(60 * time.Second)):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not stop within 60s", p.Name)
	}
}

// Stop sends SIGTERM, as the kubelet does, and waits.
func (p *Proc) Stop() error { return p.signal(syscall.SIGTERM) }

// Kill sends SIGKILL, as a crash or an OOM kill would, and waits.
func (p *Proc) Kill() error {
	_ = p.signal(syscall.SIGKILL) // "signal: killed"
	return nil
}

// Pid is the process's id, 0 when it does not run.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Tail returns the last lines of its log.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func (e *Env) startAPIServer() error {
	// kube-apiserver needs a non-loopback address to advertise; the guest
	// has only loopback.
	// A guest boot may start several API servers, one after the other
	// (one per test): the first one makes the interface.
	const dummy, addr = "e2eapi0", "192.0.2.251"
	link, err := netlink.LinkByName(dummy)
	if err != nil {
		link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dummy}}
		if err := netlink.LinkAdd(link); err != nil {
			return fmt.Errorf("dummy %s: %w", dummy, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(addr), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	e.env = &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(e.Root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: kerneltest.Timeout(3 * time.Minute),
	}
	e.env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", addr)
	e.env.ControlPlane.Etcd = &envtest.Etcd{}
	// Keep their output: when a test sees the API server go away, the
	// reason is in there (APIServerLogTail).
	for _, l := range []struct {
		name string
		out  *io.Writer
		err  *io.Writer
	}{
		{"kube-apiserver.log", &e.env.ControlPlane.GetAPIServer().Out, &e.env.ControlPlane.GetAPIServer().Err},
		{"etcd.log", &e.env.ControlPlane.Etcd.Out, &e.env.ControlPlane.Etcd.Err},
	} {
		f, err := os.Create(filepath.Join(e.Dir, l.name))
		if err != nil {
			return err
		}
		*l.out, *l.err = f, f
	}
	start := time.Now()
	cfg, err := e.env.Start()
	if err != nil {
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	e.logf("etcd and kube-apiserver up after %s", time.Since(start).Round(time.Second))
	e.Config = cfg
	e.API, err = client.New(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return err
	}
	e.AdminKubeconfig, err = writeKubeconfig(cfg, filepath.Join(e.Dir, "admin.kubeconfig"))
	return err
}

// install renders the Helm chart and applies what a cluster without a
// kubelet can use (ApplyChart); then it runs the controller and the agent as
// processes, with the arguments of the rendered containers and as their
// ServiceAccounts, so the RBAC the chart ships is the RBAC they run with.
func (e *Env) install() error {
	ctx := context.Background()
	if err := e.ApplyChart(); err != nil {
		return err
	}
	if err := e.API.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}}); err != nil {
		return err
	}
	var err error
	if e.Agent, err = e.AgentProc(NodeName); err != nil {
		return err
	}
	if e.Controller, err = e.ControllerProc(); err != nil {
		return err
	}
	if err := e.Controller.Start(); err != nil {
		return err
	}
	if err := e.Agent.Start(); err != nil {
		return err
	}
	return e.AgentReady()
}

// ApplyChart renders the Helm chart and creates what a cluster without a
// kubelet can use: namespace, ServiceAccounts, RBAC, the DaemonSet and
// Deployment objects (their pods never start here). KUBEBUILDER_ASSETS must
// hold helm. It sets Chart, AgentDaemonSet and ControllerDeployment.
func (e *Env) ApplyChart() error {
	ctx := context.Background()
	helm := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "helm")
	out, err := exec.Command(helm, "template", "kubelvs", filepath.Join(e.Root, "charts", "kubelvs"), "--namespace", SystemNamespace).Output()
	if err != nil {
		return fmt.Errorf("helm template: %w", err)
	}
	if err := e.API.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SystemNamespace}}); err != nil {
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
			u.SetNamespace(SystemNamespace)
		}
		if err := e.API.Create(ctx, u); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		e.Chart = append(e.Chart, u)
	}
	if ds.Name == "" || dep.Name == "" {
		return errors.New("the chart rendered no agent DaemonSet or controller Deployment")
	}
	e.AgentDaemonSet, e.ControllerDeployment = &ds, &dep
	return nil
}

// AgentProc creates the agent's pod on node, owned by the DaemonSet, as the
// DaemonSet controller would make it (the agent reads it to tell an
// uninstall from a restart), and returns the agent of that node as a
// process, not started: the rendered container's arguments, authenticated
// as the DaemonSet's ServiceAccount, logging to Dir/agent-<node>.log.
// ApplyChart must have run.
func (e *Env) AgentProc(node string) (*Proc, error) {
	ctx := context.Background()
	ds := e.AgentDaemonSet
	var cur appsv1.DaemonSet
	if err := e.API.Get(ctx, client.ObjectKey{Namespace: SystemNamespace, Name: ds.Name}, &cur); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-" + node, Namespace: SystemNamespace,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: cur.UID, Controller: ptr.To(true)}}},
		Spec: ds.Spec.Template.Spec}
	pod.Spec.NodeName = node
	if err := e.API.Create(ctx, pod); err != nil {
		return nil, err
	}
	kc, err := e.KubeconfigFor(ds.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		return nil, err
	}
	return &Proc{Name: "agent-" + node, Log: filepath.Join(e.Dir, "agent-"+node+".log"),
		Args: append(append([]string{e.Bin}, containerArgs(ds.Spec.Template.Spec, "agent")...), "--kubeconfig", kc),
		Env:  []string{"NODE_NAME=" + node, "POD_NAME=" + pod.Name, "POD_NAMESPACE=" + SystemNamespace}}, nil
}

// ControllerProc returns the controller as a process, not started: the
// rendered container's arguments, authenticated as the Deployment's
// ServiceAccount, restarted when it exits on its own. ApplyChart must have
// run.
func (e *Env) ControllerProc() (*Proc, error) {
	dep := e.ControllerDeployment
	kc, err := e.KubeconfigFor(dep.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		return nil, err
	}
	return &Proc{Name: "controller", Log: filepath.Join(e.Dir, "controller.log"), Restart: true,
		Args: append(append([]string{e.Bin}, containerArgs(dep.Spec.Template.Spec, "controller")...), "--kubeconfig", kc),
		Env:  []string{"POD_NAMESPACE=" + SystemNamespace}}, nil
}

func containerArgs(spec corev1.PodSpec, name string) []string {
	for _, c := range spec.Containers {
		if c.Name == name || len(spec.Containers) == 1 {
			return c.Args
		}
	}
	return nil
}

// KubeconfigFor writes, once per ServiceAccount, a kubeconfig that
// authenticates as the ServiceAccount (by its user name, which RBAC subjects
// of kind ServiceAccount match), and returns its path.
func (e *Env) KubeconfigFor(sa string) (string, error) {
	if p, ok := e.kubeconfigs[sa]; ok {
		return p, nil
	}
	user, err := e.env.AddUser(envtest.User{
		Name:   fmt.Sprintf("system:serviceaccount:%s:%s", SystemNamespace, sa),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + SystemNamespace, "system:authenticated"},
	}, nil)
	if err != nil {
		return "", err
	}
	p, err := writeKubeconfig(user.Config(), filepath.Join(e.Dir, sa+".kubeconfig"))
	if err != nil {
		return "", err
	}
	if e.kubeconfigs == nil {
		e.kubeconfigs = map[string]string{}
	}
	e.kubeconfigs[sa] = p
	return p, nil
}

func writeKubeconfig(cfg *rest.Config, path string) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	return path, clientcmd.WriteToFile(*kc, path)
}

// ProbeAddr is where the process's health probes answer, on loopback: the
// port of its --health-probe-bind-address (9742 by default).
func (p *Proc) ProbeAddr() string {
	addr := "127.0.0.1:9742"
	for _, a := range p.Args {
		if v, ok := strings.CutPrefix(a, "--health-probe-bind-address="); ok {
			addr = "127.0.0.1" + v[strings.LastIndex(v, ":"):]
		}
	}
	return addr
}

// Exited reports whether the process was started and has exited.
func (p *Proc) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// AgentReady waits for the agent's /readyz (first full sync done).
func (e *Env) AgentReady() error {
	addr := e.Agent.ProbeAddr()
	deadline := time.Now().Add(kerneltest.Timeout(90 * time.Second))
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if e.Agent.Exited() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the agent is not ready; its log:\n%s", e.Agent.Tail())
}
