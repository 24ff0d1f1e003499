package chart

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

const customValues = "testdata/values-custom.yaml"

func TestLint(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"lint", "--strict", chartDir},
		{"lint", "--strict", chartDir, "-f", customValues},
	} {
		out, stderr, err := helm(t, args...)
		if err != nil {
			t.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	objs := render(t)

	for _, o := range objs {
		l := o.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[k] == "" {
				t.Errorf("%s/%s lacks label %s", o.GetKind(), o.GetName(), k)
			}
		}
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s/%s in namespace %q, want the release namespace", o.GetKind(), o.GetName(), ns)
		}
	}
	if sm := ofKind(objs, "ServiceMonitor"); len(sm) != 0 {
		t.Errorf("ServiceMonitor rendered by default: %s", names(sm))
	}
	// Which namespaces may bind which addresses is the administrator's
	// call: no pool by default.
	if ps := ofKind(objs, "AddressPool"); len(ps) != 0 {
		t.Errorf("AddressPool rendered by default: %s", names(ps))
	}
	find(t, objs, "Service", "kubelvs-controller-metrics")
	find(t, objs, "Service", "kubelvs-agent-metrics")
	find(t, objs, "ServiceAccount", "kubelvs-controller")
	find(t, objs, "ServiceAccount", "kubelvs-agent")

	t.Run("agent", func(t *testing.T) {
		ds := typed[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "kubelvs-agent"))
		p := ds.Spec.Template.Spec
		if !p.HostNetwork || p.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("hostNetwork=%v dnsPolicy=%q, want true and ClusterFirstWithHostNet", p.HostNetwork, p.DNSPolicy)
		}
		if p.PriorityClassName != "system-node-critical" {
			t.Errorf("priorityClassName %q", p.PriorityClassName)
		}
		if !slices.ContainsFunc(p.Tolerations, func(t corev1.Toleration) bool { return t.Operator == corev1.TolerationOpExists && t.Key == "" }) {
			t.Errorf("tolerations %v: want one that tolerates every taint", p.Tolerations)
		}
		if s := ds.Spec.UpdateStrategy; s.Type != appsv1.RollingUpdateDaemonSetStrategyType || s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable.String() != "1" {
			t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", s)
		}
		if p.ServiceAccountName != "kubelvs-agent" {
			t.Errorf("serviceAccountName %q", p.ServiceAccountName)
		}
		if p.SecurityContext == nil || p.SecurityContext.SeccompProfile == nil || p.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod seccompProfile %+v, want RuntimeDefault", p.SecurityContext)
		}
		c := container(t, p.Containers, "agent")
		if c.Args[0] != "agent" {
			t.Errorf("args %v: want the agent subcommand first", c.Args)
		}
		for _, a := range []string{"--metrics-bind-address=:9741", "--metrics-secure=true", "--health-probe-bind-address=127.0.0.1:9742", "--resync-period=5m", "--zap-log-level=info"} {
			if !slices.Contains(c.Args, a) {
				t.Errorf("agent args %v lack %s", c.Args, a)
			}
		}
		if !slices.Contains(c.Args, "--cleanup-on-uninstall") {
			t.Errorf("agent args %v: cleanup on uninstall is on by default", c.Args)
		}
		if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--endpointslice-selector") }) {
			t.Errorf("agent args %v: an EndpointSlice selector by default", c.Args)
		}
		for name, path := range map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
			env := envVar(t, c, name)
			if env.ValueFrom == nil || env.ValueFrom.FieldRef == nil || env.ValueFrom.FieldRef.FieldPath != path {
				t.Errorf("%s %+v, want fieldRef %s", name, env, path)
			}
		}
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil {
			t.Fatalf("agent securityContext %+v", sc)
		}
		if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
			t.Errorf("capabilities drop %v add %v, want drop [ALL] add [NET_ADMIN NET_RAW]", sc.Capabilities.Drop, sc.Capabilities.Add)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Error("the agent container is privileged")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("agent readOnlyRootFilesystem %v allowPrivilegeEscalation %v", sc.ReadOnlyRootFilesystem, sc.AllowPrivilegeEscalation)
		}
		probes(t, c)
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("agent resources %+v: want memory requests and limits", c.Resources)
		}
		mount(t, c, "/run/xtables.lock")

		// The only privileged container is the short kernel-setup one.
		ic := container(t, p.InitContainers, "kernel-setup")
		if ic.SecurityContext == nil || ic.SecurityContext.Privileged == nil || !*ic.SecurityContext.Privileged {
			t.Errorf("kernel-setup securityContext %+v, want privileged", ic.SecurityContext)
		}
		if m := mount(t, ic, "/lib/modules"); !m.ReadOnly {
			t.Error("/lib/modules is mounted writable")
		}
		if sh, err := exec.LookPath("sh"); err == nil {
			if out, err := exec.Command(sh, "-n", "-c", ic.Args[0]).CombinedOutput(); err != nil {
				t.Errorf("kernel-setup script does not parse: %v\n%s", err, out)
			}
		}
	})

	t.Run("controller", func(t *testing.T) {
		d := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "kubelvs-controller"))
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("replicas %v, want 2", d.Spec.Replicas)
		}
		p := d.Spec.Template.Spec
		if p.HostNetwork {
			t.Error("controller on the host network")
		}
		ps := p.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
			t.Errorf("pod securityContext %+v, want non-root", ps)
		} else if ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("seccompProfile %+v", ps.SeccompProfile)
		}
		c := container(t, p.Containers, "controller")
		if c.Args[0] != "controller" || !slices.Contains(c.Args, "--leader-elect") {
			t.Errorf("args %v: want controller ... --leader-elect", c.Args)
		}
		if slices.Contains(c.Args, "--default-load-balancer-class") {
			t.Errorf("args %v: kubelvs is the default load balancer without being asked", c.Args)
		}
		if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--endpointslice-selector") }) {
			t.Errorf("controller args %v: an EndpointSlice selector by default", c.Args)
		}
		env := envVar(t, c, "POD_NAMESPACE")
		if env.ValueFrom == nil || env.ValueFrom.FieldRef == nil || env.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("POD_NAMESPACE %+v, want fieldRef metadata.namespace", env)
		}
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			t.Errorf("controller capabilities %+v, want drop ALL and nothing added", sc)
		} else if !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
			t.Errorf("controller readOnlyRootFilesystem %v allowPrivilegeEscalation %v", *sc.ReadOnlyRootFilesystem, *sc.AllowPrivilegeEscalation)
		}
		probes(t, c)
	})
}

