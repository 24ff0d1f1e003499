package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The unicast rules of PoolCIDR test overlap as "one network holds the
// other's first address", with containsIP: containsCIDR of Kubernetes 1.31
// does not mask the inner network and misses e.g. 127.1.0.0/16 in
// 127.0.0.0/8.

// PoolCIDR is a network of an AddressPool in canonical CIDR notation (e.g.
// 192.0.2.0/24 or 2001:db8:1::/64): no bits set after the prefix length, and
// only unicast addresses, so that every address of it could be a
// VirtualService's. IPv4 networks must not overlap 0.0.0.0/8, 127.0.0.0/8,
// 169.254.0.0/16, 224.0.0.0/4 or 240.0.0.0/4; IPv6 networks must not
// overlap ::/128, ::1/128, fe80::/10 or ff00::/8.
//
// +kubebuilder:validation:MaxLength=49
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || self.matches('(?i)^::ffff:[0-9a-f.:]+/[0-9]+$')",message="must be a valid CIDR, e.g. 192.0.2.0/24 or 2001:db8::/64"
// +kubebuilder:validation:XValidation:rule="!self.matches('(?i)^::ffff:[0-9a-f.:]+/[0-9]+$')",message="must not be an IPv4-mapped IPv6 network: write it as an IPv4 CIDR (e.g. 192.0.2.0/24)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) != self || string(cidr(self).masked()) == self",message="must be a network address: no bits set after the prefix length (e.g. 192.0.2.0/24, not 192.0.2.1/24)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) == self",message="must be a CIDR in canonical form (e.g. 2001:db8::/64, 10.0.0.0/8)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() != 4 || !['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4'].exists(r, cidr(r).containsIP(cidr(self).masked().ip()) || cidr(self).containsIP(cidr(r).ip()))",message="must hold only unicast addresses: an IPv4 network must not overlap 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 or 240.0.0.0/4"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() != 6 || !['::/128', '::1/128', 'fe80::/10', 'ff00::/8'].exists(r, cidr(r).containsIP(cidr(self).masked().ip()) || cidr(self).containsIP(cidr(r).ip()))",message="must hold only unicast addresses: an IPv6 network must not overlap ::/128, ::1/128, fe80::/10 or ff00::/8"
type PoolCIDR string

// AddressOrCIDR is an IP address (e.g. 192.0.2.1) or a network (e.g.
// 192.0.2.0/28), both in canonical form.
//
// +kubebuilder:validation:MaxLength=49
// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self) || self.matches('(?i)^::ffff:[0-9a-f.:]+(/[0-9]+)?$')",message="must be an IP address or a CIDR, e.g. 192.0.2.1 or 192.0.2.0/28"
// +kubebuilder:validation:XValidation:rule="!self.matches('(?i)^::ffff:[0-9a-f.:]+(/[0-9]+)?$')",message="must not be an IPv4-mapped IPv6 address or network: write the IPv4 form (e.g. 192.0.2.1)"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip.isCanonical(self)",message="must be an IP address in canonical form (e.g. 2001:db8::1, 10.0.0.1)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) != self || string(cidr(self).masked()) == self",message="must be a network address: no bits set after the prefix length (e.g. 192.0.2.0/28, not 192.0.2.1/28)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) == self",message="must be a CIDR in canonical form (e.g. 2001:db8::/64, 10.0.0.0/8)"
type AddressOrCIDR string

// The rules of AddressRange order two addresses, which CEL cannot: an IPv4
// address becomes an int, an IPv6 address the list of its eight groups as
// ints ("::" expanded to zero groups, each group parsed as hex), compared
// element by element. `[x].all(a, ...)` names x once (Kubernetes 1.31 has
// no cel.bind for CRDs). The span rule of IPv6 compares the groups as text
// with constants: canonical groups have no leading zeros, so a shorter
// group is a smaller number. Strings are never compared with strings: the
// API server's cost estimate knows no bound for the parts of a split
// string, and prices such a rule beyond any budget. First and Last are
// checked as any IPAddress is; the span rules refuse a range around a
// non-unicast network, which it would hold although neither end is in it.

