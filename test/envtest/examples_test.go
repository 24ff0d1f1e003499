package envtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

func TestExamplesAreAcceptedWithDefaults(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("want at least 5 examples, found %v (%v)", files, err)
	}
	created := map[string]*lvsv1.VirtualService{}
	var stored []*lvsv1.AddressPool // the example pools
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if ns := u.GetNamespace(); ns != "" {
			if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			if err := k8s.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		})
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatalf("%s rejected: %v", f, err)
		}
		if u.GetKind() == "AddressPool" {
			var p lvsv1.AddressPool
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), &p); err != nil {
				t.Fatal(err)
			}
			stored = append(stored, &p)
			continue
		}
		var vs lvsv1.VirtualService
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), &vs); err != nil {
			t.Fatal(err)
		}
		spec, _ := yaml.Marshal(vs.Spec)
		t.Logf("%s as stored, defaults applied:\n%s", filepath.Base(f), spec)
		created[vs.Name] = &vs
	}

	// The example pool lets every example VirtualService's namespace, with
	// the labels the API server gave it, use its addresses.
	var ps []*pools.Pool
	for _, ap := range stored {
		p, err := pools.New(ap)
		if err != nil {
			t.Fatalf("the API server stored an AddressPool validation refuses: %v", err)
		}
		if p.AutoAssign {
			t.Errorf("pool %s: autoAssign true, the example says false", p.Name)
		}
		ps = append(ps, p)
	}
	for _, vs := range created {
		var ns corev1.Namespace
		if err := k8s.Get(ctx, client.ObjectKey{Name: vs.Namespace}, &ns); err != nil {
			t.Fatal(err)
		}
		for _, a := range vs.Spec.Addresses {
			if pools.Find(ps, ns.Name, ns.Labels, mustAddr(string(a))) == nil {
				t.Errorf("no example AddressPool lets namespace %s (labels %v) use %s", ns.Name, ns.Labels, a)
			}
		}
	}

	// Defaults the examples leave out, as the API server filled them in.
	checks := []struct {
		what      string
		got, want any
	}{
		{"web forwarding", created["web"].Spec.Forwarding, lvsv1.ForwardingMasquerade},
		{"web trafficPolicy", created["web"].Spec.TrafficPolicy, lvsv1.TrafficPolicyCluster},
		{"web healthCheck rise", created["web"].Spec.HealthCheck.Rise, int32(2)},
		{"web healthCheck fall", created["web"].Spec.HealthCheck.Fall, int32(3)},
		{"api port protocol", created["api"].Spec.Ports[0].Protocol, lvsv1.ProtocolTCP},
		{"api drain timeout", created["api"].Spec.Drain.TimeoutSeconds, int32(60)},
		{"legacy-app IPv6 prefix", created["legacy-app"].Spec.Persistence.IPv6PrefixLength, int32(128)},
		{"video static weight", *created["video"].Spec.Backends.Static[0].Weight, int32(1)},
		{"dns drain flush", created["dns"].Spec.Drain.FlushTCPConntrack, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}

	// A VirtualService that names almost nothing gets the documented defaults.
	minimal := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "minimal", Namespace: "default"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.1.1"},
		Ports:     []lvsv1.VirtualServicePort{{Port: 80}},
		Backends:  lvsv1.Backends{ServiceRef: &lvsv1.ServiceReference{Name: "web"}},
	}}
	if err := k8s.Create(ctx, minimal); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, minimal) })
	s := minimal.Spec
	if s.Scheduler != lvsv1.SchedulerRoundRobin || s.Forwarding != lvsv1.ForwardingMasquerade || s.Ports[0].Protocol != lvsv1.ProtocolTCP ||
		s.TrafficPolicy != lvsv1.TrafficPolicyCluster || s.Drain == nil || s.Drain.TimeoutSeconds != 60 {
		t.Fatalf("defaults not applied: %+v", s)
	}
}
