package floor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/test/corpus"
)

const (
	chartFile = "../../charts/kubelvs/Chart.yaml"
	crdDir    = "../../charts/kubelvs/crds" // the files Helm installs, not config/crd
)

func TestShippedCRDOnOldestSupportedKubernetes(t *testing.T) {
	dir := assets(t)
	floor := chartFloor(t)

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{crdDir},
		ErrorIfCRDPathMissing: true,
		UseExistingCluster:    ptr.To(false),
		// Explicit paths: envtest prefers $KUBEBUILDER_ASSETS, which
		// `make test-unit` points at the current kube-apiserver, over
		// BinaryAssetsDirectory.
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{Path: filepath.Join(dir, "kube-apiserver")},
			Etcd:      &envtest.Etcd{Path: filepath.Join(dir, "etcd")},
		},
	}
	// Start installs the CRD and waits for it to be established: a rule the
	// server cannot compile fails it here.
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start the kube-apiserver of %s and install %s: %v", dir, crdDir, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})

	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("discovery client: %v", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	got, err := version.ParseSemantic(info.GitVersion)
	if err != nil {
		t.Fatalf("server version %q: %v", info.GitVersion, err)
	}
	if got.Major() != floor.Major() || got.Minor() != floor.Minor() {
		t.Fatalf("the kube-apiserver in %s is %s, but Chart.yaml's kubeVersion floor is %d.%d: the test would not test the claim",
			dir, info.GitVersion, floor.Major(), floor.Minor())
	}
	t.Logf("CRD %s established on kube-apiserver %s", crdDir, info.GitVersion)

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, lvsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatalf("scheme: %v", err)
		}
	}
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "floor-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}

	t.Run("valid", func(t *testing.T) {
		vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name}, Spec: validSpec()}
		if err := k8s.Create(ctx, vs); err != nil {
			t.Fatalf("create a valid VirtualService: %v", err)
		}
		var back lvsv1.VirtualService
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(vs), &back); err != nil {
			t.Fatalf("get it back: %v", err)
		}
		if want := validSpec().Addresses; !slices.Equal(back.Spec.Addresses, want) {
			t.Fatalf("stored addresses %v, want %v", back.Spec.Addresses, want)
		}
	})

	// One rejection per function of the IP and CIDR libraries that the
	// rules call: each proves that the rule compiled and that it runs.
	cases := []struct {
		name   string
		mutate func(s *lvsv1.VirtualServiceSpec)
		field  string // the field the API server's message must name
		msg    string // a part of the message
	}{
		{"isIP", func(s *lvsv1.VirtualServiceSpec) { s.Addresses[0] = "10.0.0.300" }, "spec.addresses[0]", "valid IP address"},
		{"ip.isCanonical", func(s *lvsv1.VirtualServiceSpec) { s.Addresses[1] = "2001:0db8:0::1" }, "spec.addresses[1]", "canonical"},
		{"ip().isGlobalUnicast", func(s *lvsv1.VirtualServiceSpec) { s.Addresses[0] = "127.0.0.1" }, "spec.addresses[0]", "unicast"},
		{"ip().family", func(s *lvsv1.VirtualServiceSpec) { s.Addresses[1] = "10.96.0.11" }, "spec.addresses", "one address per IP family"},
		{"isCIDR", func(s *lvsv1.VirtualServiceSpec) { s.SourceRanges = []lvsv1.CIDR{"10.0.0.0/33"} }, "spec.sourceRanges[0]", "valid CIDR"},
	}
	for _, tc := range cases {
		t.Run("rejects/"+tc.name, func(t *testing.T) {
			spec := validSpec()
			tc.mutate(&spec)
			vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns.Name}, Spec: spec}
			err := k8s.Create(ctx, vs, client.DryRunAll)
			if err == nil {
				t.Fatal("the API server accepted an invalid VirtualService")
			}
			var se *apierrors.StatusError
			if !errors.As(err, &se) || !apierrors.IsInvalid(err) || se.ErrStatus.Details == nil {
				t.Fatalf("want an Invalid error with causes, got %v", err)
			}
			for _, c := range se.ErrStatus.Details.Causes {
				if c.Field == tc.field && strings.Contains(c.Message, tc.msg) {
					return
				}
			}
			t.Fatalf("no cause names %s with %q; the API server said: %v", tc.field, tc.msg, err)
		})
	}

	t.Run("addresspool", func(t *testing.T) { addressPools(ctx, t, k8s) })
}