// AddressRange is every address from First to Last, both included, of one
// IP family. Every address of it must be unicast: an IPv4 range must not
// span 127.0.0.0/8 or 169.254.0.0/16, an IPv6 range fe80::/10 or
// ::ffff:0:0/96.
//
// +kubebuilder:validation:XValidation:rule="!isIP(self.first) || !isIP(self.last) || ip(self.first).family() == ip(self.last).family()",message="first and last must be of the same IP family"
// +kubebuilder:validation:XValidation:rule="!isIP(self.first) || !isIP(self.last) || !ip.isCanonical(self.first) || !ip.isCanonical(self.last) || ip(self.first).family() != ip(self.last).family() || (ip(self.first).family() == 4 ? [self.first.split('.').map(o, int(o))].all(a, [self.last.split('.').map(o, int(o))].all(b, a[0] * 16777216 + a[1] * 65536 + a[2] * 256 + a[3] <= b[0] * 16777216 + b[1] * 65536 + b[2] * 256 + b[3])) : [self.first.replace('::', ':' + '0:0:0:0:0:0:0:0:'.substring(0, 2 * (8 - size(self.first.split(':').filter(g, size(g) > 0))))).split(':').filter(g, size(g) > 0).map(g, ('000' + g).substring(size(g) - 1)).map(p, '0123456789abcdef'.indexOf(p.charAt(0)) * 4096 + '0123456789abcdef'.indexOf(p.charAt(1)) * 256 + '0123456789abcdef'.indexOf(p.charAt(2)) * 16 + '0123456789abcdef'.indexOf(p.charAt(3)))].all(a, [self.last.replace('::', ':' + '0:0:0:0:0:0:0:0:'.substring(0, 2 * (8 - size(self.last.split(':').filter(g, size(g) > 0))))).split(':').filter(g, size(g) > 0).map(g, ('000' + g).substring(size(g) - 1)).map(p, '0123456789abcdef'.indexOf(p.charAt(0)) * 4096 + '0123456789abcdef'.indexOf(p.charAt(1)) * 256 + '0123456789abcdef'.indexOf(p.charAt(2)) * 16 + '0123456789abcdef'.indexOf(p.charAt(3)))].all(b, a == b || [0, 1, 2, 3, 4, 5, 6, 7].exists(i, a[i] < b[i] && [0, 1, 2, 3, 4, 5, 6, 7].all(j, j >= i || a[j] == b[j])))))",message="first must not be after last"
// +kubebuilder:validation:XValidation:rule="!isIP(self.first) || !isIP(self.last) || !ip.isCanonical(self.first) || !ip.isCanonical(self.last) || ip(self.first).family() != ip(self.last).family() || ip(self.first).family() != 4 || [self.first.split('.').map(o, int(o))].all(a, [self.last.split('.').map(o, int(o))].all(b, !(a[0] * 16777216 + a[1] * 65536 + a[2] * 256 + a[3] < 2130706432 && b[0] * 16777216 + b[1] * 65536 + b[2] * 256 + b[3] > 2147483647) && !(a[0] * 16777216 + a[1] * 65536 + a[2] * 256 + a[3] < 2851995648 && b[0] * 16777216 + b[1] * 65536 + b[2] * 256 + b[3] > 2852061183)))",message="must hold only unicast addresses: an IPv4 range must not span 127.0.0.0/8 (loopback) or 169.254.0.0/16 (link-local)"
// +kubebuilder:validation:XValidation:rule="!isIP(self.first) || !isIP(self.last) || !ip.isCanonical(self.first) || !ip.isCanonical(self.last) || ip(self.first).family() != ip(self.last).family() || ip(self.first).family() != 6 || [self.first.replace('::', ':' + '0:0:0:0:0:0:0:0:'.substring(0, 2 * (8 - size(self.first.split(':').filter(g, size(g) > 0))))).split(':').filter(g, size(g) > 0)].all(a, [self.last.replace('::', ':' + '0:0:0:0:0:0:0:0:'.substring(0, 2 * (8 - size(self.last.split(':').filter(g, size(g) > 0))))).split(':').filter(g, size(g) > 0)].all(b, !((size(a[0]) < 4 || a[0] < 'fe80') && size(b[0]) == 4 && b[0] > 'febf') && !([0, 1, 2, 3, 4].all(i, a[i] == '0') && (size(a[5]) < 4 || a[5] < 'ffff') && [0, 1, 2, 3, 4].exists(i, b[i] != '0'))))",message="must hold only unicast addresses: an IPv6 range must not span fe80::/10 (link-local) or ::ffff:0:0/96 (IPv4-mapped)"
type AddressRange struct {
	// First is the lowest address of the range.
	//
	// +required
	First IPAddress `json:"first"`

	// Last is the highest address of the range; equal to First for one
	// address.
	//
	// +required
	Last IPAddress `json:"last"`
}

