package pools_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func newPool(t testing.TB, name string, spec lvsv1.AddressPoolSpec) *pools.Pool {
	t.Helper()
	p, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestContains(t *testing.T) {
	t.Parallel()
	p := newPool(t, "p", lvsv1.AddressPoolSpec{
		CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24", "2001:db8:1::/64", "203.0.113.7/32"},
		Ranges: []lvsv1.AddressRange{
			{First: "198.51.100.10", Last: "198.51.100.20"},
			{First: "198.51.100.21", Last: "198.51.100.30"}, // touches the one before
			{First: "2001:db8:2::ffff", Last: "2001:db8:2::1:1"},
			{First: "223.255.255.250", Last: "223.255.255.255"},
		},
		Avoid: []lvsv1.AddressOrCIDR{"192.0.2.0", "192.0.2.255", "192.0.2.64/30", "2001:db8:1::/126", "198.51.100.15", "2001:db8:2::", "10.0.0.0/8"},
	})
	for a, want := range map[string]bool{
		"192.0.2.1": true, "192.0.2.254": true, "192.0.2.0": false, "192.0.2.255": false,
		"192.0.2.63": true, "192.0.2.64": false, "192.0.2.67": false, "192.0.2.68": true,
		"192.0.3.0": false, "192.0.1.255": false, "203.0.113.7": true, "203.0.113.8": false, "203.0.113.6": false,
		"198.51.100.9": false, "198.51.100.10": true, "198.51.100.14": true, "198.51.100.15": false, "198.51.100.16": true,
		"198.51.100.20": true, "198.51.100.21": true, "198.51.100.30": true, "198.51.100.31": false,
		"223.255.255.255": true, "223.255.255.249": false,
		"2001:db8:1::": false, "2001:db8:1::3": false, "2001:db8:1::4": true, "2001:db8:1:0:ffff:ffff:ffff:ffff": true,
		"2001:db8:1:1::": false, "2001:db8:2::fffe": false, "2001:db8:2::ffff": true, "2001:db8:2::1:0": true,
		"2001:db8:2::1:1": true, "2001:db8:2::1:2": false,
		"::ffff:192.0.2.1": true, "::ffff:192.0.2.0": false, // IPv4-mapped: as IPv4
		"2001:db8:1::4%eth0": true, // the zone does not count
		"10.0.0.1":           false,
		"c000:201::":         false, // 192.0.2.1's bytes, but IPv6
	} {
		if got := p.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %t, want %t (%s)", a, got, want, p)
		}
	}
	if p.Contains(netip.Addr{}) {
		t.Error("Contains(invalid address)")
	}
	want := "p[192.0.2.1-192.0.2.63,192.0.2.68-192.0.2.254,198.51.100.10-198.51.100.14,198.51.100.16-198.51.100.30,203.0.113.7," +
		"223.255.255.250-223.255.255.255,2001:db8:1::4-2001:db8:1:0:ffff:ffff:ffff:ffff,2001:db8:2::ffff-2001:db8:2::1:1]"
	if p.String() != want {
		t.Errorf("pool\n%s\nwant\n%s", p, want)
	}
}

func TestAvoidEverything(t *testing.T) {
	t.Parallel()
	p := newPool(t, "p", lvsv1.AddressPoolSpec{
		CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24", "2001:db8::/127"},
		Avoid: []lvsv1.AddressOrCIDR{"192.0.0.0/16", "2001:db8::", "2001:db8::1"},
	})
	if len(p.Ranges()) != 0 || p.Contains(netip.MustParseAddr("192.0.2.7")) {
		t.Fatalf("a pool whose addresses are all avoided holds %s", p)
	}
}

