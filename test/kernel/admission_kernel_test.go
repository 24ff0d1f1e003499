package kernel

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
)

// boundKernel lists what the kernel holds that could serve an address:
// IPVS virtual servers (ipvsadm -Sn), kubelvs0's addresses and the
// members of the KUBELVS- ipsets.
func boundKernel(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	out, err := exec.Command("ipvsadm", "-Sn").Output()
	if err != nil {
		t.Fatalf("ipvsadm -Sn: %v", err)
	}
	b.Write(out)
	if link, err := netlink.LinkByName("kubelvs0"); err == nil {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			b.WriteString("kubelvs0 " + a.IPNet.String() + "\n")
		}
	}
	out, err = exec.Command("ipset", "save").Output()
	if err != nil {
		t.Fatalf("ipset save: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "add KUBELVS") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestAgentBindsNoAddressNoPoolAdmits: the agent binary, against a real
// API server and kernel, programs nothing for a VirtualService whose
// address no AddressPool admits to its namespace, even with a forged
// Accepted condition, while it programs an admitted one beside it; and
// when the admitting pool is deleted, the admitted one is withdrawn too.
func TestAgentBindsNoAddressNoPoolAdmits(t *testing.T) {
	kerneltest.Require(t)
	ctx := context.Background()
	_, c, kc := apiServer(t)

	// A pool for namespace default only.
	pool := &lvsv1.AddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "default-only"},
		Spec: lvsv1.AddressPoolSpec{
			CIDRs: []lvsv1.PoolCIDR{"10.98.9.0/24"},
			NamespaceSelector: &lvsv1.LabelSelector{MatchExpressions: []lvsv1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: lvsv1.LabelSelectorOpIn, Values: []lvsv1.LabelValue{"default"},
			}}},
		},
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "intruders"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	vsAt := func(ns, name, addr string) *lvsv1.VirtualService {
		return &lvsv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: lvsv1.VirtualServiceSpec{
			Addresses: []lvsv1.IPAddress{lvsv1.IPAddress(addr)},
			Ports:     []lvsv1.VirtualServicePort{{Name: "http", Port: 80, Protocol: lvsv1.ProtocolTCP}},
			Scheduler: lvsv1.SchedulerRoundRobin,
			Backends:  lvsv1.Backends{Static: []lvsv1.StaticBackend{{Address: "10.235.0.1", Port: ptr.To[int32](8080)}}},
		}}
	}
	forged := []*lvsv1.VirtualService{
		vsAt("intruders", "pool-of-another-namespace", "10.98.9.1"), // held by the pool, not admitted
		vsAt("intruders", "in-no-pool", "10.98.10.1"),               // in no pool
		vsAt("default", "in-no-pool", "10.98.10.2"),                 // in no pool
	}
	for _, vs := range forged {
		if err := c.Create(ctx, vs); err != nil {
			t.Fatal(err)
		}
		// As if the controller had accepted it (a forged or stale status):
		// the agent must not care.
		vs.Status.Conditions = []metav1.Condition{
			{Type: lvsv1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted", Message: "forged", LastTransitionTime: metav1.Now(), ObservedGeneration: vs.Generation},
			{Type: lvsv1.ConditionProgrammed, Status: metav1.ConditionTrue, Reason: "Programmed", Message: "forged", LastTransitionTime: metav1.Now(), ObservedGeneration: vs.Generation},
		}
		if err := c.Status().Update(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	admitted := vsAt("default", "admitted", "10.98.9.2")
	if err := c.Create(ctx, admitted); err != nil {
		t.Fatal(err)
	}

	agent := startAgent(t, kc)
	defer agent.stop(t)
	// The admitted one is programmed: the agent has synced everything.
	waitFor(t, 60*time.Second, "the admitted VirtualService in IPVS and on kubelvs0", func() error {
		k := boundKernel(t)
		for _, want := range []string{"-A -t 10.98.9.2:80 -s rr", "kubelvs0 10.98.9.2/32"} {
			if !strings.Contains(k, want) {
				return &missing{want, k}
			}
		}
		return nil
	})
	k := boundKernel(t)
	for _, vs := range forged {
		if a := string(vs.Spec.Addresses[0]); strings.Contains(k, a) {
			t.Fatalf("the agent bound %s of %s/%s, which no pool admits:\n%s", a, vs.Namespace, vs.Name, k)
		}
	}
	t.Logf("bound, after the first sync:\n%s", k)

	// The pool deleted while in use: the admitted address is withdrawn.
	if err := c.Delete(ctx, pool); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "10.98.9.2 withdrawn after its pool was deleted", func() error {
		if k := boundKernel(t); strings.Contains(k, "10.98.9.2") {
			return &missing{"no 10.98.9.2", k}
		}
		return nil
	})
}

type missing struct{ want, have string }

func (m *missing) Error() string { return "want " + m.want + " in:\n" + m.have }