// LabelKey is a label key: an optional DNS-subdomain prefix of at most 253
// characters and "/", then a name of at most 63 letters, digits, '-', '_'
// and '.', starting and ending with a letter or digit.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=317
// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
// +kubebuilder:validation:XValidation:rule="self.indexOf('/') <= 253",message="the prefix of a label key is at most 253 characters"
type LabelKey string

// LabelSelectorOperator relates a label key to its values.
//
// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
type LabelSelectorOperator string

// Label selector operators, as metav1's.
const (
	LabelSelectorOpIn           LabelSelectorOperator = "In"
	LabelSelectorOpNotIn        LabelSelectorOperator = "NotIn"
	LabelSelectorOpExists       LabelSelectorOperator = "Exists"
	LabelSelectorOpDoesNotExist LabelSelectorOperator = "DoesNotExist"
)

// LabelSelector selects objects by their labels. It is written as
// metav1.LabelSelector is (matchLabels, matchExpressions), with bounds on
// its sizes that let the CRD check it within the API server's CEL cost
// budget. The requirements are ANDed; an empty selector ({}) selects every
// object.
//
// +structType=atomic
type LabelSelector struct {
	// MatchLabels are labels an object must have with exactly these values.
	// At most 32; keys of at most 317 characters. The syntax of a key is
	// too costly for the CRD's rules (a map key has no length the cost
	// estimate can use): kubelvs checks it itself (pkg/validation).
	//
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317)",message="matchLabels keys are at most 317 characters, as label keys are"
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`

	// MatchExpressions are requirements on labels; at most 16.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one requirement of a LabelSelector.
//
// +kubebuilder:validation:XValidation:rule="!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",message="values must not be empty when the operator is In or NotIn",fieldPath=".values"
// +kubebuilder:validation:XValidation:rule="!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",message="values must be empty when the operator is Exists or DoesNotExist",fieldPath=".values"
type LabelSelectorRequirement struct {
	// Key is the label key.
	//
	// +required
	Key LabelKey `json:"key"`

	// Operator is In, NotIn, Exists or DoesNotExist.
	//
	// +required
	Operator LabelSelectorOperator `json:"operator"`

	// Values for In and NotIn (at least one); none for Exists and
	// DoesNotExist. At most 64.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Values []LabelValue `json:"values,omitempty"`
}

// AsMetav1 returns the selector as a metav1.LabelSelector (nil for nil),
// for labels.Selector and metav1's helpers.
func (s *LabelSelector) AsMetav1() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{}
	if s.MatchLabels != nil {
		out.MatchLabels = make(map[string]string, len(s.MatchLabels))
		for k, v := range s.MatchLabels {
			out.MatchLabels[k] = string(v)
		}
	}
	for _, e := range s.MatchExpressions {
		r := metav1.LabelSelectorRequirement{Key: string(e.Key), Operator: metav1.LabelSelectorOperator(e.Operator)}
		for _, v := range e.Values {
			r.Values = append(r.Values, string(v))
		}
		out.MatchExpressions = append(out.MatchExpressions, r)
	}
	return out
}

// AddressPoolSpec is which addresses the pool holds and who may use them.
//
// +kubebuilder:validation:XValidation:rule="(has(self.cidrs) && size(self.cidrs) > 0) || (has(self.ranges) && size(self.ranges) > 0)",message="at least one CIDR or range is required"
type AddressPoolSpec struct {
	// CIDRs are networks of the pool, IPv4 or IPv6, e.g. 192.0.2.0/24;
	// a single address is a /32 or /128. Every address of a network
	// belongs to the pool, its first and last included (list them in
	// Avoid if your network cannot route them). At most 64.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	CIDRs []PoolCIDR `json:"cidrs,omitempty"`

	// Ranges are spans of addresses of the pool, from first to last,
	// for blocks that are not a CIDR. At most 32 (the rules that order
	// two addresses are costly), each first address at most once.
	//
	// +optional
	// +listType=map
	// +listMapKey=first
	// +kubebuilder:validation:MaxItems=32
	Ranges []AddressRange `json:"ranges,omitempty"`

	// Avoid lists addresses and networks of the pool that must never be
	// used: a gateway, a router's own address, the first and last of a
	// network that clients treat as network and broadcast addresses. At
	// most 64. An entry outside the pool's CIDRs and ranges changes
	// nothing.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Avoid []AddressOrCIDR `json:"avoid,omitempty"`

	// AutoAssign, true by default, lets kubelvs hand out the pool's
	// addresses to objects that ask for an address without naming one;
	// false keeps the pool for objects that name an address of it (e.g.
	// a few costly public addresses): the controller allocates only from
	// pools with autoAssign (VirtualService spec.addressFamilies).
	//
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// NamespaceSelector chooses the namespaces whose VirtualServices may
	// use the pool's addresses, by the namespaces' labels. Unset (the
	// default) admits no namespace: a pool is closed until its
	// administrator says to whom it is open. {} admits every namespace.
	// Every namespace has the label kubernetes.io/metadata.name with its
	// name, to select namespaces by name. The controller and every agent
	// refuse an address that no pool admits to the VirtualService's
	// namespace.
	//
	// +optional
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`

	// Announce makes the pool's addresses reachable from outside the
	// nodes that serve them. Unset (the default), nothing is announced:
	// clients outside a node reach its VIPs only through routes that
	// someone else maintains. An address held by several pools is
	// announced in every way any of those that admit its VirtualService
	// asks for.
	//
	// +optional
	Announce *Announcement `json:"announce,omitempty"`
}

