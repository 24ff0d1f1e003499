package pools_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/pools"
)

var (
	v4   = []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}
	v6   = []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv6}
	dual = []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv6, lvsv1.AddressFamilyIPv4}
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func usedSet(ss ...string) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, a := range addrs(ss...) {
		m[a] = true
	}
	return m
}

func TestAllocate(t *testing.T) {
	t.Parallel()
	everyone := &lvsv1.LabelSelector{}
	shop := &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{"team": "shop"}}
	ps := []*pools.Pool{
		// Listed out of name order: Allocate goes by name.
		newPool(t, "b-shared", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.0/30"}, NamespaceSelector: everyone}),
		newPool(t, "a-shop", lvsv1.AddressPoolSpec{
			Ranges:            []lvsv1.AddressRange{{First: "192.0.2.10", Last: "192.0.2.12"}},
			Avoid:             []lvsv1.AddressOrCIDR{"192.0.2.10"},
			NamespaceSelector: shop,
		}),
		newPool(t, "c-v6", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"2001:db8::/126"}, NamespaceSelector: everyone}),
		newPool(t, "d-manual", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"203.0.113.0/24"}, AutoAssign: ptr.To(false), NamespaceSelector: everyone}),
		newPool(t, "e-closed", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"203.0.114.0/24"}}),
	}
	shopLabels := map[string]string{"team": "shop"}
	for _, tc := range []struct {
		name   string
		used   map[netip.Addr]bool
		req    pools.Request
		want   []netip.Addr
		wantIs error
	}{
		{"the first pool by name that admits, its lowest address not avoided", nil,
			pools.Request{Namespace: "shop", NamespaceLabels: shopLabels, Families: v4}, addrs("192.0.2.11"), nil},
		{"a used address is skipped", usedSet("192.0.2.11"),
			pools.Request{Namespace: "shop", NamespaceLabels: shopLabels, Families: v4}, addrs("192.0.2.12"), nil},
		{"a full pool passes to the next", usedSet("192.0.2.11", "192.0.2.12", "198.51.100.0"),
			pools.Request{Namespace: "shop", NamespaceLabels: shopLabels, Families: v4}, addrs("198.51.100.1"), nil},
		{"a namespace the first pool does not admit", nil,
			pools.Request{Namespace: "web", Families: v4}, addrs("198.51.100.0"), nil},
		{"dual-stack, in the order asked", nil,
			pools.Request{Namespace: "web", Families: dual}, addrs("2001:db8::", "198.51.100.0"), nil},
		{"a named pool without autoAssign", nil,
			pools.Request{Namespace: "web", Families: v4, Pool: "d-manual"}, addrs("203.0.113.0"), nil},
		{"a named pool is the only one", usedSet("203.0.113.0"),
			pools.Request{Namespace: "web", Families: v4, Pool: "d-manual"}, addrs("203.0.113.1"), nil},
		{"a named pool without the family", nil,
			pools.Request{Namespace: "web", Families: v6, Pool: "d-manual"}, nil, pools.ErrExhausted},
		{"a named pool that does not admit", nil,
			pools.Request{Namespace: "web", Families: v4, Pool: "a-shop"}, nil, pools.ErrNoPool},
		{"a named pool that does not exist", nil,
			pools.Request{Namespace: "web", Families: v4, Pool: "zzz"}, nil, pools.ErrNoPool},
		{"exhausted", usedSet("198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3"),
			pools.Request{Namespace: "web", Families: v4}, nil, pools.ErrExhausted},
		{"dual-stack with one family exhausted gets nothing", usedSet("2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"),
			pools.Request{Namespace: "web", Families: dual}, nil, pools.ErrExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pools.Allocate(ps, tc.used, tc.req)
			if tc.wantIs != nil {
				if !errors.Is(err, tc.wantIs) || got != nil {
					t.Fatalf("got %v, %v; want %v", got, err, tc.wantIs)
				}
				t.Logf("%v", err)
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}

	// No pool admits a namespace: only a closed pool and a manual one
	// would hold addresses, and neither may be used unasked.
	closed := []*pools.Pool{ps[3], ps[4]}
	if _, err := pools.Allocate(closed, nil, pools.Request{Namespace: "web", Families: v4}); !errors.Is(err, pools.ErrNoPool) {
		t.Fatalf("no pool admits: %v", err)
	}
}

func TestHolds(t *testing.T) {
	t.Parallel()
	ps := []*pools.Pool{
		newPool(t, "auto", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"198.51.100.0/24"}, NamespaceSelector: &lvsv1.LabelSelector{}}),
		newPool(t, "manual", lvsv1.AddressPoolSpec{CIDRs: []lvsv1.PoolCIDR{"203.0.113.0/24"}, AutoAssign: ptr.To(false), NamespaceSelector: &lvsv1.LabelSelector{}}),
	}
	req := pools.Request{Namespace: "web", Families: v4}
	for a, want := range map[string]bool{"198.51.100.7": true, "203.0.113.7": true, "192.0.2.1": false} {
		if got := pools.Holds(ps, req, netip.MustParseAddr(a)); got != want {
			t.Errorf("Holds(%s) = %t, want %t", a, got, want)
		}
	}
	req.Pool = "manual"
	if pools.Holds(ps, req, netip.MustParseAddr("198.51.100.7")) || !pools.Holds(ps, req, netip.MustParseAddr("203.0.113.7")) {
		t.Error("with a named pool, only that pool holds")
	}
}

