package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/desired"
)

// Which addresses a VirtualService may bind is not known before the pools
// are loaded, nor without its namespace's labels: the build fails, and a
// failed build keeps what the kernel has (TestFullSyncKeepsWhatFailedToBuild).
func TestBuildFailsWhenAdmissionIsUnknown(t *testing.T) {
	ctx := context.Background()
	vs := &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: lvsv1.VirtualServiceSpec{
		Addresses: []lvsv1.IPAddress{"10.96.0.10"},
		Ports:     []lvsv1.VirtualServicePort{{Port: 80, Protocol: lvsv1.ProtocolTCP}},
		Backends:  lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: "10.1.0.1"}}},
	}}
	pool := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "all"},
		Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"10.96.0.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{}}}
	c := fake.NewClientBuilder().WithScheme(scriptScheme).WithObjects(vs, pool).Build()
	k := newFakeKernel()
	sy, err := k.syncer(ctx, clocktesting.NewFakeClock(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(c, sy, nil, Options{NodeName: scriptNode})
	if err != nil {
		t.Fatal(err)
	}
	node := desired.Node{Name: scriptNode}

	if _, err := a.build(ctx, vs, node); err == nil || !strings.Contains(err.Error(), "AddressPools are not loaded") {
		t.Fatalf("before the pools are loaded: %v", err)
	}
	a.loadPools(ctx)
	if _, err := a.build(ctx, vs, node); err == nil || !strings.Contains(err.Error(), "get namespace shop") {
		t.Fatalf("without the namespace: %v", err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	g, err := a.build(ctx, vs, node)
	if err != nil || g.NotAllowed || len(g.Services) != 1 {
		t.Fatalf("with pools and namespace: %v\n%s", err, g.Dump())
	}
}