func TestEdgesOfTheAddressSpace(t *testing.T) {
	t.Parallel()
	// The last unicast addresses of each family: Next() has nowhere to go.
	p := newPool(t, "p", lvsv1.AddressPoolSpec{
		CIDRs:  []lvsv1.PoolCIDR{"fe00::/9", "223.255.255.0/24"},
		Ranges: []lvsv1.AddressRange{{First: "fec0::", Last: "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		Avoid:  []lvsv1.AddressOrCIDR{"223.255.255.255", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	})
	for a, want := range map[string]bool{
		"223.255.255.254": true, "223.255.255.255": false, "fe7f::1": true, "fe80::1": false, "fec0::": true,
		"feff:ffff:ffff:ffff:ffff:ffff:ffff:fffe": true, "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": false,
	} {
		if got := p.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %t, want %t (%s)", a, got, want, p)
		}
	}
}

func TestAdmits(t *testing.T) {
	t.Parallel()
	spec := func(sel *lvsv1.LabelSelector) lvsv1.AddressPoolSpec {
		return lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24"}, NamespaceSelector: sel}
	}
	team := map[string]string{"team": "web", "env": "prod"}
	for _, c := range []struct {
		name   string
		sel    *lvsv1.LabelSelector
		ns     string
		labels map[string]string
		want   bool
	}{
		{"no selector admits no namespace", nil, "shop", team, false},
		{"an empty selector admits every namespace", &lvsv1.LabelSelector{}, "shop", nil, true},
		{"matchLabels", &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "web"}}, "shop", team, true},
		{"matchLabels, other value", &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "db"}}, "shop", team, false},
		{"matchLabels, all must match", &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "web", "env": "dev"}}, "shop", team, false},
		{"by name", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"shop", "media"}}}}, "shop", nil, true},
		{"by name, another", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"media"}}}}, "shop", nil, false},
		{"the name label cannot be forged", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"media"}}}},
			"shop", map[string]string{"kubernetes.io/metadata.name": "media"}, false},
		{"NotIn", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpNotIn, Values: []lvsv1.LabelValue{"kube-system"}}}}, "shop", nil, true},
		{"NotIn, excluded", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpNotIn, Values: []lvsv1.LabelValue{"kube-system"}}}}, "kube-system", nil, false},
		{"Exists", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{{Key: "env", Operator: lvsv1.LabelSelectorOpExists}}}, "shop", team, true},
		{"Exists, missing", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{{Key: "env", Operator: lvsv1.LabelSelectorOpExists}}}, "shop", nil, false},
		{"DoesNotExist", &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{{Key: "frozen", Operator: lvsv1.LabelSelectorOpDoesNotExist}}}, "shop", team, true},
		{"labels and expressions together", &lvsv1.LabelSelector{
			MatchLabels:      map[string]lvsv1.LabelValue{"team": "web"},
			MatchExpressions: []lvsv1.LabelSelectorRequirement{{Key: "env", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"staging"}}},
		}, "shop", team, false},
	} {
		p := newPool(t, "p", spec(c.sel))
		if got := p.Admits(c.ns, c.labels); got != c.want {
			t.Errorf("%s: Admits(%s, %v) = %t, want %t", c.name, c.ns, c.labels, got, c.want)
		}
		if got := len(pools.Admitting([]*pools.Pool{p}, c.ns, c.labels)) == 1; got != c.want {
			t.Errorf("%s: Admitting = %t, want %t", c.name, got, c.want)
		}
	}
	if team["kubernetes.io/metadata.name"] != "" {
		t.Error("Admits changed the caller's labels")
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	web := newPool(t, "web", lvsv1.AddressPoolSpec{
		CIDRs:             []lvsv1.PoolCIDR{"192.0.2.0/24"},
		NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "web"}},
	})
	shared := newPool(t, "shared", lvsv1.AddressPoolSpec{
		CIDRs:             []lvsv1.PoolCIDR{"192.0.2.0/25", "2001:db8::/64"},
		AutoAssign:        ptr.To(false),
		NamespaceSelector: &lvsv1.LabelSelector{},
	})
	closed := newPool(t, "closed", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.0/24"}})
	all := []*pools.Pool{closed, shared, web}
	webNS := map[string]string{"team": "web"}
	for _, c := range []struct {
		ns     string
		labels map[string]string
		addr   string
		want   string
	}{
		{"shop", webNS, "192.0.2.200", "web"},
		{"shop", webNS, "192.0.2.1", "shared"}, // both admit: the first
		{"other", nil, "192.0.2.1", "shared"},
		{"other", nil, "192.0.2.200", ""},
		{"other", nil, "2001:db8::1", "shared"},
		{"shop", webNS, "198.51.100.1", ""}, // no selector: closed
		{"shop", webNS, "203.0.113.1", ""},
	} {
		got := ""
		if p := pools.Find(all, c.ns, c.labels, netip.MustParseAddr(c.addr)); p != nil {
			got = p.Name
		}
		if got != c.want {
			t.Errorf("Find(%s, %s) = %q, want %q", c.ns, c.addr, got, c.want)
		}
	}
	if got := pools.Admitting(all, "shop", webNS); len(got) != 2 || got[0] != shared || got[1] != web {
		t.Errorf("Admitting(shop) = %v", got)
	}
	if web.AutoAssign != true || shared.AutoAssign != false {
		t.Errorf("autoAssign: web %t (unset: true), shared %t", web.AutoAssign, shared.AutoAssign)
	}
}

