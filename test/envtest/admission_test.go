package envtest

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/vsstatus"
)

// teamLabel marks the namespaces a test's pool admits.
const teamLabel = "test.kubelvs.io/team"

// labelNamespace sets (or, with value "", removes) a label of ns.
func labelNamespace(t *testing.T, ns, key, value string) {
	t.Helper()
	eventually(t, 10*time.Second, "label namespace "+ns, func() error {
		var n corev1.Namespace
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: ns}, &n); err != nil {
			return err
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if value == "" {
			delete(n.Labels, key)
		} else {
			n.Labels[key] = value
		}
		return k8s.Update(context.Background(), &n)
	})
}

// vsAt is a valid VirtualService of one address.
func vsAt(ns, name, addr string) *lvsv1.VirtualService {
	spec := validSpec()
	spec.Addresses = []lvsv1.IPAddress{lvsv1.IPAddress(addr)}
	return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
}

func acceptedMessage(t *testing.T, vs *lvsv1.VirtualService) string {
	t.Helper()
	return meta.FindStatusCondition(vs.Status.Conditions, lvsv1.ConditionAccepted).Message
}

// TestControllerAdmitsOnlyWhatAPoolAdmits: an address is accepted only if
// an AddressPool holds it and admits the VirtualService's namespace; a
// namespace relabelled, a pool narrowed or deleted withdraw that with a
// condition and an Event; a VirtualService that may not bind its address
// wins no conflict.
func TestControllerAdmitsOnlyWhatAPoolAdmits(t *testing.T) {
	ctx := context.Background()
	team := namespace(t, "adm-team")
	other := namespace(t, "adm-other")
	labelNamespace(t, team, teamLabel, team)

	pool := &lvsv1.AddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "admission-" + team},
		Spec: lvsv1.AddressPoolSpec{
			CIDRs:             []lvsv1.PoolCIDR{"203.0.113.0/28"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchLabels: map[string]lvsv1.LabelValue{teamLabel: lvsv1.LabelValue(team)}},
		},
	}
	if err := k8s.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pool) })

	// A namespace the pool does not admit: refused, with an Event.
	intruder := vsAt(other, "intruder", "203.0.113.3")
	if err := k8s.Create(ctx, intruder); err != nil {
		t.Fatal(err)
	}
	got := waitCondition(t, client.ObjectKeyFromObject(intruder), lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	if msg := acceptedMessage(t, got); !strings.Contains(msg, "AddressPool "+pool.Name+" holds it but does not admit namespace "+other) {
		t.Fatalf("Accepted message %q", msg)
	}
	waitCondition(t, client.ObjectKeyFromObject(intruder), lvsv1.ConditionProgrammed, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	if ev := waitEvent(t, other, "intruder", vsstatus.ReasonAddressNotAllowed); ev.Type != "Warning" {
		t.Fatalf("event type %q", ev.Type)
	}

	// The admitted namespace: accepted, although the older intruder claims
	// the same address and port (it is programmed nowhere, so it wins
	// nothing).
	nextSecond()
	web := vsAt(team, "web", "203.0.113.3")
	if err := k8s.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionConflicted, metav1.ConditionFalse, vsstatus.ReasonNoConflict)

	// An address no pool holds.
	outside := vsAt(team, "outside", "203.0.113.200")
	if err := k8s.Create(ctx, outside); err != nil {
		t.Fatal(err)
	}
	got = waitCondition(t, client.ObjectKeyFromObject(outside), lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	if msg := acceptedMessage(t, got); msg != "address 203.0.113.200: no AddressPool holds it" {
		t.Fatalf("Accepted message %q", msg)
	}

	// The pool narrowed: web's address avoided. Refused, with an Event.
	eventually(t, 10*time.Second, "narrow the pool", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
			return err
		}
		pool.Spec.Avoid = []lvsv1.AddressOrCIDR{"203.0.113.3"}
		return k8s.Update(ctx, pool)
	})
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	waitEvent(t, team, "web", vsstatus.ReasonAddressNotAllowed)
	// Widened again: accepted, and the intruder, now the older of two that
	// claim the key but still not admitted, changes nothing.
	eventually(t, 10*time.Second, "widen the pool", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
			return err
		}
		pool.Spec.Avoid = nil
		return k8s.Update(ctx, pool)
	})
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)

	// The other namespace labeled into the pool: the intruder, older,
	// now admitted, wins the key; web loses it.
	labelNamespace(t, other, teamLabel, team)
	waitCondition(t, client.ObjectKeyFromObject(intruder), lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionConflicted, metav1.ConditionTrue, vsstatus.ReasonConflicted)
	// And out again.
	labelNamespace(t, other, teamLabel, "")
	waitCondition(t, client.ObjectKeyFromObject(intruder), lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionAccepted, metav1.ConditionTrue, vsstatus.ReasonAccepted)

	// The pool deleted while in use: refused, with an Event.
	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatal(err)
	}
	got = waitCondition(t, client.ObjectKeyFromObject(web), lvsv1.ConditionAccepted, metav1.ConditionFalse, vsstatus.ReasonAddressNotAllowed)
	if msg := acceptedMessage(t, got); msg != "address 203.0.113.3: no AddressPool holds it" {
		t.Fatalf("Accepted message %q", msg)
	}
}
