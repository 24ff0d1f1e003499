// Package vsstatus decides the cluster-wide status of a VirtualService from
// its rivals (other VirtualServices claiming the same address:port:protocol)
// and the per-node reports of the agents. It is pure: no API calls.
package vsstatus

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/validation"
)

// Condition reasons.
const (
	ReasonAccepted          = "Accepted"
	ReasonConflicted        = "Conflicted"
	ReasonNoConflict        = "NoConflict"
	ReasonPending           = "Pending"
	ReasonProgrammed        = "Programmed"
	ReasonProgrammingFailed = "ProgrammingFailed"
	ReasonBackendsReady     = "BackendsReady"
	ReasonNoReadyBackends   = "NoReadyBackends"
	// ReasonInvalid: the spec breaks a rule of validation.VirtualService
	// that the CRD could not check (or an object stored before it did).
	ReasonInvalid = "Invalid"
	// ReasonAddressNotAllowed: an address lies in no AddressPool that
	// admits the VirtualService's namespace (pools.Check).
	ReasonAddressNotAllowed = "AddressNotAllowed"
	// ReasonAllocated: the controller allocated an address of every
	// family of spec.addressFamilies (AddressesAllocated=True).
	ReasonAllocated = "Allocated"
	// ReasonNoAddressAvailable: no AddressPool that may serve the
	// VirtualService has a free address of a family it asks for, or none
	// admits its namespace (AddressesAllocated=False, and Accepted).
	ReasonNoAddressAvailable = "NoAddressAvailable"
	// ReasonServiceNotSelected: the Service of spec.backends.serviceRef
	// does not match the --endpointslice-selector of the agents, which
	// therefore do not watch its EndpointSlices: Ready=False, whatever the
	// slices say (NotSelected).
	ReasonServiceNotSelected = "ServiceNotSelected"
	// ReasonReallocated is the reason of the Event that says a
	// VirtualService lost an allocated address, and why.
	ReasonReallocated = "Reallocated"
)