// addressPools checks the AddressPool CRD on the floor: a pool is stored,
// one refusal per kind of rule (each CEL function its rules call), and the
// API server agrees with validation.AddressPool on the whole parity sweep
// (1.31's IP and CIDR functions differ from later ones: containsCIDR does
// not mask, which the rules avoid).
func addressPools(ctx context.Context, t *testing.T, k8s client.Client) {
	p := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "floor"}, Spec: corpus.ValidPoolSpec()}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("create a valid AddressPool: %v", err)
	}
	if p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Errorf("autoAssign %v, want true", p.Spec.AutoAssign)
	}
	rng := func(first, last string) func(s *lvsv1.AddressPoolSpec) {
		return func(s *lvsv1.AddressPoolSpec) {
			s.Ranges = []lvsv1.AddressRange{{First: lvsv1.IPAddress(first), Last: lvsv1.IPAddress(last)}}
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(s *lvsv1.AddressPoolSpec)
		field  string
		msg    string
	}{
		{"cidr().masked", func(s *lvsv1.AddressPoolSpec) { s.CIDRs[0] = "192.0.2.1/24" }, "spec.cidrs[0]", "no bits set"},
		{"containsIP in a reserved network", func(s *lvsv1.AddressPoolSpec) { s.CIDRs[0] = "127.1.0.0/16" }, "spec.cidrs[0]", "unicast"},
		{"containsIP around a reserved network", func(s *lvsv1.AddressPoolSpec) { s.CIDRs[1] = "fe00::/7" }, "spec.cidrs[1]", "unicast"},
		{"ip().family of a range", rng("198.51.100.1", "2001:db8::1"), "spec.ranges[0]", "same IP family"},
		{"IPv4 order (split, int)", rng("10.0.0.10", "10.0.0.9"), "spec.ranges[0]", "first must not be after last"},
		{"IPv6 order (replace, filter, indexOf, charAt)", rng("2001:db8::10", "2001:db8::9"), "spec.ranges[0]", "first must not be after last"},
		{"IPv4 span", rng("126.0.0.1", "128.0.0.1"), "spec.ranges[0]", "127.0.0.0/8"},
		{"IPv6 span", rng("::2", "::1:0:0:1"), "spec.ranges[0]", "::ffff:0:0/96"},
		{"avoid isIP or isCIDR", func(s *lvsv1.AddressPoolSpec) { s.Avoid[0] = "gateway" }, "spec.avoid[0]", "IP address or a CIDR"},
		{"label key indexOf", func(s *lvsv1.AddressPoolSpec) {
			s.NamespaceSelector.MatchExpressions[0].Key = lvsv1.LabelKey(strings.Repeat("p", 254) + "/x")
		}, "spec.namespaceSelector.matchExpressions[0].key", "253"},
	} {
		t.Run("rejects/"+tc.name, func(t *testing.T) {
			spec := corpus.ValidPoolSpec()
			tc.mutate(&spec)
			err := k8s.Create(ctx, &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: spec}, client.DryRunAll)
			if !causeNames(err, tc.field, tc.msg) {
				t.Fatalf("no cause names %s with %q; the API server said: %v", tc.field, tc.msg, err)
			}
		})
	}
	t.Run("corpus", func(t *testing.T) {
		refused, stored := corpus.AddressPools()
		for _, tc := range refused {
			spec := corpus.ValidPoolSpec()
			tc.Mutate(&spec)
			err := k8s.Create(ctx, &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: spec}, client.DryRunAll)
			if !causeNames(err, tc.Field, tc.Msg) {
				t.Errorf("%s: no cause names %s with %q; the API server said: %.1000v", tc.Name, tc.Field, tc.Msg, err)
			}
		}
		for _, tc := range stored {
			spec := corpus.ValidPoolSpec()
			tc.Mutate(&spec)
			if err := k8s.Create(ctx, &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "stored"}, Spec: spec}, client.DryRunAll); err != nil {
				t.Errorf("%s: the API server refuses it (%v): move it to the API-refused cases of test/corpus", tc.Name, err)
			}
		}
	})
	t.Run("parity", func(t *testing.T) {
		corpus.CheckPoolParity(t, func(p *lvsv1.AddressPool) error { return k8s.Create(ctx, p, client.DryRunAll) }, apierrors.IsInvalid)
	})
}

// causeNames reports whether err is an Invalid error with a cause of
// field whose message has msg.
func causeNames(err error, field, msg string) bool {
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsInvalid(err) || se.ErrStatus.Details == nil {
		return false
	}
	for _, c := range se.ErrStatus.Details.Causes {
		if c.Field == field && strings.Contains(c.Message, msg) {
			return true
		}
	}
	return false
}

// validSpec is a dual-stack VirtualService with a static backend, so that
// the family rules have two addresses to compare.
func validSpec() lvsv1.VirtualServiceSpec {
	return lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.0.10", "2001:db8::10"},
		Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP}},
		Scheduler: lvsv1.SchedulerRoundRobin,
		Backends: lvsv1.Backends{
			Static: []lvsv1.StaticBackend{{Address: "192.0.2.10", Weight: ptr.To[int32](1)}},
		},
		SourceRanges: []lvsv1.CIDR{"192.0.2.0/24", "2001:db8::/32"},
	}
}

// assets returns $KUBELVS_FLOOR_ASSETS, which must hold kube-apiserver and
// etcd, and skips the test when it is unset, unless KUBELVS_REQUIRE_ENVTEST
// is set.
func assets(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBELVS_FLOOR_ASSETS")
	if dir == "" {
		msg := "KUBELVS_FLOOR_ASSETS is not set; run `make test-unit` (it builds the oldest supported kube-apiserver)"
		if os.Getenv("KUBELVS_REQUIRE_ENVTEST") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipping")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("KUBELVS_FLOOR_ASSETS=%s: %v; run `make test-bins-floor`", dir, err)
		}
	}
	return dir
}

// kubeVersionFloor matches the one form of kubeVersion this test can check:
// a lower bound only, with -0 so that pre-releases and vendor builds
// (v1.31.2-gke.100) of the floor match too.
var kubeVersionFloor = regexp.MustCompile(`^>=\s*v?(\d+)\.(\d+)\.0-0$`)

// chartFloor returns the major.minor of Chart.yaml's kubeVersion.
func chartFloor(t *testing.T) *version.Version {
	t.Helper()
	b, err := os.ReadFile(chartFile)
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		KubeVersion string `json:"kubeVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatalf("%s: %v", chartFile, err)
	}
	m := kubeVersionFloor.FindStringSubmatch(chart.KubeVersion)
	if m == nil {
		t.Fatalf("%s: kubeVersion %q is not of the form \">=1.N.0-0\"", chartFile, chart.KubeVersion)
	}
	return version.MustParseGeneric(fmt.Sprintf("%s.%s.0", m[1], m[2]))
}
