package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxReportedFailures bounds NodeReport status.failed, and
// MaxReportedAnnounced status.announced.
const (
	MaxReportedFailures  = 100
	MaxReportedAnnounced = 256
)

// NodeReportFailure is a VirtualService a node could not program as it
// asks, or keeps on hold.
type NodeReportFailure struct {
	// Namespace and Name of the VirtualService.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Generation the node tried.
	Generation int64 `json:"generation"`
	// Message says why, at most 512 characters.
	//
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message"`
}

// NodeReportStatus is what a node's agent has programmed.
type NodeReportStatus struct {
	// ResourceVersion is the agent's watermark: every change of a
	// VirtualService up to this resourceVersion has been synced on the
	// node, programmed or listed in Failed.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ResourceVersion string `json:"resourceVersion,omitempty"`

	// VirtualServices is how many VirtualServices the node programs.
	//
	// +optional
	VirtualServices int32 `json:"virtualServices"`

	// Failed are the VirtualServices the node could not program (at most
	// 100; FailedCount counts them all).
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Failed []NodeReportFailure `json:"failed,omitempty"`

	// FailedCount is how many VirtualServices the node could not program.
	//
	// +optional
	FailedCount int32 `json:"failedCount"`

	// Announced are addresses the node announces, and how (at most 256;
	// AnnouncedCount counts them all).
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Announced []AnnouncedAddress `json:"announced,omitempty"`

	// AnnouncedCount is how many addresses the node announces, each way
	// counted.
	//
	// +optional
	AnnouncedCount int32 `json:"announcedCount"`

	// UpdateTime is when the agent wrote this report.
	//
	// +optional
	UpdateTime metav1.Time `json:"updateTime,omitempty"`
}

// NodeReport is one node's report of what its agent programmed: one per
// node, named after it, written only by that node's agent and read by the
// controller, which folds all of them into each VirtualService's status.
// One object per node keeps the cost of status linear in the number of
// nodes: a change is reported by one write per node, and no agent watches
// the others' reports.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=lvsreport,categories=kubelvs
// +kubebuilder:printcolumn:name="VirtualServices",type=integer,JSONPath=`.status.virtualServices`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failedCount`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.updateTime`
type NodeReport struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Status is what the node's agent reports. There is no spec, and no
	// status subresource: the agent writes the whole object.
	//
	// +optional
	Status NodeReportStatus `json:"status,omitempty"`
}

// NodeReportList is a list of NodeReports.
//
// +kubebuilder:object:root=true
type NodeReportList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the NodeReports.
	Items []NodeReport `json:"items"`
}
