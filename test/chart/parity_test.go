package chart

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubelvs/kubelvs/pkg/netif"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

// TestCRDInSync: the chart ships exactly the generated CRDs.
func TestCRDInSync(t *testing.T) {
	t.Parallel()
	gen, _ := filepath.Glob("../../config/crd/bases/*.yaml")
	shipped, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	base := func(ps []string) (r []string) {
		for _, p := range ps {
			r = append(r, filepath.Base(p))
		}
		return r
	}
	if len(gen) == 0 || !slices.Equal(base(gen), base(shipped)) {
		t.Fatalf("config/crd/bases %v, charts/kubelvs/crds %v: run hack/gen-install.sh", base(gen), base(shipped))
	}
	for i := range gen {
		a, _ := os.ReadFile(gen[i])
		b, _ := os.ReadFile(shipped[i])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: run hack/gen-install.sh", shipped[i], gen[i])
		}
	}
}

// TestInstallYAMLUpToDate: dist/install.yaml is what config/default renders.
func TestInstallYAMLUpToDate(t *testing.T) {
	t.Parallel()
	want := kustomize(t, "../../config/default")
	b, err := os.ReadFile("../../dist/install.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Drop the generated-file header comment.
	got := regexp.MustCompile(`(?m)\A(#.*\n)*`).ReplaceAllString(string(b), "")
	if got != want {
		t.Errorf("dist/install.yaml is stale: run hack/gen-install.sh")
	}
}

// TestKustomizeMatchesChart: config/default installs what the chart installs
// with default values as release "kubelvs" in kubelvs-system.
func TestKustomizeMatchesChart(t *testing.T) {
	t.Parallel()
	k := decode(t, kustomize(t, "../../config/default"))
	h := render(t)
	key := func(o *unstructured.Unstructured) string { return o.GetKind() + "/" + o.GetName() }
	var hk, kk []string
	for _, o := range h {
		hk = append(hk, key(o))
	}
	for _, o := range k {
		if o.GetKind() != "Namespace" && o.GetKind() != "CustomResourceDefinition" {
			kk = append(kk, key(o))
		}
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s in namespace %q", key(o), ns)
		}
	}
	slices.Sort(hk)
	slices.Sort(kk)
	if !slices.Equal(hk, kk) {
		t.Errorf("objects differ\nchart:     %v\nkustomize: %v", hk, kk)
	}
	for _, w := range []struct{ kind, name string }{{"DaemonSet", "kubelvs-agent"}, {"Deployment", "kubelvs-controller"}} {
		hs, _, _ := unstructured.NestedFieldNoCopy(find(t, h, w.kind, w.name).Object, "spec")
		ks, _, _ := unstructured.NestedFieldNoCopy(find(t, k, w.kind, w.name).Object, "spec")
		// Pod labels differ (Helm adds chart, version and managed-by); the
		// selectors and the pod specs must not.
		for _, s := range []any{hs, ks} {
			unstructured.RemoveNestedField(s.(map[string]any), "template", "metadata", "labels")
		}
		if !reflect.DeepEqual(hs, ks) {
			hj, _ := json.MarshalIndent(hs, "", " ")
			kj, _ := json.MarshalIndent(ks, "", " ")
			t.Errorf("%s %s spec differs between the chart and config/manager\nchart:\n%s\nkustomize:\n%s", w.kind, w.name, hj, kj)
		}
	}
}

