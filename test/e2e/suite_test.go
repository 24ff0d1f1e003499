//go:build e2e

// Package e2e is kubelvs's end-to-end suite: real traffic through VIPs,
// real kernel state, real API server. One suite, two drivers:
//
//   - local (make e2e): run inside a guest kernel; etcd, kube-apiserver, the
//     controller and the agent run as processes with the RBAC the Helm chart
//     ships; backends and clients live in network namespaces and the suite
//     writes their EndpointSlices (there is no kubelet).
//   - cluster (make e2e-kind, or -kubeconfig): any cluster with kubelvs
//     installed as the Helm release -release in -release-namespace, or
//     where the suite installs it (-install); backends and clients are pods
//     of the e2e-echo image, the node's kernel is read and changed from
//     privileged pods.
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// -kubeconfig (registered by controller-runtime) selects the cluster
// driver: the cluster of that kubeconfig. Without it, the local driver runs;
// the other flags are the cluster driver's.
var (
	echoImage        = flag.String("echo-image", "kubelvs/e2e-echo:dev", "image of test/e2e/echo/cmd/e2e-echo")
	release          = flag.String("release", "kubelvs", "Helm release of kubelvs")
	releaseNamespace = flag.String("release-namespace", "kubelvs-system", "namespace of the release")
	helmBin          = flag.String("helm", "helm", "helm binary")
	kubectlBin       = flag.String("kubectl", "kubectl", "kubectl binary")
	// With -install the suite owns the release: it installs it (the
	// previous chart if given, then upgrades), upgrades it and uninstalls
	// it. Without, it uses the installed release and never changes it.
	install       = flag.Bool("install", false, "install the release with helm (and upgrade and uninstall it); needs -image")
	chart         = flag.String("chart", filepath.Join("..", "..", "charts", "kubelvs"), "chart to install and upgrade to (a relative path is from test/e2e, the test's working directory)")
	previousChart = flag.String("previous-chart", "", "with -install: an older chart to install first; the first scenario upgrades from it to -chart")
	image         = flag.String("image", "", "with -install: repository:tag of the kubelvs image, for the chart's image values")
	previousImage = flag.String("previous-image", "", "with -previous-chart: repository:tag of the previous release's image, installed with it (default: -image)")
)

func kubeconfigFlag() string {
	if f := flag.Lookup("kubeconfig"); f != nil {
		return f.Value.String()
	}
	return ""
}

// Backend is one real server the suite controls.
type Backend struct {
	Name string
	Addr netip.Addr
}

// Client sends traffic to VIPs from one place.
type Client interface {
	// Addr is the client's source address as the node sees it.
	Addr() netip.Addr
	// Greet opens a TCP connection and returns the backend's name.
	Greet(addr netip.AddrPort) (string, error)
	// Hold opens a TCP connection and keeps it.
	Hold(addr netip.AddrPort) (Held, error)
	// Ask sends one UDP datagram from a fixed source port and returns the
	// answering backend's name.
	Ask(addr netip.AddrPort, sport uint16) (string, error)
}

// Held is an established connection.
type Held interface {
	Backend() string
	Ping(msg string) (string, error)
	Close() error
}

