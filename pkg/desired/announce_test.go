package desired

import (
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

func announcingPool(t *testing.T, name string, an lvsv1.Announcement, cidrs ...lvsv1.PoolCIDR) *pools.Pool {
	t.Helper()
	p, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: lvsv1.AddressPoolSpec{CIDRs: cidrs, NamespaceSelector: &lvsv1.LabelSelector{}, Announce: &an}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// What a group announces, and which nodes are eligible: the node selector,
// and with trafficPolicy Local the nodes with a ready endpoint (not the
// terminating or unready ones).
func TestAnnouncement(t *testing.T) {
	ps := []*pools.Pool{
		announcingPool(t, "v4-bgp", lvsv1.Announcement{BGP: &lvsv1.BGPAnnouncement{}}, "10.96.0.0/24"),
		announcingPool(t, "v6-both", lvsv1.Announcement{BGP: &lvsv1.BGPAnnouncement{}, Layer2: &lvsv1.Layer2Announcement{}}, "fd00::/64"),
	}
	lb := map[string]string{"role": "lb"}
	for _, tc := range []struct {
		name     string
		mutate   func(*lvsv1.VirtualService)
		pools    []*pools.Pool
		want     string // BGP, Layer2
		eligible map[string]bool
	}{
		{"cluster policy: every node", func(*lvsv1.VirtualService) {}, ps,
			"[10.96.0.10 fd00::10] [fd00::10]", map[string]bool{"node-a": true, "node-b": true, "node-c": true}},
		{"no announcing pool", func(*lvsv1.VirtualService) {}, []*pools.Pool{pool(t, "quiet", nil, "10.0.0.0/8", "fd00::/8")},
			"[] []", nil},
		{"local: nodes with a ready endpoint", func(vs *lvsv1.VirtualService) { vs.Spec.TrafficPolicy = lvsv1.TrafficPolicyLocal }, ps,
			"[10.96.0.10 fd00::10] [fd00::10]", map[string]bool{"node-a": true, "node-b": true, "node-c": false}},
		{"local with a static backend: every node", func(vs *lvsv1.VirtualService) {
			vs.Spec.TrafficPolicy = lvsv1.TrafficPolicyLocal
			vs.Spec.Backends.Static = []lvsv1.StaticBackend{{Address: "10.1.0.9", Port: ptr.To[int32](8080)}}
		}, ps, "[10.96.0.10 fd00::10] [fd00::10]", map[string]bool{"node-a": true, "node-c": true}},
		{"node selector", func(vs *lvsv1.VirtualService) { vs.Spec.NodeSelector = map[string]lvsv1.LabelValue{"role": "lb"} }, ps,
			"[10.96.0.10 fd00::10] [fd00::10]", map[string]bool{"node-a": true, "node-b": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := baseVS()
			tc.mutate(vs)
			g := Build(Input{VS: vs, Slices: slices4and6(), Node: Node{Name: "node-a", Labels: lb}, Pools: tc.pools})
			if g.Hold || g.NotAllowed {
				t.Fatal(g.Problems)
			}
			if got := fmt.Sprint(g.Announce.BGP, g.Announce.Layer2); got != tc.want {
				t.Errorf("announced %s, want %s", got, tc.want)
			}
			labelsOf := map[string]map[string]string{"node-a": lb}
			for n, want := range tc.eligible {
				if got := g.Announce.Eligible(n, labelsOf[n]); got != want {
					t.Errorf("Eligible(%s) = %t, want %t", n, got, want)
				}
			}
		})
	}
	// announce.layer2.nodeSelector: only the nodes it selects may answer;
	// BGP is not limited by it.
	racked, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "racked"},
		Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"10.96.0.0/24", "fd00::/64"}, NamespaceSelector: &lvsv1.LabelSelector{},
			Announce: &lvsv1.Announcement{BGP: &lvsv1.BGPAnnouncement{}, Layer2: &lvsv1.Layer2Announcement{
				NodeSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"rack": "r1"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	g := Build(Input{VS: baseVS(), Slices: slices4and6(), Node: Node{Name: "node-a"}, Pools: []*pools.Pool{racked}})
	vip := netip.MustParseAddr("10.96.0.10")
	if !g.Announce.EligibleLayer2(vip, "node-a", map[string]string{"rack": "r1"}) ||
		g.Announce.EligibleLayer2(vip, "node-b", map[string]string{"rack": "r2"}) ||
		!g.Announce.Eligible("node-b", map[string]string{"rack": "r2"}) {
		t.Errorf("layer 2 must follow the pool's node selector, BGP not")
	}

	// Refused, not allowed: nothing announced.
	vs := baseVS()
	vs.Spec.Addresses = []lvsv1.IPAddress{"203.0.113.1"}
	if g := Build(Input{VS: vs, Node: Node{Name: "node-a"}, Pools: ps}); !g.NotAllowed || !g.Announce.Empty() {
		t.Errorf("not allowed: %+v", g.Announce)
	}
}
