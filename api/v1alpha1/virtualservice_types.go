package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// IPAddress is a unicast IPv4 or IPv6 address in canonical form
// (e.g. 10.96.0.10 or 2001:db8::10). Canonical form keeps one spelling per
// address, so two objects cannot claim the same address under two names.
//
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self) || self.matches('(?i)^::ffff:[0-9a-f.:]+$')",message="must be a valid IP address"
// +kubebuilder:validation:XValidation:rule="!self.matches('(?i)^::ffff:[0-9a-f.:]+$')",message="must not be an IPv4-mapped IPv6 address: write the IPv4 address (e.g. 192.0.2.1) instead"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip.isCanonical(self)",message="must be an IP address in canonical form (e.g. 2001:db8::1, 10.0.0.1)"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",message="must be a unicast address (not unspecified, loopback, link-local, multicast or broadcast)"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).family() != 4 || !(cidr('0.0.0.0/8').containsIP(ip(self)) || cidr('240.0.0.0/4').containsIP(ip(self)))",message="must be a unicast address: 0.0.0.0/8 and 240.0.0.0/4 are reserved"
type IPAddress string

// CIDR is an IPv4 or IPv6 network in CIDR notation, e.g. 10.0.0.0/8.
//
// +kubebuilder:validation:MaxLength=49
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a valid CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32"
type CIDR string

// LabelValue is a Kubernetes label value: empty, or at most 63 letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit.
//
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
type LabelValue string

// Protocol is a transport protocol IPVS balances.
//
// +kubebuilder:validation:Enum=TCP;UDP;SCTP
type Protocol string

// Transport protocols.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Scheduler is an IPVS scheduling algorithm.
//
// +kubebuilder:validation:Enum=rr;wrr;lc;wlc;lblc;lblcr;dh;sh;sed;nq;mh
type Scheduler string

// IPVS schedulers.
const (
	SchedulerRoundRobin                  Scheduler = "rr"
	SchedulerWeightedRoundRobin          Scheduler = "wrr"
	SchedulerLeastConnection             Scheduler = "lc"
	SchedulerWeightedLeastConnection     Scheduler = "wlc"
	SchedulerLocalityLeastConnection     Scheduler = "lblc"
	SchedulerLocalityLeastConnectionRepl Scheduler = "lblcr"
	SchedulerDestinationHashing          Scheduler = "dh"
	SchedulerSourceHashing               Scheduler = "sh"
	SchedulerShortestExpectedDelay       Scheduler = "sed"
	SchedulerNeverQueue                  Scheduler = "nq"
	SchedulerMaglevHashing               Scheduler = "mh"
)

// SchedulerFlag tunes the sh and mh schedulers.
//
// +kubebuilder:validation:Enum=sh-fallback;sh-port;mh-fallback;mh-port
type SchedulerFlag string

// Scheduler flags.
const (
	SchedulerFlagSHFallback SchedulerFlag = "sh-fallback"
	SchedulerFlagSHPort     SchedulerFlag = "sh-port"
	SchedulerFlagMHFallback SchedulerFlag = "mh-fallback"
	SchedulerFlagMHPort     SchedulerFlag = "mh-port"
)

// ForwardingMethod is how IPVS delivers packets to a real server.
//
// +kubebuilder:validation:Enum=Masquerade;DirectRoute;Tunnel
type ForwardingMethod string

// Forwarding methods.
const (
	// ForwardingMasquerade is NAT: the destination is rewritten to the real
	// server, replies return through this node.
	ForwardingMasquerade ForwardingMethod = "Masquerade"
	// ForwardingDirectRoute rewrites only the MAC address: real servers must
	// be on the same L2 segment and hold the VIP on a non-ARPing interface.
	ForwardingDirectRoute ForwardingMethod = "DirectRoute"
	// ForwardingTunnel encapsulates packets in IPIP to the real server.
	ForwardingTunnel ForwardingMethod = "Tunnel"
)

// TrafficPolicy chooses which endpoints a node sends traffic to.
//
// +kubebuilder:validation:Enum=Cluster;Local
type TrafficPolicy string

// Traffic policies.
const (
	// TrafficPolicyCluster uses every ready endpoint in the cluster.
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	// TrafficPolicyLocal uses only endpoints on the node itself.
	TrafficPolicyLocal TrafficPolicy = "Local"
)

// AddressFamily is an IP family a VirtualService asks an address of.
//
// +kubebuilder:validation:Enum=IPv4;IPv6
type AddressFamily string

// IP families.
const (
	AddressFamilyIPv4 AddressFamily = "IPv4"
	AddressFamilyIPv6 AddressFamily = "IPv6"
)