// Cluster is what a driver provides.
type Cluster interface {
	// Client returns the API client (cluster admin).
	API() client.Client
	// Namespace holds the suite's VirtualServices, Services and slices.
	Namespace() string
	// Backends starts n backends for Service svc; none is an endpoint yet.
	Backends(t *testing.T, svc string, n int) []Backend
	// SetEndpoints makes exactly bs the ready endpoints of Service svc.
	SetEndpoints(t *testing.T, svc string, bs []Backend)
	// SetHealthy makes b's HTTP health check (port 8081 /healthz) pass or fail.
	SetHealthy(t *testing.T, b Backend, ok bool)
	// Client returns a client; Outsider another one, with another address
	// (sourceRanges of the Client's /32 leave it out).
	Client(t *testing.T) Client
	Outsider(t *testing.T) Client
	// KernelDump prints the IPVS services of vip and their real servers.
	KernelDump(t *testing.T, vip netip.Addr) string
	// Can returns why the driver cannot do op, or nil.
	Can(op Op) error
	// UpgradeChart upgrades kubelvs from the previous chart to the current
	// one as the README says (CRDs first), and checks the CRD was upgraded.
	UpgradeChart(t *testing.T)
	// RollAgent changes the agent's pod template and waits until the
	// DaemonSet has replaced the agent.
	RollAgent(t *testing.T)
	// RestartAgent stops the agent and starts it again (deletes its pod),
	// and waits until the new one is ready.
	RestartAgent(t *testing.T)
	// Uninstall removes kubelvs as `helm uninstall` does and returns when
	// the agents are gone.
	Uninstall(t *testing.T)
	// NodeKernel runs a kernel action as root on the node: "dump" lists its
	// IPVS services, ipsets, iptables rules (both backends) and kubelvs0
	// (see package echo); "add-foreign" creates objects of another program
	// there, "delete-foreign" removes them.
	NodeKernel(t *testing.T, action string) []string
}

// Op is a lifecycle operation that not every driver, or every run, can do.
type Op string

// The lifecycle operations.
const (
	OpUpgrade   Op = "upgrade from the previous chart"
	OpRoll      Op = "roll the agent DaemonSet"
	OpUninstall Op = "uninstall kubelvs"
)

// skipUnless skips t when c cannot do op, saying why.
func skipUnless(t *testing.T, c Cluster, op Op) {
	t.Helper()
	if err := c.Can(op); err != nil {
		t.Skipf("cannot %s: %v", op, err)
	}
}

var cluster Cluster

// vips holds the suite's VIPs: TEST-NET-2 (RFC 5737) is no cluster's
// Service or Pod CIDR, so a VIP never shadows a ClusterIP or a pod; the
// upper quarter keeps clear of the addresses examples/ uses.
var vips = netip.MustParsePrefix("198.51.100.192/26")

// testVIP returns the n-th VIP of the suite (1-55).
func testVIP(n int) netip.Addr {
	a := vips.Addr().As4()
	a[3] += byte(8 + n)
	return netip.AddrFrom4(a)
}

func TestMain(m *testing.M) {
	flag.Parse()
	logf.SetLogger(logr.Discard())
	var stop func()
	var err error
	switch kc := kubeconfigFlag(); {
	case *previousChart != "" && !*install:
		err = errors.New("-previous-chart needs -install")
	case kc != "":
		cluster, stop, err = newRemote(kc)
	case *install:
		err = errors.New("-install is the cluster driver's: pass -kubeconfig")
	default:
		cluster, stop, err = newLocal()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	// The suite's VIPs are bound only where an AddressPool admits them. A
	// previous chart without the AddressPool API has none: its pool is
	// created by the upgrade, as the README's upgrade says.
	if err := ensureSuitePool(cluster); err != nil && !meta.IsNoMatchError(err) {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		stop()
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// suitePool is the AddressPool that admits the suite's namespace to its
// VIPs (and to the crash test's 10.234.0.0/16).
func suitePool(c Cluster) *lvsv1.AddressPool {
	return &lvsv1.AddressPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: lvsv1.GroupVersion.String(), Kind: "AddressPool"},
		ObjectMeta: metav1.ObjectMeta{Name: "kubelvs-e2e"},
		Spec: lvsv1.AddressPoolSpec{
			CIDRs: []lvsv1.PoolCIDR{lvsv1.PoolCIDR(vips.String()), "10.234.0.0/16"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{lvsv1.LabelValue(c.Namespace())},
			}}},
		},
	}
}

// ensureSuitePool creates the suite's AddressPool unless it exists.
func ensureSuitePool(c Cluster) error {
	err := c.API().Create(context.Background(), suitePool(c))
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create the suite's AddressPool: %w", err)
	}
	return nil
}

// timing logs how long a lifecycle step took, in one greppable format.
func timing(what string, since time.Time) {
	fmt.Fprintf(os.Stderr, "e2e: timing: %s: %.1fs\n", what, time.Since(since).Seconds())
}

// eventually polls f until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	timeout = kerneltest.Timeout(timeout)
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