// TestRBACMatchesGenerated: the chart's and config/default's RBAC grant
// exactly what the +kubebuilder:rbac markers generate into config/rbac, with
// the grants a role needs only in its own namespace (leases; the agent's own
// pod and DaemonSet) moved from the ClusterRole into a namespaced Role.
func TestRBACMatchesGenerated(t *testing.T) {
	t.Parallel()
	sources := map[string][]*unstructured.Unstructured{"chart": render(t)}
	sources["config/default"] = decode(t, kustomize(t, "../../config/default"))
	for _, c := range []struct {
		component, generated, role string
		namespaced                 []string // resources granted only in the namespace
	}{
		{"controller", "../../config/rbac/controller/role.yaml", "kubelvs-leader-election", []string{"coordination.k8s.io/leases", "/events"}},
		{"agent", "../../config/rbac/agent/role.yaml", "kubelvs-agent", []string{"/pods", "apps/daemonsets", "coordination.k8s.io/leases"}},
	} {
		b, err := os.ReadFile(c.generated)
		if err != nil {
			t.Fatal(err)
		}
		gen := decode(t, string(b))
		if len(gen) != 1 || gen[0].GetKind() != "ClusterRole" {
			t.Fatalf("%s: want one ClusterRole, got %s", c.generated, names(gen))
		}
		want := grants(t, typed[rbacv1.ClusterRole](t, gen[0]).Rules)
		sa := "kubelvs-" + c.component
		for src, objs := range sources {
			cr := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "kubelvs-"+c.component))
			got := grants(t, cr.Rules)
			for g := range got {
				for _, res := range c.namespaced {
					if strings.HasPrefix(g, res+" ") {
						t.Errorf("%s: %s granted cluster-wide (%s)", src, res, g)
					}
				}
			}
			r := typed[rbacv1.Role](t, find(t, objs, "Role", c.role))
			rules := slices.Clone(r.Rules)
			for i, rule := range rules {
				if len(rule.ResourceNames) == 0 {
					continue
				}
				// Only the agent's DaemonSet, which it watches by name,
				// and the controller's Lease.
				ds := find(t, objs, "DaemonSet", "kubelvs-agent").GetName()
				agentDS := c.component == "agent" && slices.Equal(rule.Resources, []string{"daemonsets"}) && slices.Equal(rule.ResourceNames, []string{ds})
				lease := c.component == "controller" && slices.Equal(rule.Resources, []string{"leases"}) &&
					slices.Equal(rule.ResourceNames, []string{roles.LeaderElectionID}) && slices.Equal(rule.Verbs, []string{"get", "update"})
				if !agentDS && !lease {
					t.Errorf("%s: Role %s rule %+v: only the agent's DaemonSet %s and the controller's Lease %s (get, update) may be named",
						src, r.Name, rule, ds, roles.LeaderElectionID)
				}
				rules[i].ResourceNames = nil
			}
			for g := range grants(t, rules) {
				if got[g] {
					t.Errorf("%s: %s granted by both the ClusterRole and the Role", src, g)
				}
				got[g] = true
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s grants %v\n%s generates %v", src, c.component, keys(got), c.generated, keys(want))
			}
			rb := typed[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", c.role))
			if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != r.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Name != sa {
				t.Errorf("%s: RoleBinding %+v", src, rb)
			}
			crb := typed[rbacv1.ClusterRoleBinding](t, find(t, objs, "ClusterRoleBinding", "kubelvs-"+c.component))
			if crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa || crb.Subjects[0].Namespace != namespace {
				t.Errorf("%s: ClusterRoleBinding %+v", src, crb)
			}
		}
	}
}

