package vsstatus

import (
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// ServiceKeyIndex is the cache field index of VirtualServices by the
// address:port/protocol keys they claim; the controller and the agents use
// it to find rivals.
const ServiceKeyIndex = "lvs.kubelvs.io/service-key"

// IndexServiceKeys returns the ServiceKeyIndex values of a VirtualService.
func IndexServiceKeys(obj client.Object) []string {
	vs, ok := obj.(*lvsv1.VirtualService)
	if !ok {
		return nil
	}
	keys := vs.ServiceKeys()
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.String()
	}
	return out
}
