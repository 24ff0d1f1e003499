package agent

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

// The agent's informers hold every VirtualService and every EndpointSlice
// of the cluster, so what it keeps of each object is what its memory
// scales with. The transforms below run before an object enters the
// cache and drop what the agent never reads: managed fields (often the
// largest part of an object), annotations, and in a VirtualService's
// status everything but the allocated addresses and this node's entry (status.nodes has one entry
// per node: with N nodes every agent would otherwise hold N entries per
// VirtualService). The agent never writes a cached object back (status is
// applied from scratch), so nothing dropped here can be lost.

// TransformVirtualService keeps of a VirtualService its identity, spec,
// allocated addresses and node's own status entry.
func TransformVirtualService(node string) toolscache.TransformFunc {
	return func(in any) (any, error) {
		vs, ok := in.(*lvsv1.VirtualService)
		if !ok {
			return in, nil
		}
		vs.ManagedFields = nil
		vs.Annotations = nil
		mine := vs.Status.Nodes[:0]
		for _, n := range vs.Status.Nodes {
			if n.Node == node {
				mine = append(mine, n)
			}
		}
		// status.addresses are the VIPs of a VirtualService that asks
		// for automatic addresses: desired state reads them.
		vs.Status = lvsv1.VirtualServiceStatus{Addresses: vs.Status.Addresses, Nodes: mine}
		return vs, nil
	}
}

// TransformNamespace keeps of a Namespace its name and labels: which
// AddressPools admit its VirtualServices is all the agent asks of it.
func TransformNamespace(in any) (any, error) {
	ns, ok := in.(*corev1.Namespace)
	if !ok {
		return in, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels,
	}}, nil
}

// TransformNode keeps of a Node its name and labels: which VirtualServices
// select it, and with layer-2 announcement which nodes may answer for an
// address, is all the agent asks of Nodes.
func TransformNode(in any) (any, error) {
	n, ok := in.(*corev1.Node)
	if !ok {
		return in, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
	}}, nil
}

// TransformEndpointSlice drops an EndpointSlice's managed fields,
// annotations, owner references and generated-name prefix, and of each
// endpoint what desired state never reads: the target reference (a whole
// ObjectReference per endpoint), hostname, zone, hints and deprecated
// topology. What it keeps it packs: the condition flags point at two
// shared booleans, node names at one shared string per node, and a slice's
// addresses share one array. Cached objects are never modified (the cache
// hands them out without copying), so sharing is safe.
func TransformEndpointSlice(in any) (any, error) {
	s, ok := in.(*discoveryv1.EndpointSlice)
	if !ok {
		return in, nil
	}
	s.ManagedFields, s.Annotations, s.OwnerReferences, s.GenerateName = nil, nil, nil, ""
	n := 0
	for i := range s.Endpoints {
		n += len(s.Endpoints[i].Addresses)
	}
	addrs := make([]string, 0, n)
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		e.TargetRef, e.Hostname, e.Zone, e.Hints, e.DeprecatedTopology = nil, nil, nil, nil, nil
		c := &e.Conditions
		c.Ready, c.Serving, c.Terminating = sharedBool(c.Ready), sharedBool(c.Serving), sharedBool(c.Terminating)
		e.NodeName = sharedNodeName(e.NodeName)
		at := len(addrs)
		addrs = append(addrs, e.Addresses...)
		e.Addresses = addrs[at:len(addrs):len(addrs)]
	}
	return s, nil
}

var yes, no = true, false

func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &yes
	default:
		return &no
	}
}

// nodeNames holds one string per node name seen in an endpoint; there are
// as many as the cluster has nodes.
var nodeNames sync.Map // string -> *string

func sharedNodeName(n *string) *string {
	if n == nil {
		return nil
	}
	if p, ok := nodeNames.Load(*n); ok {
		return p.(*string)
	}
	p, _ := nodeNames.LoadOrStore(*n, n)
	return p.(*string)
}
