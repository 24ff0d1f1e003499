package roles

import (
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// EndpointSliceSelectors parses the --endpointslice-selector of both roles
// (a label selector; "" selects every Service) and returns:
//
//   - slices, the selector of the EndpointSlices the roles list and watch:
//     those that have the kubernetes.io/service-name label (a
//     VirtualService's spec.backends.serviceRef reaches its slices only
//     through it, so no other is ever used), and match services;
//   - services, the user's selector alone, nil when it is empty: the
//     labels a Service must have for its slices to be watched (the
//     EndpointSlice controller copies a Service's labels onto its slices).
func EndpointSliceSelectors(s string) (slices, services labels.Selector, err error) {
	user, err := labels.Parse(s)
	if err != nil {
		return nil, nil, fmt.Errorf("--endpointslice-selector %q: %w", s, err)
	}
	named, err := labels.NewRequirement(discoveryv1.LabelServiceName, selection.Exists, nil)
	if err != nil {
		return nil, nil, err
	}
	reqs, _ := user.Requirements()
	slices = labels.NewSelector().Add(*named).Add(reqs...)
	if !user.Empty() {
		services = user
	}
	return slices, services, nil
}
