package corpus

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// PoolParitySpecs are thousands of AddressPools that differ from
// ValidPoolSpec in one field: ranges of every pair of a set of addresses
// (edges of the non-unicast networks, and random addresses whose zero
// groups put "::" anywhere); one CIDR or one avoided entry each of a list
// of good and bad ones; a label key or value of the namespace selector.
func PoolParitySpecs() []lvsv1.AddressPoolSpec {
	rnd := rand.New(rand.NewPCG(13, 1))
	addrs := []string{
		"0.0.0.1", "1.0.0.0", "10.0.0.9", "10.0.0.10", "10.0.0.255", "10.0.1.0", "126.255.255.255", "127.0.0.1", "128.0.0.0",
		"169.253.255.255", "169.254.0.1", "169.255.0.0", "223.255.255.255", "224.0.0.1", "255.255.255.255",
		"::1", "::2", "::fffe:ffff:ffff", "::1:0:0:0", "2001:db8::9", "2001:db8::10", "2001:db8::ffff", "2001:db8::1:0",
		"2001:db8:0:1::", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", "fec0::", "feff::", "ff02::1",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "::ffff:10.0.0.1", "10.0.0.010", "2001:db8::0:1",
	}
	for range 8 {
		var b [16]byte
		for g := range 8 {
			if rnd.IntN(2) == 0 {
				b[2*g], b[2*g+1] = byte(rnd.IntN(256)), byte(rnd.IntN(256))
				if rnd.IntN(3) == 0 {
					b[2*g] = 0 // a short group
				}
			}
		}
		b[0] = 0x20 | b[0]&0x0f // in 2000::/3, often with the same first group
		addrs = append(addrs, netip.AddrFrom16(b).String())
	}
	for range 4 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))}).String())
	}
	cidrs := []string{
		"192.0.2.0/24", "192.0.2.1/24", "10.0.0.0/8", "0.0.0.0/0", "1.0.0.0/8", "0.0.0.0/8", "126.0.0.0/7", "127.1.0.0/16",
		"128.0.0.0/3", "128.0.0.0/2", "169.254.1.0/24", "224.0.0.0/3", "223.0.0.0/8", "240.0.0.0/4", "255.255.255.255/32",
		"2001:db8::/32", "2001:DB8::/32", "2001:0db8::/32", "2001:db8::1/64", "::/0", "::2/127", "::/127", "::ffff:0:0/96",
		"::ffff:10.0.0.0/104", "fe00::/9", "fe00::/7", "fe80::/10", "feb0::/12", "fec0::/10", "ff00::/8", "fc00::/7",
		"10.0.0.0/08", "10.0.0.0", "10.0.0.0/33", "2001:db8::%eth0/64", "",
	}
	avoid := append([]string{"192.0.2.1", "192.0.2.0/28", "192.0.2.1/28", "2001:db8::1", "2001:db8:0::1", "2001:db8::/126",
		"ff02::1", "0.0.0.0/0", "::ffff:192.0.2.1", "::ffff:192.0.2.0/120", "fe80::1%eth0", "gateway", "10.0.0.010"}, cidrs...)

	var specs []lvsv1.AddressPoolSpec
	for _, f := range addrs {
		for _, l := range addrs {
			s := ValidPoolSpec()
			s.Ranges = []lvsv1.AddressRange{{First: lvsv1.IPAddress(f), Last: lvsv1.IPAddress(l)}}
			specs = append(specs, s)
		}
	}
	for _, c := range cidrs {
		s := ValidPoolSpec()
		s.CIDRs = []lvsv1.PoolCIDR{lvsv1.PoolCIDR(c)}
		specs = append(specs, s)
	}
	for _, a := range avoid {
		s := ValidPoolSpec()
		s.Avoid = []lvsv1.AddressOrCIDR{lvsv1.AddressOrCIDR(a)}
		specs = append(specs, s)
	}
	// Label keys of matchExpressions and label values (matchLabels keys are
	// the one thing only validation checks).
	labelStrings := []string{
		"team", "a", "A_b.c-9", "example.com/team", "kubernetes.io/metadata.name", "", "-team", "team-", "te am", "a/b/c",
		"/team", "example.com/", "Example.com/team", "exa_mple.com/team", "example..com/team", ".example.com/team",
		strings.Repeat("n", 63), strings.Repeat("n", 64), "p/" + strings.Repeat("n", 63), strings.Repeat("p", 253) + "/n",
		strings.Repeat("p", 254) + "/n", strings.Repeat("p.", 126) + "p/n", "a\nb", "é",
	}
	for _, l := range labelStrings {
		s := ValidPoolSpec()
		s.NamespaceSelector.MatchExpressions[0].Key = lvsv1.LabelKey(l)
		specs = append(specs, s)
		s = ValidPoolSpec()
		s.NamespaceSelector.MatchExpressions[0].Values = []lvsv1.LabelValue{lvsv1.LabelValue(l)}
		specs = append(specs, s)
		s = ValidPoolSpec()
		s.NamespaceSelector.MatchLabels = map[string]lvsv1.LabelValue{"team": lvsv1.LabelValue(l)}
		specs = append(specs, s)
	}
	return specs
}

// CheckPoolParity sends every PoolParitySpecs pool to create (a dry-run
// create on an API server: nil if it accepts, an Invalid error if it
// refuses, anything else fails the test) and to validation.AddressPool,
// and fails t where they disagree: the CRD's rules and validation's must
// be the same (the one rule only validation checks, the syntax of
// matchLabels keys, is not swept).
func CheckPoolParity(t *testing.T, create func(*lvsv1.AddressPool) error, isInvalid func(error) bool) {
	t.Helper()
	specs := PoolParitySpecs()
	var (
		mu                sync.Mutex
		accepted, refused int // by both
		disagreements     []string
		wg                sync.WaitGroup
		work              = make(chan lvsv1.AddressPoolSpec)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for spec := range work {
				p := &lvsv1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: "parity"}, Spec: spec}
				err := create(p.DeepCopy())
				if err != nil && !isInvalid(err) {
					t.Errorf("create: %v", err)
					continue
				}
				errs := validation.AddressPool(p)
				mu.Lock()
				switch {
				case (err == nil) != (len(errs) == 0):
					disagreements = append(disagreements, fmt.Sprintf("cidrs %q ranges %v avoid %q:\n  API server: %v\n  validation: %v",
						spec.CIDRs, spec.Ranges, spec.Avoid, err, errs))
				case err == nil:
					accepted++
				default:
					refused++
				}
				mu.Unlock()
			}
		}()
	}
	for _, s := range specs {
		work <- s
	}
	close(work)
	wg.Wait()
	t.Logf("%d AddressPools: %d accepted and %d refused by both", len(specs), accepted, refused)
	for i, d := range disagreements {
		if i == 20 {
			t.Errorf("... and %d more", len(disagreements)-i)
			break
		}
		t.Error(d)
	}
}