// Validate lists what keeps vs from being programmed (validation.VirtualService),
// one message per problem, each naming its field.
func Validate(vs *lvsv1.VirtualService) []string {
	errs := validation.VirtualService(vs)
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

// MaxMessage bounds condition messages (the API allows 32768 bytes): a
// VirtualService with many problems or conflicts still gets its condition.
const MaxMessage = 2048

// Bounded joins msgs with "; ", cut at MaxMessage bytes with a count of
// what was left out.
func Bounded(msgs []string) string {
	var b strings.Builder
	for i, m := range msgs {
		sep := ""
		if i > 0 {
			sep = "; "
		}
		more := fmt.Sprintf("; and %d more", len(msgs)-i)
		if b.Len()+len(sep)+len(m) > MaxMessage-len(more) {
			if i == 0 {
				b.WriteString(m[:MaxMessage-len(more)-3] + "...")
				more = fmt.Sprintf("; and %d more", len(msgs)-1)
				if len(msgs) == 1 {
					return b.String()
				}
			}
			b.WriteString(more)
			return b.String()
		}
		b.WriteString(sep + m)
	}
	return b.String()
}

// Conflict is one key the VirtualService loses to an older one.
type Conflict struct {
	Key    lvsv1.ServiceKey
	Winner types.NamespacedName
}

// Admitted keeps the rivals whose addresses are all admitted (admit
// returns what is not: pools.Check with the rival's namespace's labels).
// A rival refused that way is programmed nowhere, so it wins nothing: the
// controller and every agent filter rivals with it before Conflicts, else
// a namespace could block an address it may not use by claiming it first.
// An error of admit (a namespace that cannot be read) is returned.
func Admitted(rivals []lvsv1.VirtualService, admit func(*lvsv1.VirtualService) ([]string, error)) ([]lvsv1.VirtualService, error) {
	out := rivals[:0]
	for i := range rivals {
		refused, err := admit(&rivals[i])
		if err != nil {
			return nil, err
		}
		if len(refused) == 0 {
			out = append(out, rivals[i])
		}
	}
	return out, nil
}

// Conflicts returns, sorted by key, the keys of vs that an older rival
// claims, each with the rival that wins it.
func Conflicts(vs *lvsv1.VirtualService, rivals []lvsv1.VirtualService) []Conflict {
	mine := map[lvsv1.ServiceKey]bool{}
	for _, k := range vs.ServiceKeys() {
		mine[k] = true
	}
	winners := map[lvsv1.ServiceKey]*lvsv1.VirtualService{}
	for i := range rivals {
		r := &rivals[i]
		if r.UID == vs.UID || !lvsv1.Precedes(r, vs) {
			continue
		}
		for _, k := range r.ServiceKeys() {
			if mine[k] && (winners[k] == nil || lvsv1.Precedes(r, winners[k])) {
				winners[k] = r
			}
		}
	}
	out := make([]Conflict, 0, len(winners))
	for k, w := range winners {
		out = append(out, Conflict{Key: k, Winner: types.NamespacedName{Namespace: w.Namespace, Name: w.Name}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Less(out[j].Key) })
	return out
}

// Apply writes observedGeneration, the conditions and the backend counts
// into vs.Status from the problems Validate found, the addresses no pool
// admits (pools.Check) and the conflicts, in that order of precedence. It
// reports whether Conflicted turned True.
func Apply(vs *lvsv1.VirtualService, problems, notAllowed []string, conflicts []Conflict) (becameConflicted bool) {
	return ApplyNodes(vs, problems, notAllowed, conflicts, vs.Status.Nodes)
}

// ApplyNodes is Apply with the nodes' results given apart: the entries of
// status.nodes and those the controller derives from NodeReports.
func ApplyNodes(vs *lvsv1.VirtualService, problems, notAllowed []string, conflicts []Conflict, nodes []lvsv1.NodeStatus) (becameConflicted bool) {
	st := &vs.Status
	gen := vs.Generation
	st.ObservedGeneration = gen
	st.Ports = PortSummary(vs.Spec.Ports)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) bool {
		return meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}

	refuse := func(reason, msg string) {
		set(lvsv1.ConditionAccepted, metav1.ConditionFalse, reason, msg)
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, reason, "not programmed: "+msg)
		set(lvsv1.ConditionReady, metav1.ConditionFalse, reason, "not programmed: "+msg)
		st.Backends, st.ReadyBackends = nil, ""
	}
	wasConflicted := meta.IsStatusConditionTrue(st.Conditions, lvsv1.ConditionConflicted)
	if len(problems) == 0 && len(notAllowed) > 0 {
		// Not programmed anywhere, so it conflicts with nobody.
		set(lvsv1.ConditionConflicted, metav1.ConditionFalse, ReasonNoConflict, "not programmed: no address to conflict over")
		refuse(ReasonAddressNotAllowed, Bounded(notAllowed))
		return false
	}
	if len(conflicts) > 0 {
		msg := conflictMessage(conflicts)
		set(lvsv1.ConditionConflicted, metav1.ConditionTrue, ReasonConflicted, msg)
		set(lvsv1.ConditionAccepted, metav1.ConditionFalse, ReasonConflicted, msg)
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonConflicted, "not programmed: "+msg)
		set(lvsv1.ConditionReady, metav1.ConditionFalse, ReasonConflicted, "not programmed: "+msg)
		st.Backends, st.ReadyBackends = nil, ""
		return !wasConflicted
	}
	set(lvsv1.ConditionConflicted, metav1.ConditionFalse, ReasonNoConflict, "no other VirtualService claims these addresses and ports")
	if len(problems) > 0 {
		refuse(ReasonInvalid, Bounded(problems))
		return false
	}
	if len(vs.Spec.Addresses) == 0 && len(vs.Spec.AddressFamilies) > 0 && !allocated(vs, set) {
		st.Backends, st.ReadyBackends = nil, ""
		return false
	}
	set(lvsv1.ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, "the spec is valid")
	applyNodeReports(vs, nodes, set)
	return false
}