// HealthCheckProtocol is how a node probes a real server.
//
// +kubebuilder:validation:Enum=TCP;HTTP
type HealthCheckProtocol string

// Health check protocols.
const (
	HealthCheckTCP  HealthCheckProtocol = "TCP"
	HealthCheckHTTP HealthCheckProtocol = "HTTP"
)

// VirtualServiceSpec is what a VirtualService asks every matching node to
// program into its kernel.
//
// +kubebuilder:validation:XValidation:rule="!has(self.schedulerFlags) || self.schedulerFlags.all(f, !f.startsWith('sh-') || self.scheduler == 'sh')",message="sh-fallback and sh-port require scheduler sh",fieldPath=".schedulerFlags"
// +kubebuilder:validation:XValidation:rule="!has(self.schedulerFlags) || self.schedulerFlags.all(f, !f.startsWith('mh-') || self.scheduler == 'mh')",message="mh-fallback and mh-port require scheduler mh",fieldPath=".schedulerFlags"
// +kubebuilder:validation:XValidation:rule="self.forwarding == 'Masquerade' || self.ports.all(p, !has(p.targetPort) || (type(p.targetPort) == int && p.targetPort == p.port))",message="targetPort must be unset or equal to port when forwarding is DirectRoute or Tunnel: IPVS cannot rewrite the destination port there",fieldPath=".ports"
// +kubebuilder:validation:XValidation:rule="self.forwarding == 'Masquerade' || !has(self.backends.static) || self.backends.static.all(b, !has(b.port) || self.ports.all(p, p.port == b.port))",message="static backend port must be unset or equal to every port when forwarding is DirectRoute or Tunnel",fieldPath=".backends.static"
// +kubebuilder:validation:XValidation:rule="has(self.addresses) != has(self.addressFamilies)",message="exactly one of addresses and addressFamilies must be set",fieldPath=".addresses"
// +kubebuilder:validation:XValidation:rule="!has(self.addressPool) || has(self.addressFamilies)",message="addressPool applies only with addressFamilies",fieldPath=".addressPool"
// +kubebuilder:validation:XValidation:rule="!has(self.backends.static) || self.backends.static.all(b, !isIP(b.address) || (has(self.addresses) ? self.addresses.exists(a, isIP(a) && ip(a).family() == ip(b.address).family()) : (has(self.addressFamilies) && self.addressFamilies.exists(f, f == (ip(b.address).family() == 4 ? 'IPv4' : 'IPv6')))))",message="every static backend address must be of an IP family that spec.addresses or spec.addressFamilies has",fieldPath=".backends.static"
// +kubebuilder:validation:XValidation:rule="!has(self.backends.static) || self.backends.static.all(b, has(b.port)) || self.ports.all(p, !has(p.targetPort) || type(p.targetPort) == int)",message="static backends without a port need numeric targetPorts: a named targetPort resolves only through EndpointSlices",fieldPath=".backends.static"
type VirtualServiceSpec struct {
	// Addresses are the virtual IPs, at most one per IP family: one address
	// for single-stack, an IPv4 and an IPv6 address for dual-stack. Every
	// matching node binds them to its kubelvs0 interface. Exactly one of
	// addresses and addressFamilies is set.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="size(self) < 2 || !isIP(self[0]) || !isIP(self[1]) || ip(self[0]).family() != ip(self[1]).family()",message="at most one address per IP family"
	Addresses []IPAddress `json:"addresses,omitempty"`

	// AddressFamilies asks the controller for one address of each family
	// listed, from an AddressPool that admits this namespace, instead of
	// naming addresses: [IPv4], [IPv6] or [IPv4, IPv6]. The controller
	// records what it allocated in status.addresses and keeps it while this
	// VirtualService exists. Exactly one of addresses and addressFamilies is
	// set.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	AddressFamilies []AddressFamily `json:"addressFamilies,omitempty"`

	// AddressPool names the AddressPool to allocate from, with
	// addressFamilies. The pool must admit this namespace; it may be one
	// with autoAssign false. Unset: the first pool by name that has
	// autoAssign, admits the namespace and has a free address of the family.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	AddressPool string `json:"addressPool,omitempty"`

	// Ports are the virtual ports, unique per protocol. Each becomes one IPVS
	// virtual service per address.
	//
	// +required
	// +listType=map
	// +listMapKey=port
	// +listMapKey=protocol
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:XValidation:rule="size(self) < 2 || self.all(p, has(p.name))",message="every port needs a name when there is more than one"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.name) || self.filter(q, has(q.name) && q.name == p.name).size() == 1)",message="port names must be unique"
	Ports []VirtualServicePort `json:"ports"`

	// Scheduler is the IPVS scheduling algorithm: rr (round robin), wrr
	// (weighted round robin), lc (least connection), wlc (weighted least
	// connection), lblc and lblcr (locality based), dh and sh (destination and
	// source hashing), sed (shortest expected delay), nq (never queue) or mh
	// (maglev hashing).
	//
	// +optional
	// +kubebuilder:default=rr
	Scheduler Scheduler `json:"scheduler,omitempty"`

	// SchedulerFlags tune the hashing schedulers: sh-fallback and sh-port
	// with sh, mh-fallback and mh-port with mh. "-fallback" skips real
	// servers that are unavailable (weight 0 or overloaded); "-port" hashes
	// the source port too.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	SchedulerFlags []SchedulerFlag `json:"schedulerFlags,omitempty"`

	// Forwarding is how packets reach the real servers: Masquerade (NAT, the
	// default), DirectRoute (same L2 segment, real servers hold the VIP) or
	// Tunnel (IPIP). DirectRoute and Tunnel cannot change the destination
	// port.
	//
	// +optional
	// +kubebuilder:default=Masquerade
	Forwarding ForwardingMethod `json:"forwarding,omitempty"`

	// Persistence, when set, sends every connection of a client to the same
	// real server for as long as the client keeps coming back within the
	// timeout (IPVS persistent service).
	//
	// +optional
	Persistence *Persistence `json:"persistence,omitempty"`

	// Backends are where traffic goes: the endpoints of a Service in this
	// namespace, fixed addresses, or both.
	//
	// +required
	Backends Backends `json:"backends"`

	// HealthCheck, when set, makes every node probe each real server; a
	// failing one gets weight 0 until it recovers. Without it, EndpointSlice
	// readiness decides.
	//
	// +optional
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`

	// Drain controls how a real server leaves: it first gets weight 0 and is
	// deleted when its connections end or the timeout passes.
	//
	// +optional
	// +kubebuilder:default={timeoutSeconds: 60}
	Drain *Drain `json:"drain,omitempty"`

	// SourceRanges, when set, is the allow-list of client networks; packets
	// to the virtual ports from anywhere else are dropped. Empty allows
	// everyone.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	SourceRanges []CIDR `json:"sourceRanges,omitempty"`

	// TrafficPolicy is Cluster (every ready endpoint) or Local (only
	// endpoints on the node that receives the traffic).
	//
	// +optional
	// +kubebuilder:default=Cluster
	TrafficPolicy TrafficPolicy `json:"trafficPolicy,omitempty"`

	// NodeSelector restricts which nodes program this VirtualService; a node
	// must have every label listed. Empty means every node. At most 64
	// labels, keys of at most 317 characters (a 253-character prefix, "/"
	// and a 63-character name) and values of at most 63, as label keys and
	// values are: every agent caches every VirtualService. The syntax of a
	// key is too costly for the CRD's rules; the controller and the agents
	// check it (Accepted=False, reason Invalid).
	//
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317)",message="nodeSelector keys are at most 317 characters, as label keys are"
	NodeSelector map[string]LabelValue `json:"nodeSelector,omitempty"`
}

// VirtualServicePort is one virtual port.
//
// +kubebuilder:validation:XValidation:rule="!has(self.targetPort) || type(self.targetPort) != int || (self.targetPort >= 1 && self.targetPort <= 65535)",message="targetPort must be a port number 1-65535 or a port name",fieldPath=".targetPort"
// +kubebuilder:validation:XValidation:rule="!has(self.targetPort) || type(self.targetPort) != string || (size(self.targetPort) >= 1 && size(self.targetPort) <= 15)",message="a named targetPort is 1-15 characters, as Kubernetes port names are",fieldPath=".targetPort"
type VirtualServicePort struct {
	// Name is a DNS label naming this port; required when there is more than
	// one.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// Port is the virtual port clients connect to.
	//
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// Protocol is TCP, UDP or SCTP.
	//
	// +optional
	// +kubebuilder:default=TCP
	Protocol Protocol `json:"protocol,omitempty"`

	// TargetPort is the port on the backends: a number, or the name of a
	// port of the referenced Service's EndpointSlices. Defaults to Port.
	//
	// The CRD bounds numbers to 1-65535 and names to 15 characters; the
	// syntax of a name (lowercase letters, digits and single dashes, with a
	// letter) is checked by the controller (Accepted=False, reason Invalid)
	// and by every agent, which programs nothing of a VirtualService it
	// refuses.
	//
	// +optional
	TargetPort *intstr.IntOrString `json:"targetPort,omitempty"`
}

// Persistence is IPVS session persistence.
type Persistence struct {
	// TimeoutSeconds is how long a client stays with its real server after
	// its last connection ends.
	//
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2678400
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// IPv4PrefixLength groups IPv4 clients by network for persistence: 32
	// keeps each client apart, 24 treats a /24 as one client.
	//
	// +optional
	// +kubebuilder:default=32
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	IPv4PrefixLength int32 `json:"ipv4PrefixLength,omitempty"`

	// IPv6PrefixLength groups IPv6 clients by network for persistence.
	//
	// +optional
	// +kubebuilder:default=128
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	IPv6PrefixLength int32 `json:"ipv6PrefixLength,omitempty"`
}

// Backends are the real servers of a VirtualService.
//
// +kubebuilder:validation:XValidation:rule="has(self.serviceRef) || (has(self.static) && size(self.static) > 0)",message="at least one backend source is required: serviceRef or static"
type Backends struct {
	// ServiceRef names a Service in this namespace whose EndpointSlices
	// provide real servers.
	//
	// +optional
	ServiceRef *ServiceReference `json:"serviceRef,omitempty"`

	// Static are fixed real servers, e.g. machines outside the cluster.
	//
	// +optional
	// +listType=map
	// +listMapKey=address
	// +kubebuilder:validation:MaxItems=256
	Static []StaticBackend `json:"static,omitempty"`
}

// ServiceReference names a Service in the VirtualService's namespace.
type ServiceReference struct {
	// Name of the Service.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
}

// StaticBackend is a fixed real server.
type StaticBackend struct {
	// Address of the real server.
	//
	// +required
	Address IPAddress `json:"address"`

	// Port on the real server. When unset, each virtual port's numeric
	// targetPort (or the port itself) is used.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`

	// Weight is the real server's share for weighted schedulers; 0 sends it
	// no new connections.
	//
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Weight *int32 `json:"weight,omitempty"`
}

