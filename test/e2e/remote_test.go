//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubelvs/kubelvs/pkg/roles"
)

// remote drives a real cluster with kubelvs installed (e.g. kind): backends
// and clients are pods of the e2e-echo image, all on one node so that the
// agent there is the one that programs what the suite checks; the kernel
// is read with `manager dump` in that node's agent pod. The release's
// objects are found by the chart's labels, not by name.
type remote struct {
	api        client.Client
	kubeconfig string
	ns         string
	node       string
	// agent is the name of the release's agent DaemonSet, agentImage the
	// image of its agent container (with iptables and sh).
	agent      string
	agentImage string
	clients    int
	nodePods   int
	// installed: the suite installed the release and has not uninstalled it.
	installed bool
}

func newRemote(kubeconfig string) (Cluster, func(), error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	api, err := client.New(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return nil, nil, err
	}
	r := &remote{api: api, kubeconfig: kubeconfig, ns: "kubelvs-e2e"}
	if *install {
		if err := r.installRelease(); err != nil {
			r.stop()
			return nil, nil, err
		}
	}
	if err := r.findAgent(); err != nil {
		r.stop()
		return nil, nil, err
	}
	if err := r.ensureNamespace(r.ns); err != nil {
		r.stop()
		return nil, nil, err
	}
	return r, r.stop, nil
}

// findAgent finds the release's agent DaemonSet, its image, and the node
// of one of its pods: the suite's node.
func (r *remote) findAgent() error {
	ctx := context.Background()
	var dss appsv1.DaemonSetList
	if err := r.api.List(ctx, &dss, client.InNamespace(*releaseNamespace), agentLabels()); err != nil {
		return err
	}
	if len(dss.Items) != 1 {
		return fmt.Errorf("%d agent DaemonSets of release %s in %s (labels %v); is kubelvs installed?", len(dss.Items), *release, *releaseNamespace, agentLabels())
	}
	r.agent = dss.Items[0].Name
	for _, c := range dss.Items[0].Spec.Template.Spec.Containers {
		if c.Name == "agent" {
			r.agentImage = c.Image
		}
	}
	if r.agentImage == "" {
		return fmt.Errorf("DaemonSet %s has no container named agent", r.agent)
	}
	var pods corev1.PodList
	if err := r.api.List(ctx, &pods, client.InNamespace(*releaseNamespace), agentLabels()); err != nil || len(pods.Items) == 0 {
		return fmt.Errorf("no agent pods of release %s in %s: %v", *release, *releaseNamespace, err)
	}
	r.node = pods.Items[0].Spec.NodeName
	return nil
}

// stop deletes the suite's namespace and, if the suite installed the
// release and it is still there (the uninstall scenario did not run), the
// release.
func (r *remote) stop() {
	_ = r.api.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.ns}})
	if r.installed {
		if out, err := r.helm("uninstall", *release, "-n", *releaseNamespace, "--wait", "--timeout", "5m"); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n%s", err, out)
		}
	}
}

// ensureNamespace creates the namespace, or labels it if it exists, so that
// it admits privileged pods (the agent's init container, the suite's node
// pods); it waits out a namespace an earlier run is still deleting.
func (r *remote) ensureNamespace(name string) error {
	ctx := context.Background()
	const label, level = "pod-security.kubernetes.io/enforce", "privileged"
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ns := &corev1.Namespace{}
		err := r.api.Get(ctx, client.ObjectKey{Name: name}, ns)
		switch {
		case apierrors.IsNotFound(err):
			ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{label: level}}}
			return r.api.Create(ctx, ns)
		case err != nil:
			return err
		case ns.DeletionTimestamp == nil:
			patch := client.MergeFrom(ns.DeepCopy())
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[label] = level
			return r.api.Patch(ctx, ns, patch)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: still terminating", name)
		}
		time.Sleep(time.Second)
	}
}

// agentLabels select the release's agent DaemonSet and pods (the chart's
// kubelvs.selectorLabels).
func agentLabels() client.MatchingLabels {
	return client.MatchingLabels{"app.kubernetes.io/instance": *release, "app.kubernetes.io/component": "agent"}
}

func (r *remote) API() client.Client { return r.api }
func (r *remote) Namespace() string  { return r.ns }

func (r *remote) kubectl(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command(*kubectlBin, append([]string{"--kubeconfig", r.kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// pod runs e2e-echo with args on the suite's node and waits until it runs.
func (r *remote) pod(t *testing.T, name string, labels map[string]string, args ...string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, Labels: labels}, Spec: corev1.PodSpec{
		NodeName:    r.node,
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Containers:  []corev1.Container{{Name: "echo", Image: *echoImage, ImagePullPolicy: corev1.PullIfNotPresent, Args: args}},
	}}
	ctx := context.Background()
	if err := r.api.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.api.Delete(context.Background(), p, client.GracePeriodSeconds(0)) })
	eventually(t, 2*time.Minute, "pod "+name+" running", func() error {
		if err := r.api.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	return p
}

func (r *remote) Backends(t *testing.T, svc string, n int) []Backend {
	t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: r.ns}, Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone,
		Selector:  map[string]string{"e2e-service": svc, "e2e-member": "true"},
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 5353, TargetPort: intstr.FromInt32(5353), Protocol: corev1.ProtocolUDP},
		},
	}}
	if err := r.api.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.api.Delete(context.Background(), s) })
	var out []Backend
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-%d", svc, i)
		p := r.pod(t, name, map[string]string{"e2e-service": svc, "e2e-member": "false"}, "serve", name)
		out = append(out, Backend{Name: name, Addr: netip.MustParseAddr(p.Status.PodIP)})
	}
	return out
}

