package iptables

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
)

// fakeRunner serves canned iptables-save output and records restores.
type fakeRunner struct {
	saved    map[string]string
	restores []string
	calls    []string
}

func (f *fakeRunner) Run(stdin, name string, args ...string) (string, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if strings.HasSuffix(name, "-restore") {
		f.restores = append(f.restores, name+"\n"+stdin)
	}
	return f.saved[name], nil
}

func TestSyncFixesJumpsAndSkipsUnchanged(t *testing.T) {
	t.Parallel()
	run := &fakeRunner{saved: map[string]string{
		// INPUT lacks its jump, PREROUTING has it twice, others' rules stay.
		"iptables-legacy-save": "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n*nat\n" +
			"-A PREROUTING -j KUBELVS-PREROUTING\n-A PREROUTING -j KUBELVS-PREROUTING\n-A OUTPUT -j KUBELVS-OUTPUT\n-A POSTROUTING -j KUBELVS-POSTROUTING\nCOMMIT\n",
	}}
	sets := ipsettest.NewFake()
	r, err := New(sets, run, netfilter.Config{Mode: "legacy"}, netfilter.IPv4, netfilter.IPv6)
	if err != nil {
		t.Fatal(err)
	}
	wrote, err := r.SyncRules(false)
	if err != nil || !wrote {
		t.Fatalf("first sync wrote=%v err=%v", wrote, err)
	}
	if wrote, err := r.SyncRules(false); err != nil || wrote {
		t.Errorf("unchanged sync wrote=%v err=%v, want no write", wrote, err)
	}
	n := len(run.calls)
	if _, err := r.SyncRules(true); err != nil || len(run.calls) != n+4 {
		t.Errorf("forced sync: err=%v, %d calls, want save+restore per family", err, len(run.calls)-n)
	}
	golden.Assert(t, "restore.txt", strings.Join(run.restores[:2], "---\n"))
	golden.Assert(t, "sets.txt", sets.Dump())
}

func TestDetectMode(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		saved map[string]string
		want  string
	}{
		"legacy has rules": {map[string]string{"iptables-legacy-save": "-A INPUT -j X\n", "iptables-nft-save": "*filter\n"}, "legacy"},
		"nft has rules":    {map[string]string{"iptables-legacy-save": "", "ip6tables-nft-save": "-A INPUT -j X\n"}, "nft"},
		"empty: nft":       {map[string]string{}, "nft"},
	} {
		if got := DetectMode(&fakeRunner{saved: tc.saved}); got != tc.want {
			t.Errorf("%s: DetectMode = %s, want %s", name, got, tc.want)
		}
	}
}

func TestSyncMembersWritesOnlyDifferencesAndRereadsAfterForce(t *testing.T) {
	t.Parallel()
	sets := ipsettest.NewFake()
	r, err := New(sets, &fakeRunner{}, netfilter.Config{Mode: "legacy"}, netfilter.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SyncRules(false); err != nil {
		t.Fatal(err)
	}
	e1 := ipset.Entry{IP: netip.MustParseAddr("10.96.0.1"), Protocol: ipset.ProtoTCP, Port: 80}
	e2 := ipset.Entry{IP: netip.MustParseAddr("10.96.0.2"), Protocol: ipset.ProtoUDP, Port: 53}
	if err := r.SyncMembers(netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	// Someone deletes a member behind our back: the next ordinary sync
	// works from what it wrote (no kernel read per change) ...
	if err := sets.DelEntry("KUBELVS-MASQ", e1); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncMembers(netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sets.ListEntries("KUBELVS-MASQ"); len(got) != 1 {
		t.Fatalf("an unchanged sync read the kernel: %v", got)
	}
	// ... and the periodic forced resync repairs it.
	if _, err := r.SyncRules(true); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncMembers(netfilter.Members{Masquerade: []ipset.Entry{e1, e2}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := sets.ListEntries("KUBELVS-MASQ"); len(got) != 2 {
		t.Fatalf("after a forced resync the members are %v, want both", got)
	}
}
