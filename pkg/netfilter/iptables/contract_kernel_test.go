package iptables_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/ipset/ipsetnl"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
)

// TestKernelContract runs on the kernel the contract that netfiltertest's
// TestContract runs on the fake. Each subtest starts and ends without
// kubelvs's rules and sets (Rules.Cleanup, as `manager cleanup` does).
func TestKernelContract(t *testing.T) {
	kerneltest.Require(t)
	netfiltertest.Contract(t, netfiltertest.Harness{
		Open:        openRules,
		RemoveRules: removeRules,
		HasRules:    hasRules,
		Another:     anotherRules,
	})
}

// anotherRules opens a second Rules on the same kernel, which has read
// nothing of what the first wrote.
func anotherRules(t *testing.T, _ netfilter.Interface) netfilter.Interface {
	sets, err := ipsetnl.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sets.Close() })
	r, err := iptables.New(context.Background(), sets, iptables.ExecRunner{}, netfilter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openRules(t *testing.T) netfilter.Interface {
	ctx := context.Background()
	sets, err := ipsetnl.New()
	if err != nil {
		t.Fatal(err)
	}
	r, err := iptables.New(ctx, sets, iptables.ExecRunner{}, netfilter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Cleanup(ctx); err != nil {
			t.Errorf("clean up: %v", err)
		}
		sets.Close()
	})
	return r
}

var families = []netfilter.Family{netfilter.IPv4, netfilter.IPv6}

func tool(h netfilter.Interface, f netfilter.Family, what string) string {
	p := "iptables"
	if f == netfilter.IPv6 {
		p = "ip6tables"
	}
	return p + "-" + h.(*iptables.Rules).Mode() + "-" + what
}

func save(t *testing.T, h netfilter.Interface, f netfilter.Family) string {
	t.Helper()
	out, err := exec.Command(tool(h, f, "save")).Output()
	if err != nil {
		t.Fatalf("%s: %v", tool(h, f, "save"), err)
	}
	return string(out)
}

// removeRules deletes the jumps and the KUBELVS- chains, leaving the sets.
func removeRules(t *testing.T, h netfilter.Interface) {
	t.Helper()
	for _, f := range families {
		cmd := exec.Command(tool(h, f, "restore"), "--noflush")
		cmd.Stdin = strings.NewReader(netfilter.CleanupInput(save(t, h, f)))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", tool(h, f, "restore"), err, out)
		}
	}
}

// hasRules reports whether every rendered rule and each jump is in the
// saved tables of both families exactly once.
func hasRules(t *testing.T, h netfilter.Interface) bool {
	t.Helper()
	jumps := []string{"-A INPUT -j KUBELVS-INPUT", "-A PREROUTING -j KUBELVS-PREROUTING", "-A OUTPUT -j KUBELVS-OUTPUT", "-A POSTROUTING -j KUBELVS-POSTROUTING"}
	for _, f := range families {
		saved := save(t, h, f)
		want := jumps
		for _, lines := range netfilter.Render(f, netfilter.Config{MasqueradeMark: netfilter.DefaultMasqueradeMark}) {
			for _, l := range lines {
				if strings.HasPrefix(l, "-A ") {
					want = append(want, l)
				}
			}
		}
		for _, l := range want {
			if n := strings.Count(saved, l+"\n"); n != 1 {
				t.Logf("%s: %q %d times", tool(h, f, "save"), l, n)
				return false
			}
		}
	}
	return true
}