// FuzzAllocate allocates from a fuzzed pool, one address at a time, until
// it is exhausted or 64 addresses are out, starting from a fuzzed used set.
// Every address must be of the family asked, in the pool (not avoided),
// not used, and the lowest such; exhaustion must be true exhaustion.
func FuzzAllocate(f *testing.F) {
	f.Add("192.0.2.0/28", "198.51.100.250", "198.51.100.255", "192.0.2.0/30", []byte{192, 0, 2, 5, 198, 51, 100, 251}, true, false)
	f.Add("2001:db8::/124", "2001:db8::1:0", "2001:db8::1:3", "2001:db8::8/125", []byte{0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4}, false, true)
	f.Add("10.0.0.0/30", "223.255.255.254", "223.255.255.255", "10.0.0.0/30", []byte{223, 255, 255, 254}, true, true)
	f.Fuzz(func(t *testing.T, cidr, first, last, avoid string, usedBytes []byte, want4, want6 bool) {
		spec := lvsv1.AddressPoolSpec{
			NamespaceSelector: &lvsv1.LabelSelector{},
			CIDRs:             []lvsv1.PoolCIDR{lvsv1.PoolCIDR(cidr)},
			Ranges:            []lvsv1.AddressRange{{First: lvsv1.IPAddress(first), Last: lvsv1.IPAddress(last)}},
			Avoid:             []lvsv1.AddressOrCIDR{lvsv1.AddressOrCIDR(avoid)},
		}
		p, err := pools.New(&lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "fuzz"}, Spec: spec})
		if err != nil {
			return
		}
		used := map[netip.Addr]bool{}
		for len(usedBytes) >= 4 {
			n := 4
			if len(usedBytes) >= 16 && usedBytes[0]&0xe0 == 0x20 {
				n = 16
			}
			a, _ := netip.AddrFromSlice(usedBytes[:n])
			used[a] = true
			usedBytes = usedBytes[n:]
		}
		var fams []lvsv1.AddressFamily
		if want4 {
			fams = append(fams, lvsv1.AddressFamilyIPv4)
		}
		if want6 {
			fams = append(fams, lvsv1.AddressFamilyIPv6)
		}
		// freeBelow reports whether the pool has a free address of a's
		// family below a, looking at most 4096 addresses back.
		freeBelow := func(a netip.Addr) bool {
			for b, i := a.Prev(), 0; b.IsValid() && lvsv1.FamilyOf(b) == lvsv1.FamilyOf(a) && i < 4096; b, i = b.Prev(), i+1 {
				if p.Contains(b) && !used[b] {
					return true
				}
			}
			return false
		}
		for range 64 {
			got, err := pools.Allocate([]*pools.Pool{p}, used, pools.Request{Namespace: "ns", Families: fams})
			if err != nil {
				if !errors.Is(err, pools.ErrExhausted) {
					t.Fatalf("not exhaustion: %v", err)
				}
				// Some family asked for has no free address: every
				// range of it is used up.
				exhausted := false
				for _, fam := range fams {
					free := false
					for _, r := range p.Ranges() {
						if lvsv1.FamilyOf(r.First) == fam {
							free = free || !used[r.Last] || freeBelow(r.Last)
						}
					}
					exhausted = exhausted || !free
				}
				if !exhausted {
					t.Fatalf("exhausted, but a free address is left: %s, used %v", p, used)
				}
				return
			}
			if len(got) != len(fams) {
				t.Fatalf("%d addresses for %d families", len(got), len(fams))
			}
			for i, a := range got {
				switch {
				case lvsv1.FamilyOf(a) != fams[i]:
					t.Fatalf("%s for %s", a, fams[i])
				case !p.Contains(a):
					t.Fatalf("%s is not in %s (or avoided)", a, p)
				case used[a]:
					t.Fatalf("%s is used", a)
				case freeBelow(a):
					t.Fatalf("%s is not the lowest free address of %s", a, p)
				}
			}
			for _, a := range got {
				used[a] = true
			}
		}
	})
}

