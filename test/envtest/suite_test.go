// Package envtest runs kubelvs against a real kube-apiserver and etcd
// (controller-runtime's envtest) with the CRD from config/crd.
package envtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/roles"
)

var (
	cfg *rest.Config
	k8s client.Client
	// testEnv adds users (AddUser) that authenticate without the admin's
	// rights, for tests of RBAC.
	testEnv *envtest.Environment
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		msg := "envtest: KUBEBUILDER_ASSETS is not set; run `make test-unit` (it builds kube-apiserver and etcd)"
		if os.Getenv("KUBELVS_REQUIRE_ENVTEST") != "" {
			fmt.Fprintln(os.Stderr, msg)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, msg+"; skipping")
		os.Exit(0)
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if cfg, err = testEnv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		os.Exit(1)
	}
	code := func() int {
		if k8s, err = client.New(cfg, client.Options{Scheme: roles.Scheme()}); err != nil {
			fmt.Fprintf(os.Stderr, "client: %v\n", err)
			return 1
		}
		// Addresses are bound only where an AddressPool admits them: one
		// pool for the whole suite admits every namespace to the networks
		// the tests use (the tests of pools themselves use others).
		if err := k8s.Create(context.Background(), suitePool()); err != nil {
			fmt.Fprintf(os.Stderr, "create the suite's AddressPool: %v\n", err)
			return 1
		}
		defer func() { _ = k8s.Delete(context.Background(), suitePool()) }()
		// The controller role runs for the whole suite, as `manager controller` would.
		stopSuiteController = runController(suiteControllerOptions())
		code := m.Run()
		if err := stopSuiteController(); err != nil {
			fmt.Fprintf(os.Stderr, "controller role: %v\n", err)
			return 1
		}
		return code
	}()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
	}
	os.Exit(code)
}

// stopSuiteController stops the suite's controller role and returns what
// it returned.
var stopSuiteController func() error

func suiteControllerOptions() roles.ControllerOptions {
	return roles.ControllerOptions{MetricsBindAddress: "0", HealthProbeBindAddress: "0"}
}

// runController runs a controller role until stop.
func runController(o roles.ControllerOptions) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- roles.RunController(ctx, cfg, o) }()
	return func() error {
		cancel()
		return <-done
	}
}

// replaceSuiteController runs, for one test, a controller role with
// options o instead of the suite's (two would fight over the status they
// compute differently), and the suite's again when the test ends.
func replaceSuiteController(t *testing.T, o roles.ControllerOptions) {
	t.Helper()
	if err := stopSuiteController(); err != nil {
		t.Fatalf("the suite's controller role: %v", err)
	}
	o.MetricsBindAddress, o.HealthProbeBindAddress, o.SecondInProcess = "0", "0", true
	stop := runController(o)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("the test's controller role: %v", err)
		}
		so := suiteControllerOptions()
		// Its controllers' names are taken in this process already.
		so.SecondInProcess = true
		stopSuiteController = runController(so)
	})
}

// suitePool admits every namespace to the networks the tests bind.
func suitePool() *lvsv1.AddressPool {
	return &lvsv1.AddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "envtest-suite"},
		Spec: lvsv1.AddressPoolSpec{
			CIDRs:             []lvsv1.PoolCIDR{"10.96.0.0/16", "192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64"},
			NamespaceSelector: &lvsv1.LabelSelector{},
		},
	}
}

// namespace creates a fresh namespace for one test, and empties and
// deletes it when the test ends: envtest runs no namespace controller, so
// what a test leaves would stay, claim its addresses and conflict with the
// next run of the suite in the same process (-count=2).
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { emptyNamespace(t, ns.Name) })
	return ns.Name
}

// emptyNamespace deletes what the tests create in a namespace, then it.
func emptyNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	for _, o := range []client.Object{&lvsv1.VirtualService{}, &discoveryv1.EndpointSlice{}, &corev1.Service{}, &corev1.Pod{}} {
		if err := k8s.DeleteAllOf(ctx, o, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("empty namespace %s: %v", ns, err)
		}
	}
	if err := k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", ns, err)
	}
}

// node creates a Node for one test and deletes it when the test ends.
func node(t *testing.T, n *corev1.Node) {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Create(ctx, n); err != nil {
		t.Fatalf("create node %s: %v", n.Name, err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, n); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", n.Name, err)
		}
	})
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