// SetEndpoints labels the members; the EndpointSlice controller follows.
func (r *remote) SetEndpoints(t *testing.T, svc string, bs []Backend) {
	t.Helper()
	ctx := context.Background()
	member := map[string]bool{}
	for _, b := range bs {
		member[b.Name] = true
	}
	var pods corev1.PodList
	if err := r.api.List(ctx, &pods, client.InNamespace(r.ns), client.MatchingLabels{"e2e-service": svc}); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		patch := client.MergeFrom(p.DeepCopy())
		p.Labels["e2e-member"] = fmt.Sprint(member[p.Name])
		if err := r.api.Patch(ctx, p, patch); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *remote) SetHealthy(t *testing.T, b Backend, ok bool) {
	t.Helper()
	path := "/fail"
	if ok {
		path = "/ok"
	}
	if _, err := r.kubectl(nil, "exec", "-n", r.ns, b.Name, "--", "/e2e-echo", "get", fmt.Sprintf("http://127.0.0.1:8081%s", path)); err != nil {
		t.Fatal(err)
	}
}

func (r *remote) Client(t *testing.T) Client {
	r.clients++
	p := r.pod(t, fmt.Sprintf("client-%d", r.clients), nil, "serve", "client")
	return &podClient{r: r, pod: p.Name, addr: netip.MustParseAddr(p.Status.PodIP)}
}

func (r *remote) Outsider(t *testing.T) Client { return r.Client(t) }

// KernelDump reads `manager dump` in the node's agent pod, keeping vip's
// virtual servers and their real servers without the connection counts.
func (r *remote) KernelDump(t *testing.T, vip netip.Addr) string {
	t.Helper()
	out, err := r.kubectl(nil, "exec", "-n", *releaseNamespace, r.agentPod(t).Name, "-c", "agent", "--", "/manager", "dump")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	keep := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "  -> "):
			if keep {
				b.WriteString(strings.SplitN(line, " active=", 2)[0] + "\n")
			}
		default:
			f := strings.Fields(line)
			keep = len(f) > 0 && strings.Contains(f[0], "/") &&
				(strings.Contains(f[0], "/"+vip.String()+":") || strings.Contains(f[0], "/["+vip.String()+"]:"))
			if keep {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// podClient sends traffic from a client pod with kubectl exec.
type podClient struct {
	r    *remote
	pod  string
	addr netip.Addr
}

func (c *podClient) Addr() netip.Addr { return c.addr }

func (c *podClient) Greet(addr netip.AddrPort) (string, error) {
	out, err := c.r.kubectl(nil, "exec", "-n", c.r.ns, c.pod, "--", "/e2e-echo", "greet", addr.String())
	return strings.TrimSpace(out), err
}

func (c *podClient) Ask(addr netip.AddrPort, sport uint16) (string, error) {
	out, err := c.r.kubectl(nil, "exec", "-n", c.r.ns, c.pod, "--", "/e2e-echo", "ask", addr.String(), fmt.Sprint(sport))
	return strings.TrimSpace(out), err
}

func (c *podClient) Hold(addr netip.AddrPort) (Held, error) {
	cmd := exec.Command(*kubectlBin, "--kubeconfig", c.r.kubeconfig, "exec", "-i", "-n", c.r.ns, c.pod, "--", "/e2e-echo", "hold", addr.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// What the pod's hold command or kubectl says when the stream ends
	// tells a reset connection from a broken exec stream.
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &podHeld{cmd: cmd, in: in, out: bufio.NewReader(outp), stderr: stderr}
	line, err := h.out.ReadString('\n')
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	h.backend = strings.TrimSpace(line)
	return h, nil
}

type podHeld struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Reader
	backend string
	stderr  *lockedBuffer
}

func (h *podHeld) Backend() string { return h.backend }

func (h *podHeld) Ping(msg string) (string, error) {
	if _, err := fmt.Fprintf(h.in, "%s\n", msg); err != nil {
		return "", err
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		// The stream ended: wait briefly for the exit status and stderr.
		done := make(chan error, 1)
		go func() { done <- h.cmd.Wait() }()
		var exit error
		select {
		case exit = <-done:
		case <-time.After(10 * time.Second):
			exit = errors.New("kubectl exec still running")
		}
		h.cmd = nil
		return strings.TrimSpace(line), fmt.Errorf("%w (kubectl exec: %v; stderr: %q)", err, exit, h.stderr.String())
	}
	return strings.TrimSpace(line), nil
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (h *podHeld) Close() error {
	h.in.Close()
	if h.cmd == nil { // waited for in Ping
		return nil
	}
	return h.cmd.Wait()
}