// customSelector is testdata/values-custom.yaml's endpointSliceSelector as
// both roles get it: one argument, spaces and parentheses kept.
const customSelector = "--endpointslice-selector=lvs.kubelvs.io/backend=true, tier in (web,api)"

func TestCustomValues(t *testing.T) {
	t.Parallel()
	objs := render(t, customValues)
	const img = "registry.example.com/net/kubelvs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	d := typed[appsv1.Deployment](t, find(t, objs, "Deployment", "lb-controller"))
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	c := container(t, d.Spec.Template.Spec.Containers, "controller")
	if c.Image != img || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("controller image %s %s", c.Image, c.ImagePullPolicy)
	}
	for _, a := range []string{"--leader-elect", "--default-load-balancer-class", "--metrics-bind-address=:18080", "--health-probe-bind-address=:18081", "--zap-log-level=debug", "--zap-encoder=console", customSelector} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("controller args %v lack %s", c.Args, a)
		}
	}
	if got := d.Spec.Template.Spec.PriorityClassName; got != "system-cluster-critical" {
		t.Errorf("controller priorityClassName %q", got)
	}
	if got := d.Spec.Template.Spec.ImagePullSecrets; len(got) != 1 || got[0].Name != "regcred" {
		t.Errorf("imagePullSecrets %v", got)
	}

	ds := typed[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "lb-agent"))
	p := ds.Spec.Template.Spec
	if len(p.InitContainers) != 0 || slices.ContainsFunc(p.Volumes, func(v corev1.Volume) bool { return v.Name == "lib-modules" }) {
		t.Errorf("kernelSetup.enabled=false still renders the init container or /lib/modules: %v", p.InitContainers)
	}
	if p.NodeSelector["example.com/lb"] != "true" {
		t.Errorf("agent nodeSelector %v", p.NodeSelector)
	}
	if got := ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String(); got != "10%" {
		t.Errorf("maxUnavailable %s, want 10%%", got)
	}
	ac := container(t, p.Containers, "agent")
	for _, a := range []string{"--metrics-bind-address=:19741", "--health-probe-bind-address=127.0.0.1:19742", "--resync-period=1h30m", "--drain-interval=500ms", "--report-status=false", "--health-checks=false", "--zap-log-level=error", "--cleanup-on-uninstall", customSelector} {
		if !slices.Contains(ac.Args, a) {
			t.Errorf("agent args %v lack %s", ac.Args, a)
		}
	}
	if ac.Image != img {
		t.Errorf("agent image %s", ac.Image)
	}

	// The agent may read its own DaemonSet, by name, whatever the name.
	role := typed[rbacv1.Role](t, find(t, objs, "Role", "lb-agent"))
	if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.Resources, []string{"daemonsets"}) && slices.Equal(r.ResourceNames, []string{ds.Name})
	}) {
		t.Errorf("agent Role rules %+v do not name the DaemonSet %s", role.Rules, ds.Name)
	}

	sa := find(t, objs, "ServiceAccount", "lb-agent")
	if sa.GetAnnotations()["example.com/owner"] != "netops" {
		t.Errorf("ServiceAccount annotations %v", sa.GetAnnotations())
	}
	sms := ofKind(objs, "ServiceMonitor")
	if len(sms) != 2 {
		t.Fatalf("ServiceMonitors %s, want controller and agent", names(sms))
	}
	for _, sm := range sms {
		if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor %s: apiVersion %s labels %v", sm.GetName(), sm.GetAPIVersion(), sm.GetLabels())
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["interval"] != "15s" {
			t.Errorf("ServiceMonitor %s endpoints %v", sm.GetName(), eps)
		}
	}
	svc := typed[corev1.Service](t, find(t, objs, "Service", "lb-agent-metrics"))
	if svc.Spec.Ports[0].Port != 19741 {
		t.Errorf("agent metrics Service port %d", svc.Spec.Ports[0].Port)
	}

	// addressPools: cluster-scoped AddressPools with the given specs.
	pool := typed[lvsv1.AddressPool](t, find(t, objs, "AddressPool", "services"))
	if pool.Namespace != "" || !slices.Equal(pool.Spec.CIDRs, []lvsv1.PoolCIDR{"192.0.2.0/24"}) ||
		!slices.Equal(pool.Spec.Avoid, []lvsv1.AddressOrCIDR{"192.0.2.0"}) ||
		pool.Spec.NamespaceSelector == nil || pool.Spec.NamespaceSelector.MatchLabels["team"] != "shop" {
		t.Errorf("AddressPool services: namespace %q spec %+v", pool.Namespace, pool.Spec)
	}
	if errs := validation.AddressPool(pool); len(errs) > 0 {
		t.Errorf("AddressPool services is refused: %v", errs)
	}
}