// New refuses what validation refuses: an AddressPool the CRD would have
// refused (or the controller will) is no Pool, so it admits nothing.
func TestNewRefusesInvalidPools(t *testing.T) {
	t.Parallel()
	apiRefused, stored := corpus.AddressPools()
	for _, c := range append(apiRefused, stored...) {
		spec := corpus.ValidPoolSpec()
		c.Mutate(&spec)
		if p, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: spec}); err == nil {
			t.Errorf("%s: New accepted it: %s", c.Name, p)
		} else if !strings.Contains(err.Error(), "AddressPool bad") {
			t.Errorf("%s: the error does not name the pool: %v", c.Name, err)
		}
	}
}

// The example pool admits every example VirtualService's addresses for its
// namespace.
func TestExamplePoolAdmitsTheExamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var all []*pools.Pool
	var vss []lvsv1.VirtualService
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		switch meta.Kind {
		case "AddressPool":
			var ap lvsv1.AddressPool
			if err := yaml.UnmarshalStrict(b, &ap); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			all = append(all, newPool(t, ap.Name, ap.Spec))
		case "VirtualService":
			var vs lvsv1.VirtualService
			if err := yaml.UnmarshalStrict(b, &vs); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			vss = append(vss, vs)
		}
	}
	if len(all) == 0 || len(vss) == 0 {
		t.Fatalf("%d pools and %d VirtualServices in examples/", len(all), len(vss))
	}
	for _, vs := range vss {
		for _, a := range vs.Spec.Addresses {
			if pools.Find(all, vs.Namespace, nil, netip.MustParseAddr(string(a))) == nil {
				t.Errorf("no example pool lets %s/%s use %s", vs.Namespace, vs.Name, a)
			}
			if pools.Find(all, "elsewhere", nil, netip.MustParseAddr(string(a))) != nil {
				t.Errorf("an example pool lets any namespace use %s", a)
			}
		}
	}
}

func TestValidCorpusPools(t *testing.T) {
	t.Parallel()
	for name, mutate := range corpus.ValidPoolSpecs() {
		spec := corpus.ValidPoolSpec()
		mutate(&spec)
		if _, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "ok"}, Spec: spec}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func BenchmarkContains(b *testing.B) {
	spec := lvsv1.AddressPoolSpec{}
	for i := range 64 {
		spec.CIDRs = append(spec.CIDRs, lvsv1.PoolCIDR(fmt.Sprintf("10.%d.0.0/16", 2*i)))
		spec.Avoid = append(spec.Avoid, lvsv1.AddressOrCIDR(fmt.Sprintf("10.%d.0.%d", 2*i, i)))
	}
	for i := range 32 {
		spec.Ranges = append(spec.Ranges, lvsv1.AddressRange{First: lvsv1.IPAddress(fmt.Sprintf("2001:db8:%x::1", i+1)), Last: lvsv1.IPAddress(fmt.Sprintf("2001:db8:%x::ff", i+1))})
	}
	p := newPool(b, "bench", spec)
	addrs := []netip.Addr{netip.MustParseAddr("10.64.1.1"), netip.MustParseAddr("10.65.1.1"), netip.MustParseAddr("2001:db8:10::80"), netip.MustParseAddr("192.0.2.1")}
	for i := 0; b.Loop(); i++ {
		p.Contains(addrs[i%len(addrs)])
	}
}

