package validation_test

import (
	"net/netip"
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func addressPool(spec lvsv1.AddressPoolSpec) *lvsv1.AddressPool {
	return &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "pool"}, Spec: spec}
}

// The valid pools of the corpus, which the API server accepts
// (test/envtest), are valid here too.
func TestValidAddressPools(t *testing.T) {
	valid := corpus.ValidPoolSpecs()
	names := make([]string, 0, len(valid))
	for n := range valid {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		spec := corpus.ValidPoolSpec()
		valid[n](&spec)
		if errs := validation.AddressPool(addressPool(spec)); len(errs) > 0 {
			t.Errorf("%s: %v", n, errs)
		}
	}
}

// Every AddressPool of the corpus, whether the API server refuses it or
// stores it, is refused here naming its field: nothing the CRD refuses
// passes the function the controller and the agents will use.
func TestAddressPoolCorpusIsRefused(t *testing.T) {
	apiRefused, storedRefused := corpus.AddressPools()
	if n := len(apiRefused) + len(storedRefused); n < 20 {
		t.Fatalf("the corpus has %d AddressPools; keep at least 20", n)
	}
	for _, c := range append(apiRefused, storedRefused...) {
		t.Run(c.Name, func(t *testing.T) {
			spec := corpus.ValidPoolSpec()
			c.Mutate(&spec)
			refusedNaming(t, validation.AddressPool(addressPool(spec)), c.Field)
		})
	}
}

func TestPoolCIDR(t *testing.T) {
	for s, ok := range map[string]bool{
		"192.0.2.0/24": true, "10.0.0.0/8": true, "203.0.113.7/32": true, "2001:db8::/32": true, "2001:db8::1/128": true,
		"1.0.0.0/8": true, "126.0.0.0/8": true, "128.0.0.0/3": true, "128.0.0.0/2": false, "223.255.255.0/24": true, "fc00::/7": true, "fe00::/9": true, "::2/127": true,
		"192.0.2.1/24": false, "192.0.2.0": false, "192.0.2.0/33": false, "2001:DB8::/32": false, "2001:0db8::/32": false,
		"::ffff:192.0.2.0/120": false, "0.0.0.0/0": false, "0.0.0.0/8": false, "127.1.0.0/16": false, "169.254.0.0/24": false,
		"168.0.0.0/6": false, "224.0.0.0/3": false, "255.255.255.255/32": false, "::/0": false, "::/127": false, "::1/128": false,
		"fe80::/10": false, "fe80::/16": false, "fe00::/7": false, "ff00::/8": false, "2001:db8::%eth0/64": false, "": false,
		"10.0.0.0/08": false,
	} {
		if _, err := validation.PoolCIDR(s); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%t", s, err, ok)
		}
	}
}

func TestAddressOrCIDR(t *testing.T) {
	for s, ok := range map[string]bool{
		"192.0.2.1": true, "192.0.2.0/28": true, "2001:db8::1": true, "2001:db8::/126": true, "ff02::1": true, "0.0.0.0/0": true,
		"192.0.2.1/28": false, "2001:db8:0::1": false, "::ffff:192.0.2.1": false, "::ffff:192.0.2.0/120": false,
		"fe80::1%eth0": false, "gateway": false, "": false,
	} {
		if _, err := validation.AddressOrCIDR(s); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%t", s, err, ok)
		}
	}
	if p, err := validation.AddressOrCIDR("2001:db8::1"); err != nil || p != netip.MustParsePrefix("2001:db8::1/128") {
		t.Errorf("an address is its /128: %v %v", p, err)
	}
}

func TestPoolRange(t *testing.T) {
	for _, c := range []struct {
		first, last string
		ok          bool
	}{
		{"10.0.0.9", "10.0.0.10", true},
		{"10.0.0.10", "10.0.0.9", false},
		{"198.51.100.7", "198.51.100.7", true},
		{"1.0.0.0", "126.255.255.255", true},
		{"126.255.255.255", "128.0.0.0", false}, // 127.0.0.0/8 between
		{"169.253.255.255", "169.255.0.0", false},
		{"169.253.255.255", "169.253.255.255", true},
		{"2001:db8::9", "2001:db8::10", true},
		{"2001:db8::10", "2001:db8::9", false},
		{"2001:db8::ffff", "2001:db8::1:0", true},
		{"2001:db8:0:1::", "2001:db8::ffff", false},
		{"fe00::", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"fe7f::1", "fec0::", false},
		{"::2", "::fffe:ffff:ffff", true},
		{"::2", "::1:0:0:0", false}, // ::ffff:0:0/96 between
		{"10.0.0.1", "2001:db8::1", false},
		{"10.0.0.1", "127.0.0.1", false},
	} {
		if _, _, err := validation.PoolRange(c.first, c.last); (err == nil) != c.ok {
			t.Errorf("%s-%s: %v, want ok=%t", c.first, c.last, err, c.ok)
		}
	}
}