// HealthCheck probes real servers from every node.
//
// +kubebuilder:validation:XValidation:rule="self.protocol != 'HTTP' || has(self.path)",message="path is required for HTTP health checks",fieldPath=".path"
// +kubebuilder:validation:XValidation:rule="self.protocol == 'HTTP' || !has(self.path)",message="path applies only to HTTP health checks",fieldPath=".path"
// +kubebuilder:validation:XValidation:rule="self.timeoutSeconds < self.intervalSeconds",message="timeoutSeconds must be shorter than intervalSeconds",fieldPath=".timeoutSeconds"
type HealthCheck struct {
	// Protocol is TCP (connect) or HTTP (GET, 2xx or 3xx is healthy).
	//
	// +optional
	// +kubebuilder:default=TCP
	Protocol HealthCheckProtocol `json:"protocol,omitempty"`

	// Port to probe; defaults to the real server's port.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`

	// Path for HTTP checks, e.g. /healthz or /ready?verbose=1: a URL path
	// (and query) where every % starts an escape of two hex digits.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/([^\s%#\x00-\x1f\x7f]|%[0-9A-Fa-f]{2})*$`
	Path string `json:"path,omitempty"`

	// IntervalSeconds between probes of one real server (jittered).
	//
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=300
	IntervalSeconds int32 `json:"intervalSeconds,omitempty"`

	// TimeoutSeconds for one probe; shorter than IntervalSeconds.
	//
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=299
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// Rise is how many probes in a row must pass to mark a server healthy.
	//
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Rise int32 `json:"rise,omitempty"`

	// Fall is how many probes in a row must fail to mark a server unhealthy.
	//
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Fall int32 `json:"fall,omitempty"`
}