// TestServiceMonitorNeedsService: a ServiceMonitor without the Services it
// scrapes fails the render with a message saying so.
func TestServiceMonitorNeedsService(t *testing.T) {
	t.Parallel()
	f := writeValues(t, "metrics:\n  service: {enabled: false}\n  serviceMonitor: {enabled: true}\n")
	_, stderr, err := helm(t, "template", release, chartDir, "-f", f)
	if err == nil || !strings.Contains(stderr, "metrics.serviceMonitor.enabled needs metrics.service.enabled") {
		t.Errorf("err %v stderr %q", err, stderr)
	}
}

func writeValues(t *testing.T, s string) string {
	t.Helper()
	f := t.TempDir() + "/values.yaml"
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func envVar(t *testing.T, c *corev1.Container, name string) corev1.EnvVar {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("container %s has no env %s", c.Name, name)
	return corev1.EnvVar{}
}

func mount(t *testing.T, c *corev1.Container, path string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return corev1.VolumeMount{}
}

// probes checks liveness on /healthz and readiness on /readyz, both on the
// container's health port; on the agent (the node's network) on localhost,
// where only the node's kubelet reaches them.
func probes(t *testing.T, c *corev1.Container) {
	t.Helper()
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("container %s: want an HTTP probe on %s, got %+v", c.Name, p.path, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		switch c.Name {
		case "agent":
			if g.Host != "127.0.0.1" || g.Port.IntValue() == 0 {
				t.Errorf("agent probe %s: host %q port %s, want 127.0.0.1 and the health port", p.path, g.Host, g.Port.String())
			}
		default:
			if g.Port.String() != "health" || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "health" }) {
				t.Errorf("container %s: want the probe on its port named health, got %+v", c.Name, g)
			}
		}
	}
}

