package envtest

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kubelvs/kubelvs/pkg/roles"
)

// agentSA is the agent's ServiceAccount in the tests' namespaces.
const agentSA = "kubelvs-agent"

// agentIdentity returns a config that authenticates as the agent's
// ServiceAccount of ns (by its user name, which RBAC subjects of kind
// ServiceAccount match), with whatever RBAC the test granted it.
func agentIdentity(t *testing.T, ns string) *rest.Config {
	t.Helper()
	u, err := testEnv.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + agentSA,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.Config()
}

func newClient(t *testing.T, c *rest.Config) client.Client {
	t.Helper()
	cl, err := client.New(c, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// agentRBAC is what grantAgentRBAC created.
type agentRBAC struct {
	roleBinding        *rbacv1.RoleBinding
	clusterRoleBinding *rbacv1.ClusterRoleBinding
}

// revoke deletes the bindings, as `helm uninstall` does after the
// DaemonSet.
func (r agentRBAC) revoke(t *testing.T) {
	t.Helper()
	for _, o := range []client.Object{r.roleBinding, r.clusterRoleBinding} {
		if err := k8s.Delete(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

// grantAgentRBAC binds the agent's ServiceAccount of ns to the RBAC that
// config/rbac ships: the ClusterRole generated from the markers, without the
// grants kustomization.yaml moves into the namespaced Role (and without the
// resources in drop), and that Role, in ns.
func grantAgentRBAC(t *testing.T, ns string, drop ...string) agentRBAC {
	t.Helper()
	ctx := context.Background()
	var cr rbacv1.ClusterRole
	readYAML(t, "../../config/rbac/agent/role.yaml", &cr)
	var role rbacv1.Role
	readYAML(t, "../../config/rbac/agent_role.yaml", &role)
	namespaced := map[string]bool{}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			namespaced[res] = true
		}
	}
	cr.Rules = slices.DeleteFunc(cr.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.ContainsFunc(r.Resources, func(res string) bool { return namespaced[res] })
	})
	// A dropped resource leaves its rule's other resources granted.
	for i := range cr.Rules {
		cr.Rules[i].Resources = slices.DeleteFunc(slices.Clone(cr.Rules[i].Resources), func(res string) bool { return slices.Contains(drop, res) })
	}
	cr.Rules = slices.DeleteFunc(cr.Rules, func(r rbacv1.PolicyRule) bool { return len(r.Resources) == 0 })
	cr.ObjectMeta = metav1.ObjectMeta{Name: "kubelvs-agent-" + ns}
	role.ObjectMeta = metav1.ObjectMeta{Name: "kubelvs-agent", Namespace: ns}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: agentSA, Namespace: ns}}
	out := agentRBAC{
		roleBinding: &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelvs-agent", Namespace: ns}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}},
		clusterRoleBinding: &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}},
	}
	for _, o := range []client.Object{&cr, &role, out.roleBinding, out.clusterRoleBinding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The generated file starts with a document separator.
	if err := yaml.Unmarshal([]byte(strings.TrimPrefix(string(b), "---\n")), into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// agentDaemonSet creates the agent's DaemonSet in ns and its pod on this
// node, owned by it as the DaemonSet controller would make it (no
// controller runs here: the objects only need to exist). owned=false
// leaves the pod without an owner.
func agentDaemonSet(t *testing.T, ns string, owned bool) (*appsv1.DaemonSet, *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	ds := newAgentDaemonSet(ns)
	if err := k8s.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-x7k2p", Namespace: ns, Labels: ds.Spec.Selector.MatchLabels},
		Spec:       ds.Spec.Template.Spec,
	}
	if owned {
		pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return ds, pod
}

func newAgentDaemonSet(ns string) *appsv1.DaemonSet {
	labels := map[string]string{"app.kubernetes.io/component": "agent"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelvs-agent", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "kubelvs:test"}}},
			},
		},
	}
}

// refusals wraps c to count the API server's 403 answers to requests for
// resource.
func refusals(c *rest.Config, resource string) (*rest.Config, *atomic.Int32) {
	c = rest.CopyConfig(c)
	n := &atomic.Int32{}
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusForbidden && strings.Contains(r.URL.Path, "/"+resource) {
				n.Add(1)
			}
			return resp, err
		})
	})
	return c, n
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// freeAddr is a local address nobody listens on, for a probe endpoint.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ready tells whether the agent's /readyz (its first full sync) answers OK.
func ready(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