// allocated reports whether a VirtualService that asks for automatic
// addresses has them; if not, it sets Accepted, Programmed and Ready from
// the allocator's AddressesAllocated condition: False with its reason
// when the allocator found none, Unknown while it has not answered yet.
func allocated(vs *lvsv1.VirtualService, set func(t string, s metav1.ConditionStatus, reason, msg string) bool) bool {
	st := metav1.ConditionUnknown
	reason, msg := ReasonPending, "waiting for the controller to allocate addresses"
	if c := meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAddressesAllocated); c != nil && c.Status == metav1.ConditionFalse {
		st, reason, msg = metav1.ConditionFalse, c.Reason, c.Message
	} else if len(vs.EffectiveAddresses()) > 0 {
		return true
	}
	set(lvsv1.ConditionAccepted, st, reason, msg)
	set(lvsv1.ConditionProgrammed, st, reason, "not programmed: "+msg)
	set(lvsv1.ConditionReady, st, reason, "not programmed: "+msg)
	return false
}

// NotSelected sets Ready to False with ReasonServiceNotSelected and msg on
// a VirtualService that ApplyNodes accepted: its Service's EndpointSlices
// are not watched by the agents, so its backends are empty on every node,
// and Ready says why. A VirtualService not accepted keeps the reason it
// was refused for. It reports whether it set the condition.
func NotSelected(vs *lvsv1.VirtualService, msg string) bool {
	if !meta.IsStatusConditionTrue(vs.Status.Conditions, lvsv1.ConditionAccepted) {
		return false
	}
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{
		Type: lvsv1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonServiceNotSelected,
		Message: msg, ObservedGeneration: vs.Generation,
	})
	return true
}

// PortSummary renders ports as Kubernetes Services do: 80/TCP,53/UDP.
func PortSummary(ports []lvsv1.VirtualServicePort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = lvsv1.ProtocolTCP
		}
		parts[i] = fmt.Sprintf("%d/%s", p.Port, proto)
	}
	return strings.Join(parts, ",")
}

func conflictMessage(cs []Conflict) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s is claimed by the older VirtualService %s", c.Key, c.Winner))
	}
	return Bounded(parts)
}

// applyNodeReports folds the agents' per-node reports into Programmed,
// Ready and the backend counts.
func applyNodeReports(vs *lvsv1.VirtualService, nodes []lvsv1.NodeStatus, set func(t string, s metav1.ConditionStatus, reason, msg string) bool) {
	st := &vs.Status
	if len(nodes) == 0 {
		set(lvsv1.ConditionProgrammed, metav1.ConditionUnknown, ReasonPending, "no node has reported yet")
		set(lvsv1.ConditionReady, metav1.ConditionUnknown, ReasonPending, "no node has reported yet")
		st.Backends, st.ReadyBackends = nil, ""
		return
	}
	var counts lvsv1.BackendCounts
	var failed, behind []string
	// By name: the messages name nodes, and the controller lists
	// NodeReports from its cache in no fixed order; the same results in
	// another order must not be a new status (a write, and an event to
	// every agent).
	nodes = slices.SortedStableFunc(slices.Values(nodes), func(a, b lvsv1.NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	for _, n := range nodes {
		switch {
		case n.Message != "":
			failed = append(failed, fmt.Sprintf("%s: %s", n.Node, n.Message))
		case n.ObservedGeneration != vs.Generation || !n.Programmed:
			behind = append(behind, n.Node)
		}
		counts.Total = max(counts.Total, n.Backends.Total)
		counts.Ready = max(counts.Ready, n.Backends.Ready)
		counts.Draining = max(counts.Draining, n.Backends.Draining)
	}
	switch {
	case len(failed) > 0:
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonProgrammingFailed, Bounded(failed))
	case len(behind) > 0:
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonPending,
			Bounded([]string{fmt.Sprintf("%d of %d nodes have not programmed generation %d yet: %s", len(behind), len(nodes), vs.Generation, strings.Join(behind, ", "))}))
	default:
		set(lvsv1.ConditionProgrammed, metav1.ConditionTrue, ReasonProgrammed, fmt.Sprintf("programmed on %d nodes", len(nodes)))
	}
	if counts.Ready > 0 {
		set(lvsv1.ConditionReady, metav1.ConditionTrue, ReasonBackendsReady, fmt.Sprintf("%d of %d backends ready", counts.Ready, counts.Total))
	} else {
		set(lvsv1.ConditionReady, metav1.ConditionFalse, ReasonNoReadyBackends, fmt.Sprintf("0 of %d backends ready", counts.Total))
	}
	st.Backends = &counts
	st.ReadyBackends = fmt.Sprintf("%d/%d", counts.Ready, counts.Total)
}
