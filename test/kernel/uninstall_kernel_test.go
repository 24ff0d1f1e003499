package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/roles"
	"github.com/kubelvs/kubelvs/test/guestenv"
)

// kubelvsKernel prints every kernel object kubelvs may own, each as its
// tool saves it, sorted: the IPVS services of this test's VIPs (10.96.8.x),
// kubelvs0 and its addresses, the KUBELVS- ipsets with their members and the
// KUBELVS- iptables rules. Empty when nothing is left.
func kubelvsKernel(t *testing.T) string {
	t.Helper()
	var lines []string
	out, err := exec.Command("ipvsadm", "-Sn").Output()
	if err != nil {
		t.Fatalf("ipvsadm -Sn: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		// Only this test's VIPs: other packages' kernel tests leave
		// foreign services in the guest on purpose.
		if strings.Contains(l, " 10.96.8.") {
			lines = append(lines, "ipvs: "+l)
		}
	}
	if link, err := netlink.LinkByName("kubelvs0"); err == nil {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, "link: kubelvs0")
		for _, a := range addrs {
			lines = append(lines, "kubelvs0: "+a.IPNet.String())
		}
	}
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	for _, c := range [][]string{{"ipset", "save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "KUBELVS") {
				lines = append(lines, c[0]+": "+counters.ReplaceAllString(l, ""))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// chartObject is the object of the installed chart of that kind whose name
// ends with suffix.
func chartObject(t *testing.T, env *guestenv.Env, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range env.Chart {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			return o
		}
	}
	t.Fatalf("the chart has no %s *%s", kind, suffix)
	return nil
}

// logCount counts the lines of the agent's log that contain s.
func logCount(t *testing.T, env *guestenv.Env, s string) int {
	t.Helper()
	b, err := os.ReadFile(env.Agent.Log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// TestAgentUninstallIsPositive runs the agent as the chart runs it (its
// arguments, --cleanup-on-uninstall included, its ServiceAccount and RBAC,
// a DaemonSet and a pod owned by it) and shows that an RBAC outage across a
// restart keeps the kernel as it is, while the deletion of the DaemonSet
// makes the stopping agent remove what kubelvs made.
func TestAgentUninstallIsPositive(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	env, err := guestenv.Start(root, os.Getenv("KUBELVS_MANAGER"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", env.Agent.Tail())
		}
	})
	// The agent's own identity, to see what its RBAC allows.
	kc := env.Agent.Args[slices.Index(env.Agent.Args, "--kubeconfig")+1]
	acfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	asAgent, err := client.New(acfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ds := chartObject(t, env, "DaemonSet", "-agent")
	agentCanRead := func() error {
		return asAgent.Get(ctx, client.ObjectKeyFromObject(ds), &appsv1.DaemonSet{})
	}

	client1 := kerneltest.NewNS(t, 31, true)
	backend := kerneltest.NewNS(t, 41, false)
	serveEcho(t, backend, "b1", 8080, 5353)
	vip := netip.MustParseAddr("10.96.8.1")
	if err := env.AdmitAll("uninstall-test", "10.96.8.0/24"); err != nil {
		t.Fatal(err)
	}
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(vip.String())},
		Ports: []lvsv1.VirtualServicePort{
			{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP, TargetPort: ptr.To(intstr.FromInt32(8080))},
		},
		Scheduler:    lvsv1.SchedulerRoundRobin,
		Backends:     lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: lvsv1.IPAddress(backend.IP(false).String())}}},
		SourceRanges: []lvsv1.CIDR{lvsv1.CIDR(netip.PrefixFrom(client1.IP(false), 32).String())},
	}}
	if err := env.API.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	http := netip.AddrPortFrom(vip, 80)
	serves := func(when string) {
		t.Helper()
		if got, err := greet(client1, http); err != nil || got != "b1" {
			t.Fatalf("%s: traffic through the VIP: %q %v", when, got, err)
		}
	}
	waitFor(t, 30*time.Second, "TCP through the VIP", func() error {
		_, err := greet(client1, http)
		return err
	})
	before := kubelvsKernel(t)
	t.Logf("kernel programmed by the agent:\n%s", before)
	for _, want := range []string{"ipvs: -A -t 10.96.8.1:80 -s rr", "kubelvs0: 10.96.8.1/32", "ipset: add KUBELVS-", "iptables-legacy-save: -A KUBELVS-"} {
		if !strings.Contains(before, want) {
			t.Fatalf("the kernel lacks %q", want)
		}
	}
	unchanged := func(when string) {
		t.Helper()
		if after := kubelvsKernel(t); after != before {
			t.Fatalf("%s, the kernel changed:\n--- before\n%s\n--- after\n%s", when, before, after)
		}
		serves(when)
	}

	// The agent's RBAC goes away (its bindings deleted), and the agent
	// is restarted: stopped, started again without RBAC, stopped.
	bindings := []*unstructured.Unstructured{chartObject(t, env, "RoleBinding", "-agent"), chartObject(t, env, "ClusterRoleBinding", "-agent")}
	for _, b := range bindings {
		if err := env.API.Delete(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the agent's RBAC revoked", func() error {
		if err := agentCanRead(); !apierrors.IsForbidden(err) {
			return fmt.Errorf("GET DaemonSet as the agent: %v", err)
		}
		return nil
	})
	if err := env.Agent.Stop(); err != nil {
		t.Fatalf("stop the agent: %v", err)
	}
	unchanged("after a stop without RBAC")
	if logCount(t, env, `"reason":"CheckFailed"`) != 1 {
		t.Errorf("the agent did not say why it kept the kernel:\n%s", env.Agent.Tail())
	}

	refused := logCount(t, env, "the API server refuses the agent's watch")
	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the restarted agent refused by the API server", func() error {
		if n := logCount(t, env, "the API server refuses the agent's watch"); n < refused+2 {
			return fmt.Errorf("%d refusals logged", n-refused)
		}
		return nil
	})
	unchanged("while the agent runs without RBAC")
	if err := env.Agent.Stop(); err != nil {
		t.Fatalf("stop the agent: %v", err)
	}
	unchanged("after a start and a stop without RBAC")
	if logCount(t, env, `"reason":"OwnerUnknown"`) != 1 {
		t.Errorf("the agent did not say why it kept the kernel:\n%s", env.Agent.Tail())
	}

	// The RBAC back: the agent adopts the kernel without rewriting it.
	for _, b := range bindings {
		b = b.DeepCopy()
		b.SetResourceVersion("")
		b.SetUID("")
		if err := env.API.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the agent's RBAC back", agentCanRead)
	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.AgentReady(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the agent watching its DaemonSet", func() error {
		if logCount(t, env, "watching the agent's DaemonSet: its deletion") == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	unchanged("after a start with the RBAC back")

	// Uninstall: the DaemonSet is deleted while the RBAC exists; the agent
	// sees it, and when it stops it removes what kubelvs made.
	if err := env.API.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "uninstall observed", func() error {
		if logCount(t, env, "uninstall observed") == 0 {
			return fmt.Errorf("not in the agent's log")
		}
		return nil
	})
	if err := env.Agent.Stop(); err != nil {
		t.Fatalf("stop the agent: %v", err)
	}
	if left := kubelvsKernel(t); left != "" {
		t.Fatalf("kubelvs objects left after the uninstall:\n%s\nagent log:\n%s", left, env.Agent.Tail())
	}
	if _, err := greet(client1, http); err == nil {
		t.Fatal("the VIP still answers after the uninstall")
	}
}
