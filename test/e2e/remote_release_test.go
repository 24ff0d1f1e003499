//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubelvs/kubelvs/test/e2e/echo"
)

// The release's lifecycle on the cluster: what the suite may do with
// -install, and how.

var errNotOwner = errors.New("the suite did not install the release (no -install), so it never upgrades or uninstalls it")

func (r *remote) Can(op Op) error {
	switch {
	case !*install:
		return errNotOwner
	case op == OpUpgrade && *previousChart == "":
		return errors.New("no -previous-chart to upgrade from")
	}
	return nil
}

func (r *remote) helm(args ...string) (string, error) {
	out, err := exec.Command(*helmBin, append([]string{"--kubeconfig", r.kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// imageValues are the --set flags of every helm install and upgrade: img
// (repository:tag), and extra values.
func imageValues(img string, extra ...string) ([]string, error) {
	i := strings.LastIndexByte(img, ':')
	if i < 0 || strings.Contains(img[i:], "/") {
		return nil, fmt.Errorf("image %q: want repository:tag", img)
	}
	// --set-string: a tag of digits only (a short commit hash such as
	// 8526915) would reach the chart as a number, which its schema
	// refuses.
	out := []string{"--set-string", "image.repository=" + img[:i] + ",image.tag=" + img[i+1:],
		"--set", strings.Join(append([]string{"image.pullPolicy=IfNotPresent"}, extra...), ",")}
	return out, nil
}

// installRelease installs the previous chart if given, else the chart, into
// the release namespace (created as the README says), and waits for Ready.
func (r *remote) installRelease() error {
	ch, img := *chart, *image
	if *previousChart != "" {
		// The previous release: its chart with its image (an image of
		// today may need what that chart does not grant).
		ch = *previousChart
		if *previousImage != "" {
			img = *previousImage
		}
	}
	values, err := imageValues(img)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(ch, "Chart.yaml")); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := r.helm("status", *release, "-n", *releaseNamespace); err == nil {
		return fmt.Errorf("release %s exists in %s: with -install the suite installs it itself; uninstall it, or run without -install", *release, *releaseNamespace)
	}
	if err := r.ensureNamespace(*releaseNamespace); err != nil {
		return err
	}
	if *previousChart != "" {
		// helm install skips a CRD that exists, and helm uninstall keeps
		// CRDs: start from the previous chart's even where an earlier run
		// left a newer one, so the upgrade has a CRD to bring.
		if err := r.applyCRDs(ch); err != nil {
			return err
		}
	}
	start := time.Now()
	// Ours from here: a release that fails to get Ready is still recorded,
	// and stop uninstalls it.
	r.installed = true
	if _, err := r.helm(append([]string{"install", *release, ch, "-n", *releaseNamespace, "--wait", "--timeout", "5m"}, values...)...); err != nil {
		return fmt.Errorf("%w\n%s", err, r.releaseState())
	}
	timing("helm install ("+ch+") to Ready", start)
	if *previousChart == "" { // else the upgrade to -chart checks it
		return r.checkAgentPod()
	}
	return nil
}

// releaseState shows the release namespace's pods and events, for errors.
func (r *remote) releaseState() string {
	var b strings.Builder
	for _, what := range []string{"pods", "events"} {
		out, err := r.kubectl(nil, "get", what, "-n", *releaseNamespace, "-o", "wide")
		fmt.Fprintf(&b, "--- %s in %s\n%s", what, *releaseNamespace, out)
		if err != nil {
			fmt.Fprintln(&b, err)
		}
	}
	return b.String()
}

// applyCRDs is the documented CRD step of an upgrade (Helm never upgrades
// a chart's crds/).
func (r *remote) applyCRDs(chart string) error {
	_, err := r.kubectl(nil, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(chart, "crds"))
	return err
}

// UpgradeChart is the documented upgrade: the chart's CRDs, then helm
// upgrade. The cluster's CRD must be the previous chart's before and the
// chart's after.
func (r *remote) UpgradeChart(t *testing.T) {
	t.Helper()
	prev, cur := chartCRDs(t, *previousChart), chartCRDs(t, *chart)
	if reflect.DeepEqual(prev, cur) {
		t.Logf("the previous chart's CRD schemas equal the chart's: this run cannot tell whether the upgrade brought the CRD")
	}
	r.checkCRDs(t, prev, "before the upgrade (the previous chart's)")
	start := time.Now()
	if err := r.applyCRDs(*chart); err != nil {
		t.Fatal(err)
	}
	timing("kubectl apply of the chart's CRDs", start)
	// Then the pools that admit the addresses in use, before the agents
	// that enforce them arrive.
	// With kubectl, as an administrator would: it learns the new kind
	// from discovery (the suite's client may have cached the group without
	// it). The API server serves a kind a moment after its CRD is applied.
	pool, err := yaml.Marshal(suitePool(r))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "apply the suite's AddressPool", func() error {
		_, err := r.kubectl(bytes.NewReader(pool), "apply", "--server-side", "-f", "-")
		return err
	})
	r.upgrade(t, "from the previous chart")
	r.checkCRDs(t, cur, "after the upgrade (the chart's)")
	if err := r.checkAgentPod(); err != nil {
		t.Fatal(err)
	}
}

// checkAgentPod checks, on the node's agent pod of the current release,
// that the chart's privileged init container really loaded ip_vs and set the
// sysctls, and that the agent really runs as the chart says: uid 0 with
// only NET_ADMIN and NET_RAW, on a read-only root filesystem.
func (r *remote) checkAgentPod() error {
	p, err := r.readyAgent()
	if err != nil {
		return err
	}
	logs, err := r.kubectl(nil, "logs", "-n", *releaseNamespace, p.Name, "-c", "kernel-setup")
	if err != nil {
		return err
	}
	// net/ipv4/vs/* exists only once ip_vs is loaded.
	if strings.Contains(logs, "failed") || !strings.Contains(logs, "kubelvs: net/ipv4/vs/conntrack=1") {
		return fmt.Errorf("the agent's kernel-setup init container did not load ip_vs and set the sysctls:\n%s", logs)
	}
	out, err := r.kubectl(nil, "exec", "-n", *releaseNamespace, p.Name, "-c", "agent", "--", "sh", "-c",
		`grep -E '^(Uid|CapEff):' /proc/1/status; if touch /.kubelvs-e2e 2>/dev/null; then echo rootfs: writable; else echo rootfs: read-only; fi`)
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	want := []string{"Uid:", "0", "0", "0", "0", "CapEff:", "0000000000003000", "rootfs:", "read-only"}
	if !slices.Equal(f, want) {
		return fmt.Errorf("the agent container runs as %q, want uid 0 with CapEff 0x3000 (NET_ADMIN, NET_RAW) on a read-only root", out)
	}
	// The closed surface: on the node's network, the probes listen on
	// localhost only, and metrics (every address) answer only callers the
	// API server authorizes; the API server's proxy forwards no credentials.
	tcp, err := r.kubectl(nil, "exec", "-n", *releaseNamespace, p.Name, "-c", "agent", "--", "cat", "/proc/net/tcp", "/proc/net/tcp6")
	if err != nil {
		return err
	}
	if got := listeners(tcp, 9742); !slices.Equal(got, []string{"0100007F"}) {
		return fmt.Errorf("the agent's probe port 9742 listens on %v, want 127.0.0.1 (0100007F) only", got)
	}
	if got := listeners(tcp, 9741); len(got) == 0 {
		return errors.New("the agent's metrics port 9741 does not listen")
	}
	// kubectl words a 401 as "the server has asked for the client to
	// provide credentials".
	if out, err := r.kubectl(nil, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/https:%s:9741/proxy/metrics", *releaseNamespace, p.Name)); err == nil ||
		!(strings.Contains(err.Error()+out, "Unauthorized") || strings.Contains(err.Error()+out, "provide credentials")) {
		return fmt.Errorf("the agent's metrics answered a caller without credentials: %v\n%.300s", err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: the agent pod %s: kernel-setup loaded ip_vs and set the sysctls; the agent runs as uid 0, CapEff 0x3000 (NET_ADMIN, NET_RAW), root filesystem read-only; probes on 127.0.0.1:9742 only; metrics refuse a caller without credentials (401)\n", p.Name)
	return nil
}

// listeners returns the local addresses (hex, as /proc/net/tcp writes
// them) listening on port.
func listeners(procNetTCP string, port uint16) []string {
	var out []string
	for _, line := range strings.Split(procNetTCP, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" { // TCP_LISTEN
			continue
		}
		addr, p, ok := strings.Cut(f[1], ":")
		if ok && p == fmt.Sprintf("%04X", port) && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// RollAgent upgrades the release with a changed pod template, so that the
// DaemonSet replaces the agent.
func (r *remote) RollAgent(t *testing.T) {
	t.Helper()
	old := r.agentPod(t)
	r.upgrade(t, "agent.logLevel=debug", "agent.logLevel=debug")
	if now := r.agentPod(t); now.UID == old.UID {
		t.Fatalf("the rollout kept agent pod %s (uid %s)", old.Name, old.UID)
	}
}

// upgrade runs helm upgrade to the chart with the image values and extra
// values, and waits for the agent's rollout.
func (r *remote) upgrade(t *testing.T, what string, extra ...string) {
	t.Helper()
	values, err := imageValues(*image, extra...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := r.helm(append([]string{"upgrade", *release, *chart, "-n", *releaseNamespace, "--wait", "--timeout", "5m"}, values...)...); err != nil {
		t.Fatalf("%v\n%s", err, r.releaseState())
	}
	timing("helm upgrade ("+what+") to Ready", start)
	if _, err := r.kubectl(nil, "rollout", "status", "-n", *releaseNamespace, "daemonset/"+r.agent, "--timeout=5m"); err != nil {
		t.Fatalf("%v\n%s", err, r.releaseState())
	}
	timing("helm upgrade ("+what+") to the agent rolled out", start)
}

// RestartAgent deletes the node's agent pod and waits for its replacement.
func (r *remote) RestartAgent(t *testing.T) {
	t.Helper()
	old := r.agentPod(t)
	start := time.Now()
	if _, err := r.kubectl(nil, "delete", "pod", "-n", *releaseNamespace, old.Name, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "a new agent pod Ready on "+r.node, func() error {
		p, err := r.readyAgent()
		if err == nil && p.UID == old.UID {
			err = fmt.Errorf("still %s", old.Name)
		}
		return err
	})
	timing("agent pod deleted to its replacement Ready", start)
}

// readyAgent returns the node's agent pod that runs, is Ready and is not
// being deleted.
func (r *remote) readyAgent() (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.api.List(context.Background(), &pods, client.InNamespace(*releaseNamespace), agentLabels()); err != nil {
		return nil, err
	}
	for i, p := range pods.Items {
		if p.Spec.NodeName == r.node && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no Ready agent pod on %s", r.node)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (r *remote) agentPod(t *testing.T) *corev1.Pod {
	t.Helper()
	p, err := r.readyAgent()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Uninstall runs helm uninstall and waits for the agent pods to go.
func (r *remote) Uninstall(t *testing.T) {
	t.Helper()
	// What the cluster looked like with kubelvs installed, for the record.
	for _, args := range [][]string{{"get", "nodes,pods", "-A", "-o", "wide"}, {"get", "lvs", "-A"}} {
		out, err := r.kubectl(nil, args...)
		t.Logf("before uninstall: kubectl %s (err %v)\n%s", strings.Join(args, " "), err, out)
	}
	start := time.Now()
	if _, err := r.helm("uninstall", *release, "-n", *releaseNamespace, "--wait", "--timeout", "5m"); err != nil {
		t.Fatal(err)
	}
	r.installed = false
	eventually(t, 2*time.Minute, "agent pods gone", func() error {
		var pods corev1.PodList
		if err := r.api.List(context.Background(), &pods, client.InNamespace(*releaseNamespace), agentLabels()); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d left", len(pods.Items))
		}
		return nil
	})
	timing("helm uninstall to agent pods gone", start)
}

// NodeKernel runs the action in a pod on the node as root, privileged, in
// the host's network namespace, so that it works wherever the suite runs:
// e2e-echo kernel ACTION for IPVS and ipsets, and iptablesScript with the
// agent's image for iptables.
func (r *remote) NodeKernel(t *testing.T, action string) []string {
	t.Helper()
	r.nodePods++
	root := &corev1.SecurityContext{RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false), Privileged: ptr.To(true)}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kernel-%s-%d", action, r.nodePods), Namespace: r.ns}, Spec: corev1.PodSpec{
		NodeName: r.node, HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever,
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Containers: []corev1.Container{
			{Name: "netlink", Image: *echoImage, ImagePullPolicy: corev1.PullIfNotPresent, Args: []string{"kernel", action}, SecurityContext: root},
			{Name: "iptables", Image: r.agentImage, ImagePullPolicy: corev1.PullIfNotPresent, SecurityContext: root,
				Command:      []string{"sh", "-c", iptablesScript, "sh", action, echo.ForeignChain},
				VolumeMounts: []corev1.VolumeMount{{Name: "xtables-lock", MountPath: "/run/xtables.lock"}}},
		},
		// The lock iptables shares with the node's other users of it.
		Volumes: []corev1.Volume{{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: "/run/xtables.lock", Type: ptr.To(corev1.HostPathFileOrCreate)}}}},
	}}
	ctx := context.Background()
	if err := r.api.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.api.Delete(context.Background(), p, client.GracePeriodSeconds(0)) }()
	eventually(t, 2*time.Minute, "pod "+p.Name+" done", func() error {
		if err := r.api.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	var lines []string
	for _, c := range p.Spec.Containers {
		out, err := r.kubectl(nil, "logs", "-n", r.ns, p.Name, "-c", c.Name)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.Split(strings.TrimRight(out, "\n"), "\n")...)
	}
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("kernel %s on %s failed:\n%s", action, r.node, strings.Join(lines, "\n"))
	}
	return lines
}
