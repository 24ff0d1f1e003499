package iptables_test

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/kerneltest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/iptables"
)

const (
	ok   = 5 * time.Second
	drop = 2 * time.Second // how long a dropped packet is waited for
)

// TestKernelTraffic sends real TCP and UDP traffic from client namespaces
// through VIPs on kubelvs0 to real servers in other namespaces. The real
// servers have no route back to the clients, so every answer proves the
// masquerade rule.
func TestKernelTraffic(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	d := kerneltest.NewDirector(ctx, t)
	inside := kerneltest.NewNS(t, 1, true)
	backend := kerneltest.NewNS(t, 2, false)
	outside := kerneltest.NewNS(t, 3, true)

	for _, v6 := range []bool{false, true} {
		vip, restricted := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11")
		if v6 {
			vip, restricted = netip.MustParseAddr("fd96::10"), netip.MustParseAddr("fd96::11")
		}
		be := netip.AddrPortFrom(backend.IP(v6), 8080)
		backend.Serve(t, "backend-"+be.String(), be)
		rs := []ipvs.RealServer{{Address: be.Addr(), Port: be.Port(), Weight: 1, Forwarding: ipvs.Masquerade}}
		d.Program(ctx, t,
			kerneltest.Service{VS: ipvs.VirtualServer{Address: vip, Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}, RealServers: rs},
			kerneltest.Service{VS: ipvs.VirtualServer{Address: vip, Protocol: ipvs.UDP, Port: 53, Scheduler: "wrr"}, RealServers: rs},
			kerneltest.Service{VS: ipvs.VirtualServer{Address: restricted, Protocol: ipvs.TCP, Port: 80, Scheduler: "rr"}, RealServers: rs,
				SourceRanges: []netip.Prefix{netip.PrefixFrom(inside.IP(v6), inside.IP(v6).BitLen()-8).Masked()}},
		)
		want := "backend-" + be.String()

		t.Run(vip.String()+"/TCP", func(t *testing.T) {
			if got, err := inside.TCPGet(netip.AddrPortFrom(vip, 80), ok); err != nil || got != want {
				t.Errorf("TCP through %s: got %q, %v; want %q", vip, got, err, want)
			}
		})
		t.Run(vip.String()+"/UDP", func(t *testing.T) {
			c := inside.UDPClient(t, v6, 0)
			if got, err := c.Ask(netip.AddrPortFrom(vip, 53), ok); err != nil || got != want {
				t.Errorf("UDP through %s: got %q, %v; want %q", vip, got, err, want)
			}
		})
		t.Run(vip.String()+"/without-masquerade-member", func(t *testing.T) {
			// Negative control: without the ipset member no masquerade, and
			// the real server cannot answer.
			set := netfilter.Sets(netfilter.IPv4).Masquerade
			if v6 {
				set = netfilter.Sets(netfilter.IPv6).Masquerade
			}
			e := ipset.Entry{IP: vip, Protocol: ipset.ProtoTCP, Port: 80}
			if err := d.Sets.DelEntry(ctx, set, e); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = d.Sets.AddEntry(ctx, set, e) }()
			if got, err := inside.TCPGet(netip.AddrPortFrom(vip, 80), drop); err == nil {
				t.Errorf("answered %q without masquerade: the test does not prove the rule", got)
			}
		})
		t.Run(restricted.String()+"/sourceRanges", func(t *testing.T) {
			if got, err := inside.TCPGet(netip.AddrPortFrom(restricted, 80), ok); err != nil || got != want {
				t.Errorf("client inside the range: got %q, %v; want %q", got, err, want)
			}
			got, err := outside.TCPGet(netip.AddrPortFrom(restricted, 80), drop)
			if err == nil {
				t.Errorf("client outside the range was served %q", got)
			} else if !kerneltest.IsTimeout(err) {
				t.Errorf("client outside the range: %v, want a silent drop (timeout)", err)
			}
			// The unrestricted VIP still serves the outside client.
			if got, err := outside.TCPGet(netip.AddrPortFrom(vip, 80), ok); err != nil || got != want {
				t.Errorf("outside client, unrestricted VIP: got %q, %v", got, err)
			}
		})
	}
}

