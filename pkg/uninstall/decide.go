// Package uninstall tells a stopping agent whether kubelvs is being
// uninstalled, so that it removes what it made from the kernel, or merely
// restarted, upgraded or in trouble, so that the kernel stays as it is and
// traffic keeps flowing. Only a positive signal that the agent's own
// DaemonSet is being deleted counts; anything uncertain (an error, a
// Forbidden, a DaemonSet that replaced it) keeps the kernel.
package uninstall

import (
	"fmt"

	"k8s.io/apimachinery/pkg/types"
)

// Owner is the DaemonSet that controls the agent's pod, found at start.
type Owner struct {
	Namespace, Name string
	UID             types.UID
}

func (o Owner) String() string {
	return fmt.Sprintf("DaemonSet %s/%s (uid %s)", o.Namespace, o.Name, o.UID)
}

// Observation is what the agent's watch saw of its owner while it ran;
// events of another object under the owner's name (another UID) are not
// recorded.
type Observation struct {
	// Deleted: a DELETE event for the owner (or, after a missed watch
	// event, the owner missing from a relist).
	Deleted bool
	// Deleting: the owner with a deletionTimestamp (a foreground deletion
	// deletes the pods before the DaemonSet).
	Deleting bool
	// Orphaning: the owner being deleted with orphan propagation. Its pods
	// stay, and a replacing DaemonSet adopts them and rolls them (how a
	// DaemonSet's immutable selector is changed): not an uninstall, even
	// once the owner is gone.
	Orphaning bool
	// Replaced: another DaemonSet (another UID) now has the owner's name
	// (helm uninstall and install again, kubectl replace --force). Its pod
	// on this node adopts the kernel as it is; a cleanup would only cut
	// traffic until it has.
	Replaced bool
}

// Positive tells whether o is a positive signal of an uninstall.
func (o Observation) Positive() bool {
	return (o.Deleted || o.Deleting) && !o.Orphaning && !o.Replaced
}

// Check is the answer of one GET of the owner's name, made at stop when the
// watch saw nothing positive.
type Check struct {
	// Gone: the API server answered NotFound for that DaemonSet.
	Gone bool
	// Found: a DaemonSet of that name exists, with this UID, deletion
	// timestamp and orphan finalizer.
	Found     bool
	UID       types.UID
	Deleting  bool
	Orphaning bool
	// Err: no answer to rely on (Forbidden, Unauthorized, a timeout, a 404
	// that did not come from the API server).
	Err error
}

// Inputs is everything a stopping agent knows about its uninstall.
type Inputs struct {
	// Owner is nil when the agent's pod has no controlling DaemonSet, or
	// when it could not be read (OwnerErr).
	Owner    *Owner
	OwnerErr error
	Seen     Observation
	// Check is nil when no GET was made.
	Check *Check
}

// Reason names why a Decision was taken; it is logged.
type Reason string

// The reasons of a decision.
const (
	// Cleanup.
	ReasonDeleted  Reason = "DaemonSetDeleted"  // the watch saw the owner deleted
	ReasonDeleting Reason = "DaemonSetDeleting" // the owner has a deletionTimestamp
	ReasonGone     Reason = "DaemonSetNotFound" // the API server answered NotFound at stop

	// Keep.
	ReasonNoOwner     Reason = "NoOwner"      // the pod has no controlling DaemonSet
	ReasonOwnerError  Reason = "OwnerUnknown" // the pod could not be read
	ReasonOrphaned    Reason = "Orphaned"     // the owner is deleted with orphan propagation
	ReasonReplaced    Reason = "Replaced"     // a DaemonSet with another UID has the owner's name
	ReasonRunning     Reason = "Running"      // the owner exists and is not being deleted
	ReasonCheckFailed Reason = "CheckFailed"  // the GET at stop gave no answer to rely on
	ReasonNotChecked  Reason = "NotObserved"  // nothing positive seen and no GET made
)

// Decision is what a stopping agent does with the kernel.
type Decision struct {
	// Cleanup: remove every kernel object kubelvs made on the node.
	Cleanup bool
	Reason  Reason
	// Err is the error behind a decision to keep the kernel, if any.
	Err error
}

// Decide turns what the agent knows into a decision. It cleans up only on
// a positive signal about the owner the pod had at start: a deletion seen by
// the watch, a deletionTimestamp, or a NotFound from the API server, and
// only when no DaemonSet replaced it; every other case, errors included,
// keeps the kernel as it is.
func Decide(in Inputs) Decision {
	switch {
	case in.Owner == nil && in.OwnerErr != nil:
		return Decision{Reason: ReasonOwnerError, Err: in.OwnerErr}
	case in.Owner == nil:
		return Decision{Reason: ReasonNoOwner}
	case in.Seen.Orphaning:
		return Decision{Reason: ReasonOrphaned}
	case in.Seen.Replaced:
		return Decision{Reason: ReasonReplaced}
	case in.Seen.Deleted:
		return Decision{Cleanup: true, Reason: ReasonDeleted}
	case in.Seen.Deleting:
		return Decision{Cleanup: true, Reason: ReasonDeleting}
	}
	c := in.Check
	switch {
	case c == nil:
		return Decision{Reason: ReasonNotChecked}
	case c.Gone:
		return Decision{Cleanup: true, Reason: ReasonGone}
	case c.Found && c.UID != in.Owner.UID:
		return Decision{Reason: ReasonReplaced}
	case c.Found && c.Orphaning:
		return Decision{Reason: ReasonOrphaned}
	case c.Found && c.Deleting:
		return Decision{Cleanup: true, Reason: ReasonDeleting}
	case c.Found:
		return Decision{Reason: ReasonRunning}
	case c.Err != nil:
		return Decision{Reason: ReasonCheckFailed, Err: c.Err}
	default:
		return Decision{Reason: ReasonNotChecked}
	}
}
