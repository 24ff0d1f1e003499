// Package vsstatus decides the cluster-wide status of a VirtualService from
// its rivals (other VirtualServices claiming the same address:port:protocol)
// and the per-node reports of the agents. It is pure: no API calls.
package vsstatus

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
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
	ReasonInvalidTargetPort = "InvalidTargetPort"
)

// portName is what Kubernetes accepts as a port name (IANA_SVC_NAME).
var portName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate finds what the CRD cannot check: targetPort is int-or-string,
// which the CRD can bound neither with OpenAPI nor within the CEL budget.
func Validate(vs *lvsv1.VirtualService) []string {
	var problems []string
	for i, p := range vs.Spec.Ports {
		tp := p.TargetPort
		switch {
		case tp == nil:
		case tp.Type == intstr.Int && (tp.IntVal < 1 || tp.IntVal > 65535):
			problems = append(problems, fmt.Sprintf("spec.ports[%d].targetPort: %d is not a port number 1-65535", i, tp.IntVal))
		case tp.Type == intstr.String && (len(tp.StrVal) > 15 || !portName.MatchString(tp.StrVal) || !strings.ContainsAny(tp.StrVal, "abcdefghijklmnopqrstuvwxyz") || strings.Contains(tp.StrVal, "--")):
			problems = append(problems, fmt.Sprintf("spec.ports[%d].targetPort: %q is not a port name (at most 15 lowercase letters, digits and single dashes, with a letter)", i, tp.StrVal))
		}
	}
	return problems
}

// Conflict is one key the VirtualService loses to an older one.
type Conflict struct {
	Key    lvsv1.ServiceKey
	Winner types.NamespacedName
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
// into vs.Status from the problems Validate found and the conflicts. It
// reports whether Conflicted turned True.
func Apply(vs *lvsv1.VirtualService, problems []string, conflicts []Conflict) (becameConflicted bool) {
	st := &vs.Status
	gen := vs.Generation
	st.ObservedGeneration = gen
	st.Ports = PortSummary(vs.Spec.Ports)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) bool {
		return meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}

	wasConflicted := meta.IsStatusConditionTrue(st.Conditions, lvsv1.ConditionConflicted)
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
		msg := strings.Join(problems, "; ")
		set(lvsv1.ConditionAccepted, metav1.ConditionFalse, ReasonInvalidTargetPort, msg)
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonInvalidTargetPort, "not programmed: "+msg)
		set(lvsv1.ConditionReady, metav1.ConditionFalse, ReasonInvalidTargetPort, "not programmed: "+msg)
		st.Backends, st.ReadyBackends = nil, ""
		return false
	}
	set(lvsv1.ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, "the spec is valid")
	applyNodeReports(vs, set)
	return false
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
	return strings.Join(parts, "; ")
}

// applyNodeReports folds the agents' per-node reports into Programmed,
// Ready and the backend counts.
func applyNodeReports(vs *lvsv1.VirtualService, set func(t string, s metav1.ConditionStatus, reason, msg string) bool) {
	st := &vs.Status
	if len(st.Nodes) == 0 {
		set(lvsv1.ConditionProgrammed, metav1.ConditionUnknown, ReasonPending, "no node has reported yet")
		set(lvsv1.ConditionReady, metav1.ConditionUnknown, ReasonPending, "no node has reported yet")
		st.Backends, st.ReadyBackends = nil, ""
		return
	}
	var counts lvsv1.BackendCounts
	var failed, behind []string
	for _, n := range st.Nodes {
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
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonProgrammingFailed, strings.Join(failed, "; "))
	case len(behind) > 0:
		set(lvsv1.ConditionProgrammed, metav1.ConditionFalse, ReasonPending,
			fmt.Sprintf("%d of %d nodes have not programmed generation %d yet: %s", len(behind), len(st.Nodes), vs.Generation, strings.Join(behind, ", ")))
	default:
		set(lvsv1.ConditionProgrammed, metav1.ConditionTrue, ReasonProgrammed, fmt.Sprintf("programmed on %d nodes", len(st.Nodes)))
	}
	if counts.Ready > 0 {
		set(lvsv1.ConditionReady, metav1.ConditionTrue, ReasonBackendsReady, fmt.Sprintf("%d of %d backends ready", counts.Ready, counts.Total))
	} else {
		set(lvsv1.ConditionReady, metav1.ConditionFalse, ReasonNoReadyBackends, fmt.Sprintf("0 of %d backends ready", counts.Total))
	}
	st.Backends = &counts
	st.ReadyBackends = fmt.Sprintf("%d/%d", counts.Ready, counts.Total)
}