// The agents may read the BGP password Secrets the values name, and no
// other Secret; with none named (the default) no Secret at all. The
// announce values reach the agent's arguments.
func TestBGPPasswordSecretsAndAnnounceArgs(t *testing.T) {
	t.Parallel()
	secretRules := func(objs []*unstructured.Unstructured) []rbacv1.PolicyRule {
		var out []rbacv1.PolicyRule
		for _, o := range objs {
			if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
				continue
			}
			var rules []rbacv1.PolicyRule
			if o.GetKind() == "Role" {
				rules = typed[rbacv1.Role](t, o).Rules
			} else {
				rules = typed[rbacv1.ClusterRole](t, o).Rules
			}
			for _, r := range rules {
				if slices.Contains(r.Resources, "secrets") {
					out = append(out, r)
				}
			}
		}
		return out
	}
	if rules := secretRules(render(t)); len(rules) != 0 {
		t.Errorf("by default the chart grants Secrets: %+v", rules)
	}
	objs := render(t, writeValues(t, "agent:\n  announce:\n    bgpPasswordSecrets: [bgp-auth, tor-b]\n    layer2: false\n    layer2Interface: bond0\n"))
	rules := secretRules(objs)
	if len(rules) != 1 || !slices.Equal(rules[0].ResourceNames, []string{"bgp-auth", "tor-b"}) || !slices.Equal(rules[0].Verbs, []string{"get"}) {
		t.Errorf("Secret rules %+v: want get on bgp-auth and tor-b only", rules)
	}
	if r := find(t, objs, "Role", "kubelvs-agent"); r.GetNamespace() != namespace {
		t.Errorf("the Secrets are granted in namespace %q", r.GetNamespace())
	}
	ds := typed[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "kubelvs-agent"))
	args := container(t, ds.Spec.Template.Spec.Containers, "agent").Args
	for _, a := range []string{"--bgp=true", "--layer2=false", "--layer2-interface=bond0", "--layer2-lease-duration=5s"} {
		if !slices.Contains(args, a) {
			t.Errorf("agent args %v lack %s", args, a)
		}
	}
	// The values of a release from before agent.announce (helm upgrade
	// --reuse-values keeps them) render with the defaults.
	out, stderr, err := helm(t, "template", release, chartDir, "--set", "agent.announce=null")
	if err != nil {
		t.Fatalf("without agent.announce: %v: %s", err, stderr)
	}
	for _, a := range []string{"--bgp=true", "--layer2=true", "--layer2-lease-duration=5s"} {
		if !strings.Contains(out, a) {
			t.Errorf("without agent.announce the agent lacks %s", a)
		}
	}
	if _, stderr, err := helm(t, "template", release, chartDir, "-f", writeValues(t, "agent:\n  announce:\n    layer2LeaseDuration: 1500ms\n")); err == nil {
		t.Errorf("a lease duration of 1500ms was accepted")
	} else if !strings.Contains(stderr, "layer2LeaseDuration") {
		t.Errorf("stderr %q does not name layer2LeaseDuration", stderr)
	}
}

// NodeReports are the default: the agent writes no VirtualService status
// and is not granted it. With agent.nodeReports=false it writes its entry
// in status.nodes and is granted exactly that; a release from before the
// value existed (helm upgrade --reuse-values) gets the default.
func TestNodeReportsValue(t *testing.T) {
	t.Parallel()
	check := func(what string, objs []*unstructured.Unstructured, wantReports bool) {
		t.Helper()
		ds := typed[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "kubelvs-agent"))
		args := container(t, ds.Spec.Template.Spec.Containers, "agent").Args
		if want := fmt.Sprintf("--node-reports=%v", wantReports); !slices.Contains(args, want) {
			t.Errorf("%s: agent args %v lack %s", what, args, want)
		}
		g := grants(t, typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "kubelvs-agent")).Rules)
		if got := g["lvs.kubelvs.io/virtualservices/status patch"]; got == wantReports {
			t.Errorf("%s: agent granted virtualservices/status patch: %v, want %v", what, got, !wantReports)
		}
		if !g["lvs.kubelvs.io/bgppeers/status patch"] {
			t.Errorf("%s: agent lost bgppeers/status patch", what)
		}
	}
	check("default", render(t), true)
	check("nodeReports=false", render(t, writeValues(t, "agent:\n  nodeReports: false\n")), false)
	out, stderr, err := helm(t, "template", release, chartDir, "--set", "agent.nodeReports=null")
	if err != nil {
		t.Fatalf("without agent.nodeReports: %v: %s", err, stderr)
	}
	check("without the value", decode(t, out), true)
}