// TestKernelRulesIdempotent checks, in the iptables mode the node uses
// and in the other one where the kernel takes it, that syncs over rules
// in place write nothing and leave each jump once and our rules alone.
func TestKernelRulesIdempotent(t *testing.T) {
	ctx := context.Background()
	kerneltest.Require(t)
	d := kerneltest.NewDirector(ctx, t)
	t.Logf("iptables mode %s (detected)", d.Rules.Mode())
	checkIdempotent(ctx, t, d.Rules)
	// The other backend too where the kernel has it (nf_tables: the QEMU
	// guest, not UML): Holds compares the text each one's save prints.
	other := map[string]string{"legacy": "nft", "nft": "legacy"}[d.Rules.Mode()]
	if out, err := exec.Command("iptables-"+other, "-w", "5", "-t", "filter", "-N", "KUBELVS-PROBE").CombinedOutput(); err != nil {
		t.Logf("iptables mode %s not checked: this kernel does not take it: %v: %s", other, err, out)
		return
	}
	if out, err := exec.Command("iptables-"+other, "-w", "5", "-t", "filter", "-X", "KUBELVS-PROBE").CombinedOutput(); err != nil {
		t.Fatalf("iptables-%s -X: %v: %s", other, err, out)
	}
	r, err := iptables.New(ctx, d.Sets, iptables.ExecRunner{}, netfilter.Config{Mode: other})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Our rules of that mode go; the ipsets stay for the director's.
		for _, tool := range []string{"iptables", "ip6tables"} {
			saved, err := exec.Command(tool + "-" + other + "-save").Output()
			if err != nil {
				t.Errorf("%s-%s-save: %v", tool, other, err)
				continue
			}
			restore := exec.Command(tool+"-"+other+"-restore", "--noflush", "-w", "5")
			restore.Stdin = strings.NewReader(netfilter.CleanupInput(string(saved)))
			if out, err := restore.CombinedOutput(); err != nil {
				t.Errorf("%s-%s-restore: %v: %s", tool, other, err, out)
			}
		}
	})
	if wrote, err := r.SyncRules(ctx, true); err != nil || !wrote {
		t.Fatalf("first sync in %s mode: wrote=%v err=%v", other, wrote, err)
	}
	t.Logf("iptables mode %s", r.Mode())
	checkIdempotent(ctx, t, r)
}

// checkIdempotent syncs r again and again over its own rules and checks
// that it writes nothing, that each jump exists exactly once and that
// the KUBELVS- chains hold only their rules.
func checkIdempotent(ctx context.Context, t *testing.T, r *iptables.Rules) {
	t.Helper()
	for i := 0; i < 3; i++ {
		wrote, err := r.SyncRules(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		// What this mode's save prints is what we render (netfilter.Holds
		// compares text): a forced sync over rules in place writes
		// nothing, in legacy and in nft mode alike.
		if wrote {
			t.Errorf("forced sync %d over rules in place (%s mode) rewrote them", i+1, r.Mode())
		}
	}
	if wrote, err := r.SyncRules(ctx, false); err != nil || wrote {
		t.Errorf("unchanged sync: wrote=%v err=%v", wrote, err)
	}
	want := 0 // the rules Render gives one family, each once
	for _, chain := range netfilter.Render(netfilter.IPv4, netfilter.Config{MasqueradeMark: netfilter.DefaultMasqueradeMark}) {
		for _, l := range chain {
			if strings.HasPrefix(l, "-A KUBELVS-") {
				want++
			}
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(tool + "-" + r.Mode() + "-save").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range []string{"-A INPUT -j KUBELVS-INPUT", "-A PREROUTING -j KUBELVS-PREROUTING", "-A OUTPUT -j KUBELVS-OUTPUT", "-A POSTROUTING -j KUBELVS-POSTROUTING"} {
			if n := strings.Count(string(out), j+"\n"); n != 1 {
				t.Errorf("%s: %q appears %d times, want 1", tool, j, n)
			}
		}
		if n := strings.Count(string(out), "-A KUBELVS-"); n != want {
			t.Errorf("%s: %d rules in KUBELVS- chains, want %d:\n%s", tool, n, want, out)
		}
	}
}
