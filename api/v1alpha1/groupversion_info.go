// Package v1alpha1 holds the lvs.kubelvs.io/v1alpha1 API: the VirtualService
// kind that describes one IPVS virtual service (its addresses, ports,
// scheduler, forwarding method and backends) for every node that matches it.
//
// +kubebuilder:object:generate=true
// +groupName=lvs.kubelvs.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "lvs.kubelvs.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
