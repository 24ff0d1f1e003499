package syncer

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// watchedWeights also sees weight changes: a draining real server put back
// to work takes new connections again.
type watchedWeights struct{ watchedIPVS }

func (w watchedWeights) UpdateRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	defer w.after("UpdateRealServer")
	return w.Fake.UpdateRealServer(ctx, k, rs)
}

// asLocal gives g the members desired.Build gives a VirtualService with
// trafficPolicy Local: a hairpin member per real server instead of the
// masquerade.
func asLocal(g desired.Group) desired.Group {
	g.Members.Masquerade = nil
	for _, svc := range g.Services {
		for _, r := range svc.Reals {
			e := ipset.Entry{IP: svc.Address, Protocol: uint8(svc.Protocol), Port: svc.Port, Net: netip.PrefixFrom(r.Address, r.Address.BitLen())}
			g.Members.Hairpin = append(g.Members.Hairpin, e)
		}
	}
	return g
}

// policyGroup is a group of the web ports on vip, with trafficPolicy
// Cluster or Local.
func policyGroup(vip string, local bool, reals ...string) desired.Group {
	g := grp("web", vip, web, reals...)
	if local {
		g = asLocal(g)
	}
	return g
}

// TestTrafficPolicyChangesNeverLeaveARealServerUnanswerable: as a
// VirtualService turns from trafficPolicy Cluster to Local and back, after
// every single kernel write, a real server that takes new connections
// (weight > 0) can answer them: one on another node only if its VIP:port is
// masqueraded, one on this node only if it is masqueraded or has its
// hairpin member (else, calling its own VIP, it would not be answered).
// After each change the members are exactly the new policy's.
func TestTrafficPolicyChangesNeverLeaveARealServerUnanswerable(t *testing.T) {
	ctx := context.Background()
	const vip = "10.96.0.9"
	onNode := map[netip.Addr]bool{netip.MustParseAddr("10.1.0.1"): true, netip.MustParseAddr("10.1.0.2"): true, netip.MustParseAddr("10.1.0.3"): true}
	n := newNode()
	checks := 0
	check := func(op string) {
		t.Helper()
		checks++
		m := n.members()
		for _, k := range web {
			k.Address = netip.MustParseAddr(vip)
			rs, err := n.ipvs.ListRealServers(ctx, k)
			if err != nil {
				continue // not there (yet, or any more)
			}
			e := ipset.Entry{IP: k.Address, Protocol: uint8(k.Protocol), Port: k.Port}
			masq := slices.Contains(m.Masquerade, e)
			for _, r := range rs {
				h := e
				h.Net = netip.PrefixFrom(r.Address, 32)
				switch {
				case r.Weight == 0 || masq:
				case !onNode[r.Address]:
					t.Errorf("after %s, %s takes connections to %s from another node unmasqueraded (members %v)", op, r, k, m)
				case !slices.Contains(m.Hairpin, h):
					t.Errorf("after %s, %s takes connections to %s without its hairpin member (members %v)", op, r, k, m)
				}
			}
		}
	}
	own, err := ownership.NewSetRecords(ctx, n.sets)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Kernel{
		IPVS: ownership.NewGuard(watchedWeights{watchedIPVS{n.ipvs, check}}, own), Owns: own.Owns,
		VIPs: watchedVIPs{n.vips, check}, Conntrack: n.ct,
		Netfilter: watchedNetfilter{n.nf, check},
	}, n.clock, nil)
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name string
		g    desired.Group
	}{
		{"Cluster", policyGroup(vip, false, "10.1.0.1:8080", "10.2.0.1:8080")},
		// The remote one drains (TCP) or goes (UDP); a second local one comes.
		{"Local", policyGroup(vip, true, "10.1.0.1:8080", "10.1.0.2:8080")},
		{"Local, one more on this node", policyGroup(vip, true, "10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080")},
		{"Local, one fewer", policyGroup(vip, true, "10.1.0.2:8080", "10.1.0.3:8080")},
		// The draining one is back at weight 1, another remote one comes.
		{"Cluster again", policyGroup(vip, false, "10.1.0.2:8080", "10.2.0.1:8080", "10.2.0.2:8080")},
		{"Local again", policyGroup(vip, true, "10.1.0.2:8080")},
	}
	for i, st := range steps {
		before := checks
		if i == 0 {
			_, err = s.SyncAll(ctx, []desired.Group{st.g})
		} else {
			_, err = s.SyncGroup(ctx, st.g)
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if checks == before {
			t.Fatalf("%s: no write was checked", st.name)
		}
		want := sortMembers(st.g.Members)
		if got := n.members(); !membersEqual(got, want) {
			t.Errorf("%s: members %v, want %v", st.name, got, want)
		}
	}
}
