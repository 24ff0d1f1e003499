package validation_test

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/validation"
	"github.com/kubelvs/kubelvs/test/corpus"
)

func vs(spec lvsv1.VirtualServiceSpec) *lvsv1.VirtualService {
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "ns"}, Spec: spec}
}

func TestValidBaseIsValid(t *testing.T) {
	if errs := validation.VirtualService(vs(corpus.ValidSpec())); len(errs) > 0 {
		t.Fatal(errs)
	}
}

// Every case of the corpus, whether the API server or only the controller
// refuses it, is refused here naming its field: what the CRD refuses, the
// agents refuse too. And desired.Build turns none of them into kernel
// state.
func TestCorpusIsRefused(t *testing.T) {
	apiRefused, storedRefused := corpus.VirtualServices()
	if n := len(apiRefused) + len(storedRefused); n < 60 {
		t.Fatalf("the corpus has %d VirtualServices; keep at least 60", n)
	}
	for _, c := range append(apiRefused, storedRefused...) {
		t.Run(c.Name, func(t *testing.T) {
			spec := corpus.ValidSpec()
			c.Mutate(&spec)
			v := vs(spec)
			refusedNaming(t, validation.VirtualService(v), c.Field)
			g := desired.Build(desired.Input{VS: v, Node: desired.Node{Name: "n"}})
			if !g.Hold || len(g.Services) > 0 || len(g.VIPs) > 0 || len(g.Problems) == 0 {
				t.Fatalf("desired.Build programs a refused VirtualService:\n%s", g.Dump())
			}
		})
	}
}

// refusedNaming fails unless errs is not empty, one of them names field
// (or a field under it), and every message is short.
func refusedNaming(t *testing.T, errs field.ErrorList, name string) {
	t.Helper()
	if len(errs) == 0 {
		t.Fatal("accepted")
	}
	// The API server says spec.nodeSelector.zone where field paths say
	// spec.nodeSelector[zone].
	flat := strings.NewReplacer("[", ".", "]", "")
	named := false
	for _, e := range errs {
		if strings.HasPrefix(flat.Replace(e.Field), flat.Replace(name)) {
			named = true
		}
		if len(e.Error()) > 512 {
			t.Errorf("a message of %d bytes: %.100s...", len(e.Error()), e.Error())
		}
	}
	if !named {
		t.Fatalf("no error names %s: %v", name, errs)
	}
}

func TestAddress(t *testing.T) {
	for s, ok := range map[string]bool{
		"10.0.0.1": true, "2001:db8::1": true, "198.51.100.7": true,
		"240.0.0.1": false, "0.1.2.3": false, "::ffff:10.0.0.1": false, "2001:0db8::1": false,
		"127.0.0.1": false, "::1": false, "fe80::1%eth0": false, "": false, "10.0.0.256": false,
	} {
		if _, err := validation.Address(s); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%t", s, err, ok)
		}
	}
	if _, err := validation.Address("::ffff:10.0.0.1"); err == nil || !strings.Contains(err.Error(), "write the IPv4 address 10.0.0.1") {
		t.Errorf("mapped address: %v", err)
	}
}

func TestPathAndTargetPort(t *testing.T) {
	for p, ok := range map[string]bool{"/healthz": true, "/ready?verbose=1": true, "/a%20b": true, "/": true,
		"/%zz": false, "/%": false, "/a b": false, "healthz": false, "/x#y": false, "/\x7f": false} {
		if got := validation.Path(p) == ""; got != ok {
			t.Errorf("path %q: ok=%t, want %t", p, got, ok)
		}
	}
	for tp, ok := range map[intstr.IntOrString]bool{intstr.FromInt32(1): true, intstr.FromInt32(65535): true,
		intstr.FromInt32(0): false, intstr.FromInt32(70000): false, intstr.FromInt32(-5): false,
		intstr.FromString("http"): true, intstr.FromString("h2c-web"): true, intstr.FromString("8080"): false,
		intstr.FromString("a--b"): false, intstr.FromString("sixteen-letters!"): false, intstr.FromString(""): false} {
		if got := validation.TargetPort(tp) == ""; got != ok {
			t.Errorf("targetPort %v: ok=%t, want %t", tp.String(), got, ok)
		}
	}
}

// With addressFamilies, the VIPs are what the controller allocated
// (status.addresses): none yet is valid (nothing to program), an allocated
// address of a family not asked for is not a VIP, and a forged one that is
// no unicast address is refused naming status.addresses.
func TestAllocatedAddresses(t *testing.T) {
	auto := func(status ...lvsv1.IPAddress) *lvsv1.VirtualService {
		spec := corpus.ValidSpec()
		spec.Addresses, spec.AddressFamilies = nil, []lvsv1.AddressFamily{lvsv1.AddressFamilyIPv4}
		v := vs(spec)
		v.Status.Addresses = status
		return v
	}
	for _, tc := range []struct {
		name   string
		vs     *lvsv1.VirtualService
		vips   []lvsv1.IPAddress
		refuse string // the field named, or "" when valid
	}{
		{"not allocated yet", auto(), nil, ""},
		{"allocated", auto("10.96.0.20"), []lvsv1.IPAddress{"10.96.0.20"}, ""},
		{"an address of another family is ignored", auto("2001:db8::20", "10.96.0.20"), []lvsv1.IPAddress{"10.96.0.20"}, ""},
		{"only the first of a family counts", auto("10.96.0.20", "10.96.0.21"), []lvsv1.IPAddress{"10.96.0.20"}, ""},
		{"forged loopback", auto("127.0.0.1"), []lvsv1.IPAddress{"127.0.0.1"}, "status.addresses[0]"},
		{"forged garbage", auto("gateway"), []lvsv1.IPAddress{"gateway"}, "status.addresses[0]"},
		{"allocated the static backend", auto("192.0.2.10"), []lvsv1.IPAddress{"192.0.2.10"}, "spec.backends.static[0].address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.vs.EffectiveAddresses(); !slices.Equal(got, tc.vips) {
				t.Fatalf("EffectiveAddresses: %q, want %q", got, tc.vips)
			}
			errs := validation.VirtualService(tc.vs)
			if tc.refuse == "" {
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				return
			}
			refusedNaming(t, errs, tc.refuse)
		})
	}
	// status.addresses do not count when spec.addresses names them.
	manual := vs(corpus.ValidSpec())
	manual.Status.Addresses = []lvsv1.IPAddress{"10.96.0.99"}
	if got := manual.EffectiveAddresses(); !slices.Equal(got, manual.Spec.Addresses) {
		t.Fatalf("with spec.addresses: %q", got)
	}
}