func TestParseSortsAndLeavesOutRefusedPools(t *testing.T) {
	t.Parallel()
	all := &lvsv1.LabelSelector{}
	items := []lvsv1.AddressPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "zeta"}, Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24"}, NamespaceSelector: all}},
		{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.1/24"}, NamespaceSelector: all}},
		{ObjectMeta: metav1.ObjectMeta{Name: "alpha"}, Spec: lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/25"}, NamespaceSelector: all}},
	}
	ps, errs := pools.Parse(items)
	if len(ps) != 2 || ps[0].Name != "alpha" || ps[1].Name != "zeta" {
		t.Fatalf("pools %v, want alpha and zeta in that order", ps)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "AddressPool broken:") {
		t.Fatalf("errors %v, want one naming the pool broken", errs)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	ps := []*pools.Pool{
		newPool(t, "shared", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{},
			Avoid: []lvsv1.AddressOrCIDR{"192.0.2.1"}}),
		newPool(t, "team-a", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.0/24", "2001:db8::/64"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "a"}}}),
		// Overlapping pools: an address is admitted if any pool that holds
		// it admits the namespace.
		newPool(t, "overlap", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.128/25"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "b"}}}),
	}
	teamA, teamB := map[string]string{"team": "a"}, map[string]string{"team": "b"}
	for _, tc := range []struct {
		ns     string
		labels map[string]string
		addrs  []lvsv1.IPAddress
		want   []string
	}{
		{"a", teamA, []lvsv1.IPAddress{"192.0.2.10", "198.51.100.10", "2001:db8::10"}, nil},
		{"b", teamB, []lvsv1.IPAddress{"198.51.100.200"}, nil},
		{"b", teamB, []lvsv1.IPAddress{"198.51.100.10"}, []string{"address 198.51.100.10: AddressPool team-a holds it but does not admit namespace b"}},
		{"b", teamB, []lvsv1.IPAddress{"192.0.2.1"}, []string{"address 192.0.2.1: no AddressPool holds it"}},
		{"c", nil, []lvsv1.IPAddress{"203.0.113.1", "192.0.2.2", "198.51.100.130"}, []string{
			"address 203.0.113.1: no AddressPool holds it",
			"address 198.51.100.130: AddressPools team-a, overlap hold it but do not admit namespace c",
		}},
		{"a", teamA, []lvsv1.IPAddress{"nope"}, []string{`address "nope" does not parse`}},
	} {
		got := pools.Check(ps, tc.ns, tc.labels, tc.addrs)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Check(%s, %v) = %q, want %q", tc.ns, tc.addrs, got, tc.want)
		}
	}
	if got := pools.Check(nil, "a", teamA, []lvsv1.IPAddress{"192.0.2.10"}); len(got) != 1 {
		t.Errorf("without pools, %v is admitted: %q", "192.0.2.10", got)
	}
}

// An address is announced in every way some pool asks for that holds it
// and admits the namespace; a pool that does not admit it changes nothing.
func TestAnnounce(t *testing.T) {
	t.Parallel()
	ps := []*pools.Pool{
		newPool(t, "bgp", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{},
			Announce: &lvsv1.Announcement{BGP: &lvsv1.BGPAnnouncement{}}}),
		newPool(t, "l2-team-a", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"192.0.2.128/25", "2001:db8::/64"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "a"}},
			Announce:          &lvsv1.Announcement{Layer2: &lvsv1.Layer2Announcement{}}}),
		newPool(t, "quiet", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{}}),
		// Layer 2 from rack r1's nodes only.
		newPool(t, "l2-r1", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"203.0.113.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{},
			Announce: &lvsv1.Announcement{Layer2: &lvsv1.Layer2Announcement{
				NodeSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"rack": "r1"}}}}}),
	}
	for _, tc := range []struct {
		ns, addr    string
		labels      map[string]string
		bgp, layer2 bool
	}{
		{"a", "192.0.2.10", map[string]string{"team": "a"}, true, false},
		{"a", "192.0.2.200", map[string]string{"team": "a"}, true, true},
		{"b", "192.0.2.200", map[string]string{"team": "b"}, true, false},
		{"a", "2001:db8::1", map[string]string{"team": "a"}, false, true},
		{"b", "2001:db8::1", nil, false, false},
		{"a", "198.51.100.1", map[string]string{"team": "a"}, false, false},
		{"a", "203.0.114.1", map[string]string{"team": "a"}, false, false},
	} {
		bgp, l2 := pools.Announce(ps, tc.ns, tc.labels, netip.MustParseAddr(tc.addr))
		if bgp != tc.bgp || (l2 != nil) != tc.layer2 {
			t.Errorf("%s in namespace %s: bgp %t layer2 %t, want %t %t", tc.addr, tc.ns, bgp, l2 != nil, tc.bgp, tc.layer2)
		}
		if l2 != nil && !l2(map[string]string{"rack": "r9"}) {
			t.Errorf("%s: a pool without a node selector lets only some nodes answer", tc.addr)
		}
	}
	// announce.layer2.nodeSelector: only rack r1's nodes may answer.
	_, l2 := pools.Announce(ps, "a", nil, netip.MustParseAddr("203.0.113.1"))
	if l2 == nil || !l2(map[string]string{"rack": "r1"}) || l2(map[string]string{"rack": "r2"}) || l2(nil) {
		t.Errorf("203.0.113.1: layer 2 should be for rack r1's nodes only")
	}
}