// TestRBACIsExactly: what each role may do, written out: a grant added to a
// marker or a template fails here until this list says why it is needed.
func TestRBACIsExactly(t *testing.T) {
	t.Parallel()
	objs := render(t)
	ds := find(t, objs, "DaemonSet", "kubelvs-agent").GetName()
	want := map[string][]string{
		"ClusterRole kubelvs-controller": {
			"/nodes get", "/nodes list", "/nodes watch", // drop the reports of deleted nodes
			"/namespaces get", "/namespaces list", "/namespaces watch", // their labels: which pools admit them
			"lvs.kubelvs.io/addresspools get", "lvs.kubelvs.io/addresspools list", "lvs.kubelvs.io/addresspools watch",
			"lvs.kubelvs.io/nodereports get", "lvs.kubelvs.io/nodereports list", "lvs.kubelvs.io/nodereports watch", // what each node programmed
			"discovery.k8s.io/endpointslices get", "discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch", // backend counts
			"events.k8s.io/events create", "events.k8s.io/events patch", // Events on VirtualServices and Services
			"/services get", "/services list", "/services watch", // Services of type LoadBalancer
			"/services/status patch", // their status.loadBalancer.ingress
			"lvs.kubelvs.io/virtualservices get", "lvs.kubelvs.io/virtualservices list", "lvs.kubelvs.io/virtualservices watch",
			"lvs.kubelvs.io/virtualservices create", "lvs.kubelvs.io/virtualservices update", "lvs.kubelvs.io/virtualservices delete", // generated from Services
			"lvs.kubelvs.io/virtualservices/status patch",                                                   // conditions (merge patch)
			"authentication.k8s.io/tokenreviews create", "authorization.k8s.io/subjectaccessreviews create", // /metrics callers
		},
		"Role kubelvs-leader-election": {
			"coordination.k8s.io/leases create",
			"coordination.k8s.io/leases get " + roles.LeaderElectionID, "coordination.k8s.io/leases update " + roles.LeaderElectionID,
			"/events create", "/events patch", // leader election's Events on its Lease
		},
		"ClusterRole kubelvs-agent": {
			"/nodes get", "/nodes list", "/nodes watch", // its own Node's labels (nodeSelector)
			"/namespaces get", "/namespaces list", "/namespaces watch", // their labels: which pools admit them
			"lvs.kubelvs.io/addresspools get", "lvs.kubelvs.io/addresspools list", "lvs.kubelvs.io/addresspools watch",
			"discovery.k8s.io/endpointslices get", "discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch",
			"lvs.kubelvs.io/virtualservices get", "lvs.kubelvs.io/virtualservices list", "lvs.kubelvs.io/virtualservices watch",
			"lvs.kubelvs.io/bgppeers get", "lvs.kubelvs.io/bgppeers list", "lvs.kubelvs.io/bgppeers watch", // its BGP sessions
			"lvs.kubelvs.io/bgppeers/status patch",                                                                    // its node's session entry
			"lvs.kubelvs.io/nodereports get", "lvs.kubelvs.io/nodereports create", "lvs.kubelvs.io/nodereports patch", // its node's report
			"authentication.k8s.io/tokenreviews create", "authorization.k8s.io/subjectaccessreviews create", // /metrics callers
		},
		"Role kubelvs-agent": {
			"/pods get",                                                                              // its own pod: the DaemonSet that owns it
			"apps/daemonsets get " + ds, "apps/daemonsets list " + ds, "apps/daemonsets watch " + ds, // an uninstall, seen
			"coordination.k8s.io/leases get", "coordination.k8s.io/leases list", "coordination.k8s.io/leases watch", // layer 2: the agents' heartbeats
			"coordination.k8s.io/leases create", "coordination.k8s.io/leases update", "coordination.k8s.io/leases delete", // its own heartbeat
		},
	}
	got := map[string][]string{}
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		switch o.GetKind() {
		case "ClusterRole":
			rules = typed[rbacv1.ClusterRole](t, o).Rules
		case "Role":
			rules = typed[rbacv1.Role](t, o).Rules
		default:
			continue
		}
		k := o.GetKind() + " " + o.GetName()
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						names := r.ResourceNames
						if len(names) == 0 {
							names = []string{""}
						}
						for _, n := range names {
							got[k] = append(got[k], strings.TrimSpace(g+"/"+res+" "+v+" "+n))
						}
					}
				}
			}
			for _, u := range r.NonResourceURLs {
				for _, v := range r.Verbs {
					got[k] = append(got[k], u+" "+v)
				}
			}
		}
		slices.Sort(got[k])
	}
	for k := range want {
		slices.Sort(want[k])
	}
	// The metrics reader role Prometheus is bound to, if any.
	if r, ok := got["ClusterRole kubelvs-metrics-reader"]; ok {
		want["ClusterRole kubelvs-metrics-reader"] = r
		if !slices.Equal(r, []string{"/metrics get"}) {
			t.Errorf("kubelvs-metrics-reader grants %v, want only GET /metrics", r)
		}
	}
	if !reflect.DeepEqual(got, want) {
		for k := range mergeKeys(got, want) {
			if !slices.Equal(got[k], want[k]) {
				t.Errorf("%s grants\n  %v\nwant\n  %v", k, got[k], want[k])
			}
		}
	}
}

func mergeKeys(a, b map[string][]string) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// grants flattens rules into "group/resource verb" strings.
func grants(t *testing.T, rules []rbacv1.PolicyRule) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames and nonResourceURLs are not compared", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					m[g+"/"+res+" "+v] = true
				}
			}
		}
	}
	return m
}

func keys(m map[string]bool) []string {
	var r []string
	for k := range m {
		r = append(r, k)
	}
	slices.Sort(r)
	return r
}

// TestKernelSetupSysctls: the init container sets exactly the sysctls
// pkg/netif asks for (the agent can only read /proc/sys, so a sysctl missing
// here would make the agent fail on every node).
func TestKernelSetupSysctls(t *testing.T) {
	t.Parallel()
	objs := render(t)
	ds := find(t, objs, "DaemonSet", "kubelvs-agent")
	ics, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "initContainers")
	if len(ics) != 1 {
		t.Fatalf("initContainers %v", ics)
	}
	args, _, _ := unstructured.NestedStringSlice(ics[0].(map[string]any), "args")
	got := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*set_sysctl (\S+) (\S+)$`).FindAllStringSubmatch(strings.Join(args, "\n"), -1) {
		got[m[1]+"="+m[2]] = true
	}
	want := map[string]bool{}
	// A pre-5.9 kernel needs every sysctl the agent knows (conn_reuse_mode too).
	for _, s := range netif.Sysctls("5.4.0", true) {
		want[s.Path+"="+s.Value] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kernel-setup sets %v\npkg/netif.Sysctls wants %v", keys(got), keys(want))
	}
	if len(netif.Sysctls("6.1.0", true)) != len(want)-1 {
		t.Errorf("pkg/netif.Sysctls now differs by kernel in more than conn_reuse_mode: update the kernel-setup script")
	}
}
