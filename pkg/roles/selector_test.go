package roles

import (
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestEndpointSliceSelectors(t *testing.T) {
	for _, tc := range []struct {
		in, slices string
		services   string // "" : nil
		match      map[string]bool
	}{
		{in: "", slices: "kubernetes.io/service-name", match: map[string]bool{
			"kubernetes.io/service-name=web": true, "": false, "lvs.kubelvs.io/backend=true": false,
		}},
		{in: "lvs.kubelvs.io/backend=true", slices: "kubernetes.io/service-name,lvs.kubelvs.io/backend=true", services: "lvs.kubelvs.io/backend=true",
			match: map[string]bool{
				"kubernetes.io/service-name=web,lvs.kubelvs.io/backend=true":  true,
				"kubernetes.io/service-name=web,lvs.kubelvs.io/backend=false": false,
				"kubernetes.io/service-name=web":                              false,
				"lvs.kubelvs.io/backend=true":                                 false,
			}},
		{in: "tier in (a,b), !legacy", slices: "kubernetes.io/service-name,!legacy,tier in (a,b)", services: "!legacy,tier in (a,b)",
			match: map[string]bool{
				"kubernetes.io/service-name=web,tier=a":          true,
				"kubernetes.io/service-name=web,tier=a,legacy=1": false,
				"kubernetes.io/service-name=web,tier=c":          false,
			}},
	} {
		slices, services, err := EndpointSliceSelectors(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := slices.String(); got != tc.slices {
			t.Errorf("%q: slices %q, want %q", tc.in, got, tc.slices)
		}
		switch {
		case tc.services == "" && services != nil:
			t.Errorf("%q: services %q, want nil", tc.in, services)
		case tc.services != "" && (services == nil || services.String() != tc.services):
			t.Errorf("%q: services %v, want %q", tc.in, services, tc.services)
		}
		for set, want := range tc.match {
			ls, err := labels.ConvertSelectorToLabelsMap(set)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Matches(ls); got != want {
				t.Errorf("%q matches {%s}: %v, want %v", tc.in, set, got, want)
			}
		}
	}
	for _, bad := range []string{"a=b=c", "tier in a", "-x", "Bad Key=1"} {
		if _, _, err := EndpointSliceSelectors(bad); err == nil || !strings.Contains(err.Error(), "--endpointslice-selector") {
			t.Errorf("%q: error %v, want one naming the flag", bad, err)
		}
	}
}

// The agent's cache lists and watches EndpointSlices with the selector,
// and nothing else with it.
func TestAgentCacheSelectsEndpointSlices(t *testing.T) {
	sel, _, err := EndpointSliceSelectors("lvs.kubelvs.io/backend=true")
	if err != nil {
		t.Fatal(err)
	}
	for _, layer2 := range []bool{false, true} {
		o := AgentOptions{PodNamespace: "kubelvs"}
		o.NodeName, o.Layer2 = "n1", layer2
		by := agentCache(o, sel)
		found := false
		for obj, b := range by {
			if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
				found = true
				if b.Label == nil || b.Label.String() != sel.String() || b.Transform == nil {
					t.Errorf("layer2=%v: EndpointSlices cached with label %v (transform %v), want %q", layer2, b.Label, b.Transform != nil, sel)
				}
			} else if b.Label != nil && b.Label.String() == sel.String() {
				t.Errorf("layer2=%v: %T cached with the EndpointSlice selector", layer2, obj)
			}
		}
		if !found {
			t.Errorf("layer2=%v: no EndpointSlice entry", layer2)
		}
	}
}
