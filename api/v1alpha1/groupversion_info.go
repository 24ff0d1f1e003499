// Package v1alpha1 holds the lvs.kubelvs.io/v1alpha1 API: the VirtualService
// kind that describes one IPVS virtual service (its addresses, ports,
// scheduler, forwarding method and backends) for every node that matches it,
// and the cluster-scoped AddressPool kind: addresses an administrator owns
// and the namespaces that may use them.
//
// +kubebuilder:object:generate=true
// +groupName=lvs.kubelvs.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "lvs.kubelvs.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a scheme. It is
	// apimachinery's, so that importing the API types pulls in no
	// controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &VirtualService{}, &VirtualServiceList{}, &AddressPool{}, &AddressPoolList{}, &BGPPeer{}, &BGPPeerList{}, &NodeReport{}, &NodeReportList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