// Drain is how real servers leave.
type Drain struct {
	// TimeoutSeconds is the longest a removed TCP or SCTP real server keeps
	// serving its established connections at weight 0 before it is deleted.
	// 0 deletes at once. UDP real servers are always deleted at once.
	//
	// +optional
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	TimeoutSeconds int32 `json:"timeoutSeconds"`

	// FlushTCPConntrack deletes the conntrack flows of removed TCP real
	// servers too (UDP flows always are), so clients reconnect at once
	// instead of waiting for a timeout.
	//
	// +optional
	FlushTCPConntrack bool `json:"flushTCPConntrack,omitempty"`
}

// Condition types of a VirtualService.
const (
	// ConditionAccepted is True when the spec is valid and not in conflict.
	ConditionAccepted = "Accepted"
	// ConditionProgrammed is True when every matching node programmed the
	// current generation.
	ConditionProgrammed = "Programmed"
	// ConditionReady is True when at least one backend is ready.
	ConditionReady = "Ready"
	// ConditionConflicted is True when an older VirtualService claims one of
	// this one's address:port:protocol.
	ConditionConflicted = "Conflicted"
	// ConditionAddressesAllocated is True when the controller allocated an
	// address of every family of spec.addressFamilies; only VirtualServices
	// that ask for addresses have it.
	ConditionAddressesAllocated = "AddressesAllocated"
)