// Announcement is how the addresses of a pool are made reachable.
type Announcement struct {
	// BGP, when set, has every node that serves an address advertise it
	// as a host route (/32, /128) to the BGP peers (BGPPeer) the node
	// keeps sessions with; routers then spread flows over those nodes
	// (ECMP).
	//
	// +optional
	BGP *BGPAnnouncement `json:"bgp,omitempty"`

	// Layer2, when set, has one node among those that serve an address
	// answer ARP (IPv4) and NDP (IPv6) for it on the link toward the
	// clients; when that node fails, another one takes over.
	//
	// +optional
	Layer2 *Layer2Announcement `json:"layer2,omitempty"`
}

// BGPAnnouncement asks for BGP announcement. It has no settings yet.
type BGPAnnouncement struct{}

// Layer2Announcement asks for layer-2 announcement.
type Layer2Announcement struct {
	// NodeSelector chooses, by their labels, the nodes that may answer for
	// the pool's addresses, e.g. those on the clients' link; unset, every
	// node that serves an address may. Among them, one answers for each
	// address.
	//
	// +optional
	NodeSelector *LabelSelector `json:"nodeSelector,omitempty"`
}

// AddressPoolStatus is the observed state of an AddressPool. Not yet
// filled: the controller that sets it comes with the enforcement of pools.
type AddressPoolStatus struct {
	// ObservedGeneration is the generation the controller last processed.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions of the pool, e.g. Valid (false with the errors of a spec
	// the CRD cannot refuse). Not yet set.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddressPool is a set of addresses an administrator owns, and the
// namespaces that may use them. It is cluster-scoped, so the namespaces'
// own users cannot write it: those allowed to write AddressPools (normally
// the cluster's administrators) decide which addresses a namespace may
// claim.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=lvspool,categories=kubelvs
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=`.spec.cidrs`
// +kubebuilder:printcolumn:name="Ranges",type=string,JSONPath=`.spec.ranges`,priority=1
// +kubebuilder:printcolumn:name="Auto Assign",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the administrator declares.
	Spec AddressPoolSpec `json:"spec"`
	// Status is what kubelvs observed (not yet filled).
	//
	// +optional
	Status AddressPoolStatus `json:"status,omitempty"`
}

// AddressPoolList is a list of AddressPools.
//
// +kubebuilder:object:root=true
type AddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the AddressPools.
	Items []AddressPool `json:"items"`
}
