package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ASN is an autonomous system number, 2-byte or 4-byte (RFC 6793). 0 and
// 23456 (AS_TRANS) are reserved.
//
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=4294967295
// +kubebuilder:validation:XValidation:rule="self != 23456",message="23456 is AS_TRANS, reserved (RFC 6793)"
type ASN int64

// SecretKeySelector names one key of a Secret in the namespace kubelvs runs
// in (the agent reads it there, and nowhere else).
type SecretKeySelector struct {
	// Name of the Secret.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key in the Secret's data.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// BGPPeerSpec is one router the nodes keep a BGP session with.
//
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || duration(self.holdTime) == duration('0s') || (duration(self.holdTime) >= duration('3s') && duration(self.holdTime) <= duration('65535s'))",message="holdTime must be 0s (no keepalives) or from 3s to 65535s (RFC 4271)"
type BGPPeerSpec struct {
	// PeerAddress is the router's address. The nodes advertise over the
	// session the addresses of its family: IPv4 host routes to an IPv4
	// peer, IPv6 host routes to an IPv6 one.
	//
	// +required
	PeerAddress IPAddress `json:"peerAddress"`

	// PeerPort is the router's TCP port; 179 by default.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PeerPort *int32 `json:"peerPort,omitempty"`

	// PeerASN is the router's autonomous system number.
	//
	// +required
	PeerASN ASN `json:"peerASN"`

	// MyASN is the nodes' autonomous system number on this session; equal
	// to PeerASN for internal BGP.
	//
	// +required
	MyASN ASN `json:"myASN"`

	// HoldTime is the hold time the nodes propose, in whole seconds
	// (rounded down); the session uses the smaller of both sides', and
	// keepalives go every third of it. 90s by default. A shorter hold time
	// notices a dead node sooner, at the cost of more keepalives.
	//
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// NodeSelector chooses the nodes that keep a session with this peer,
	// by their labels; unset, every node does. A node announces only to
	// its own peers.
	//
	// +optional
	NodeSelector *LabelSelector `json:"nodeSelector,omitempty"`

	// PasswordSecretRef names the key of a Secret, in the namespace
	// kubelvs runs in, that holds the session's TCP MD5 password (RFC
	// 2385). While the Secret cannot be read, a node keeps no session with
	// this peer and says why in its log and metrics.
	//
	// +optional
	PasswordSecretRef *SecretKeySelector `json:"passwordSecretRef,omitempty"`
}

// BGPSessionStatus is one node's session with the peer.
type BGPSessionStatus struct {
	// Node name.
	Node string `json:"node"`
	// State is the BGP state of the session: Idle, Connect, Active,
	// OpenSent, OpenConfirm or Established; or Failed when the node cannot
	// configure it, with a message.
	State string `json:"state"`
	// Routes is how many host routes the node advertises to the peer.
	//
	// +optional
	Routes int32 `json:"routes"`
	// Message explains a failure.
	//
	// +optional
	Message string `json:"message,omitempty"`
	// LastTransitionTime is when the state last changed.
	//
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
}

// BGPPeerStatus is what the nodes report of their sessions.
type BGPPeerStatus struct {
	// Nodes holds each peering node's session, written by that node's
	// agent when the session's state changes.
	//
	// +optional
	// +listType=map
	// +listMapKey=node
	Nodes []BGPSessionStatus `json:"nodes,omitempty"`
}

// BGPPeer is a router the nodes announce VIPs to: every node the selector
// chooses keeps a BGP session with it and advertises, as host routes (/32,
// /128), the addresses it serves of the AddressPools that ask for BGP
// (spec.announce.bgp). It is cluster-scoped: only those allowed to write it
// (normally the cluster's administrators) decide where routes go.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=lvspeer,categories=kubelvs
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the administrator declares.
	Spec BGPPeerSpec `json:"spec"`
	// Status is what the nodes report.
	//
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the BGPPeers.
	Items []BGPPeer `json:"items"`
}