func TestAssign(t *testing.T) {
	t.Parallel()
	ps := []*pools.Pool{
		newPool(t, "shop", lvsv1.AddressPoolSpec{
			CIDRs: []lvsv1.PoolCIDR{"192.0.2.0/30", "2001:db8::/126"}, NamespaceSelector: &lvsv1.LabelSelector{},
		}),
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	auto := func(name string, created time.Time, fams []lvsv1.AddressFamily, status ...lvsv1.IPAddress) *lvsv1.VirtualService {
		return &lvsv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, CreationTimestamp: metav1.NewTime(created)},
			Spec:       lvsv1.VirtualServiceSpec{AddressFamilies: fams},
			Status:     lvsv1.VirtualServiceStatus{Addresses: status},
		}
	}
	dual := []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4, lvsv1.AddressFamilyIPv6} // status.addresses follow this order
	old := auto("old", t0, v4, "192.0.2.1")
	for _, tc := range []struct {
		name    string
		vs      *lvsv1.VirtualService
		holders map[netip.Addr][]*lvsv1.VirtualService
		want    []netip.Addr
		dropped int
	}{
		{"new", auto("a", t0, dual), nil, addrs("192.0.2.0", "2001:db8::"), 0},
		{"kept", auto("a", t0, v4, "192.0.2.3"), nil, addrs("192.0.2.3"), 0},
		{"a family added, the other kept", auto("a", t0, dual, "192.0.2.3"), nil, addrs("192.0.2.3", "2001:db8::"), 0},
		{"a family removed is released", auto("a", t0, v6, "192.0.2.3", "2001:db8::2"), nil, addrs("2001:db8::2"), 0},
		{"the younger of a duplicate moves", auto("young", t0.Add(time.Second), v4, "192.0.2.1"),
			map[netip.Addr][]*lvsv1.VirtualService{addrs("192.0.2.1")[0]: {old}}, addrs("192.0.2.0"), 1},
		{"the older of a duplicate stays", old,
			map[netip.Addr][]*lvsv1.VirtualService{addrs("192.0.2.1")[0]: {auto("young", t0.Add(time.Second), v4, "192.0.2.1")}}, addrs("192.0.2.1"), 0},
		{"an address no pool holds moves", auto("a", t0, v4, "198.51.100.1"), nil, addrs("192.0.2.0"), 1},
		{"a forged address moves", auto("a", t0, v4, "127.0.0.1"), nil, addrs("192.0.2.0"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := pools.Assign(ps, tc.vs, nil, tc.holders)
			if as.Err != nil || !slices.Equal(as.Addresses, tc.want) || len(as.Dropped) != tc.dropped {
				t.Fatalf("got %v, dropped %q, %v; want %v and %d dropped", as.Addresses, as.Dropped, as.Err, tc.want, tc.dropped)
			}
		})
	}

	// Its own static backend is never its VIP; a full pool keeps what it
	// has and says why the rest is missing.
	vs := auto("a", t0, dual, "2001:db8::3")
	vs.Spec.Backends.Static = []lvsv1.StaticBackend{{Address: "192.0.2.0"}}
	as := pools.Assign(ps, vs, nil, map[netip.Addr][]*lvsv1.VirtualService{addrs("192.0.2.1")[0]: {old}})
	if as.Err != nil || !slices.Equal(as.Addresses, addrs("192.0.2.2", "2001:db8::3")) {
		t.Fatalf("static backend: %v, %v", as.Addresses, as.Err)
	}
	full := map[netip.Addr][]*lvsv1.VirtualService{}
	for _, a := range addrs("192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3") {
		full[a] = []*lvsv1.VirtualService{old}
	}
	as = pools.Assign(ps, auto("a", t0, dual, "2001:db8::3"), nil, full)
	if !errors.Is(as.Err, pools.ErrExhausted) || !slices.Equal(as.Addresses, addrs("2001:db8::3")) || len(as.Allocated) != 0 {
		t.Fatalf("full: %v, %v", as.Addresses, as.Err)
	}
}
