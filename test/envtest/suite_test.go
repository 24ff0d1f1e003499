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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

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
		// The controller role runs for the whole suite, as `manager controller` would.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- roles.RunController(ctx, cfg, roles.ControllerOptions{MetricsBindAddress: "0", HealthProbeBindAddress: "0"})
		}()
		code := m.Run()
		cancel()
		if err := <-done; err != nil {
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

// namespace creates a fresh namespace for one test.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns.Name
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