// BackendCounts counts real servers as nodes see them.
type BackendCounts struct {
	// Total real servers wanted.
	Total int32 `json:"total"`
	// Ready real servers that receive new connections.
	Ready int32 `json:"ready"`
	// Draining real servers: weight 0, waiting for connections to end.
	Draining int32 `json:"draining"`
}

// NodeStatus is what one node's agent programmed for this VirtualService.
type NodeStatus struct {
	// Node name.
	Node string `json:"node"`
	// ObservedGeneration the node programmed.
	ObservedGeneration int64 `json:"observedGeneration"`
	// Programmed is true when the node's kernel matches that generation.
	Programmed bool `json:"programmed"`
	// Message explains a failure.
	//
	// +optional
	Message string `json:"message,omitempty"`
	// Backends as this node sees them.
	//
	// +optional
	Backends BackendCounts `json:"backends"`
	// Announced are the addresses this node makes reachable from outside
	// it, and how (AddressPool spec.announce).
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=4
	Announced []AnnouncedAddress `json:"announced,omitempty"`
}

// AnnounceMode is how an address is announced.
//
// +kubebuilder:validation:Enum=BGP;Layer2
type AnnounceMode string

// The modes of announcement.
const (
	// AnnounceBGP: the node advertises a host route to its BGP peers.
	AnnounceBGP AnnounceMode = "BGP"
	// AnnounceLayer2: the node answers ARP or NDP for the address.
	AnnounceLayer2 AnnounceMode = "Layer2"
)

// AnnouncedAddress is an address a node announces, and how.
type AnnouncedAddress struct {
	// Address announced. A plain string, not an IPAddress: status.nodes
	// has no bound on its length for the CRD's rules to be priced with.
	//
	// +kubebuilder:validation:MaxLength=45
	Address string `json:"address"`
	// Mode is BGP or Layer2.
	Mode AnnounceMode `json:"mode"`
}

// VirtualServiceStatus is the observed state of a VirtualService.
type VirtualServiceStatus struct {
	// ObservedGeneration is the generation the controller last processed.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Addresses are the addresses the controller allocated for
	// spec.addressFamilies, one per family. It is the record of the
	// allocation: the controller rebuilds what is in use from it.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	Addresses []IPAddress `json:"addresses,omitempty"`

	// Conditions: Accepted, Programmed, Ready, Conflicted, and
	// AddressesAllocated with spec.addressFamilies.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Backends counts real servers (the highest count any node reports).
	//
	// +optional
	Backends *BackendCounts `json:"backends,omitempty"`

	// Ports summarizes spec.ports as "80/TCP,53/UDP", for kubectl get.
	//
	// +optional
	Ports string `json:"ports,omitempty"`

	// ReadyBackends is "ready/total", for kubectl get.
	//
	// +optional
	ReadyBackends string `json:"readyBackends,omitempty"`

	// Nodes are the per-node reports of the agents; each agent owns its own
	// entry (server-side apply, one field manager per node).
	//
	// +optional
	// +listType=map
	// +listMapKey=node
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// VirtualService is an IPVS virtual service: virtual IPs and ports balanced
// across real servers on every matching node.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lvs,categories=kubelvs
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.status.ports`
// +kubebuilder:printcolumn:name="Scheduler",type=string,JSONPath=`.spec.scheduler`
// +kubebuilder:printcolumn:name="Backends",type=string,JSONPath=`.status.readyBackends`,description="ready/total real servers"
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Allocated",type=string,JSONPath=`.status.addresses`,priority=1,description="addresses the controller allocated for spec.addressFamilies"
type VirtualService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the user asks for.
	Spec VirtualServiceSpec `json:"spec"`
	// Status is what kubelvs observed.
	//
	// +optional
	Status VirtualServiceStatus `json:"status,omitempty"`
}

// VirtualServiceList is a list of VirtualServices.
//
// +kubebuilder:object:root=true
type VirtualServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the VirtualServices.
	Items []VirtualService `json:"items"`
}
