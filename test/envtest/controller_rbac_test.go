package envtest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

// The controller role works with exactly the RBAC config/rbac ships (the
// generated ClusterRole without what kustomization.yaml moves into the
// leader-election Role, and that Role in its namespace): it wins the
// election, reconciles, records Events and steps down cleanly.
func TestControllerWithItsRBAC(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "ctrl-rbac")
	ucfg := controllerUser(t, k8s, testEnv, ns)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- roles.RunController(cctx, ucfg, roles.ControllerOptions{
			MetricsBindAddress: freeAddr(t), MetricsSecure: true, HealthProbeBindAddress: "0",
			LeaderElect: true, LeaderElectionNamespace: ns, SecondInProcess: true,
			// Services without a class are this controller's alone (the
			// suite's does not serve them): they exercise its RBAC.
			DefaultLoadBalancerClass: true,
		})
	}()
	stopped := false
	stop := func() error {
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the controller did not stop")
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})

	// It must win its namespace's Lease (the suite's own controller, as
	// admin, elects in no namespace) ...
	lease := &coordinationv1.Lease{}
	eventually(t, 60*time.Second, "the controller holds its Lease", func() error {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("the controller stopped: %v", err)
		default:
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: roles.LeaderElectionID}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	// It generates a VirtualService from a Service (services list and
	// watch, virtualservices create), copies its address into the
	// Service's ingress (services/status patch), overwrites a hand edit
	// (update) and removes both when the Service is no longer a
	// LoadBalancer (delete, patch).
	svc := lbService(t, ns, "web", "192.0.2.118", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	key := client.ObjectKeyFromObject(svc)
	waitCondition(t, key, lvsv1.ConditionAccepted, metav1.ConditionTrue, "Accepted")
	waitIngress(t, key, "192.0.2.118")
	eventually(t, 10*time.Second, "edit the VirtualService by hand", func() error {
		var vs lvsv1.VirtualService
		if err := k8s.Get(ctx, key, &vs); err != nil {
			return err
		}
		vs.Spec.Scheduler = lvsv1.SchedulerMaglevHashing
		return k8s.Update(ctx, &vs)
	})
	waitVS(t, key, "the hand edit overwritten", func(vs *lvsv1.VirtualService) error {
		if vs.Spec.Scheduler != lvsv1.SchedulerRoundRobin {
			return fmt.Errorf("scheduler %s", vs.Spec.Scheduler)
		}
		return nil
	})
	updateService(t, key, toClusterIP)
	waitNoVS(t, key, "the VirtualService deleted with the type")
	waitIngress(t, key)

	// ... and step down cleanly, releasing it (an update by name).
	if err := stop(); err != nil {
		t.Fatalf("the controller, with its RBAC, stopped with: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: roles.LeaderElectionID}, lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Fatalf("the Lease is still held by %q after the controller stopped", *h)
	}
}

// controllerUser grants a service account of ns exactly the RBAC
// config/rbac ships for the controller (the generated ClusterRole without
// what kustomization.yaml moves into the leader-election Role, and that
// Role in ns) on env's API server, and returns a config that
// authenticates as it.
func controllerUser(t *testing.T, c client.Client, env *envtest.Environment, ns string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	var cr rbacv1.ClusterRole
	readYAML(t, "../../config/rbac/controller/role.yaml", &cr)
	var role rbacv1.Role
	readYAML(t, "../../config/rbac/leader_election_role.yaml", &role)
	inRole := map[string]bool{}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				inRole[g+"/"+res] = true
			}
		}
	}
	var rules []rbacv1.PolicyRule
	for _, r := range cr.Rules {
		r.APIGroups = slices.DeleteFunc(slices.Clone(r.APIGroups), func(g string) bool {
			return slices.ContainsFunc(r.Resources, func(res string) bool { return inRole[g+"/"+res] })
		})
		if len(r.APIGroups) > 0 {
			rules = append(rules, r)
		}
	}
	cr.Rules = rules
	cr.ObjectMeta = metav1.ObjectMeta{Name: "kubelvs-controller-" + ns}
	role.ObjectMeta = metav1.ObjectMeta{Name: "kubelvs-leader-election", Namespace: ns}
	const sa = "kubelvs-controller"
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}
	objs := []client.Object{&cr, &role,
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
	}
	u, err := env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.Config()
}
