package syncer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
)

// checkShared compares the shared state the syncer keeps as groups change
// with a merge of every group, as it was computed before it was kept.
func checkShared(t *testing.T, s *Syncer, step string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	vipSet := map[netip.Addr]bool{}
	var m netfilter.Members
	for _, g := range s.groups {
		for _, v := range g.vips {
			vipSet[v] = true
		}
		m = appendMembers(m, g.members)
	}
	m = sortMembers(m)
	var vips []netip.Addr
	for v := range vipSet {
		vips = append(vips, v)
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	if !slices.Equal(vips, s.sh.vips) || len(s.sh.vipRefs) != len(vips) {
		t.Fatalf("%s: kept VIPs %v (%d counted), merged %v", step, s.sh.vips, len(s.sh.vipRefs), vips)
	}
	if !membersEqual(m, s.sh.members) {
		t.Fatalf("%s: kept members %v, merged %v", step, s.sh.members, m)
	}
	ml := lists(&m)
	for l := range nLists {
		if len(s.sh.memberRefs[l]) != len(*ml[l]) {
			t.Fatalf("%s: list %d: %d members counted, %d merged", step, l, len(s.sh.memberRefs[l]), len(*ml[l]))
		}
	}
}

// TestSharedStateKeptAsGroupsChange: groups that share VIPs and members (a
// VIP:port claimed by two, lists unsorted and with duplicates), created,
// changed, deleted, held and fully synced in random order: what the syncer
// keeps is always the merge of every group, and the kernel holds it.
func TestSharedStateKeptAsGroupsChange(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(15, 15))
	n := newNode()
	s := n.syncer(t)
	mk := func(i int) desired.Group {
		vip := fmt.Sprintf("10.96.0.%d", 1+r.IntN(6))
		port := key(vip, ipvs.TCP, uint16(80+r.IntN(2)))
		var g desired.Group
		if r.IntN(3) == 0 {
			g = restricted(fmt.Sprint("g", i), vip, port, netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", r.IntN(4))), netip.MustParsePrefix("198.51.100.0/24"))
		} else {
			g = grp(fmt.Sprint("g", i), vip, []ipvs.Key{port}, "10.1.0.1:8080")
		}
		if r.IntN(2) == 0 {
			g.VIPs = append(g.VIPs, netip.MustParseAddr(fmt.Sprintf("10.96.1.%d", r.IntN(3))), g.VIPs[0])
			g.Members.Hairpin = append(g.Members.Hairpin,
				ipset.Entry{IP: g.VIPs[0], Protocol: ipset.ProtoTCP, Port: port.Port, Net: netip.MustParsePrefix("10.1.0.1/32")},
				ipset.Entry{IP: g.VIPs[0], Protocol: ipset.ProtoTCP, Port: port.Port, Net: netip.MustParsePrefix("10.1.0.0/32")})
			slices.Reverse(g.Members.Hairpin)
		}
		return g
	}
	current := map[int]desired.Group{}
	all := func() []desired.Group {
		var gs []desired.Group
		for i := range 8 {
			if g, ok := current[i]; ok {
				gs = append(gs, g)
			}
		}
		return gs
	}
	for step := range 400 {
		i := r.IntN(8)
		var err error
		switch op := r.IntN(10); {
		case op < 5:
			current[i] = mk(i)
			_, err = s.SyncGroup(ctx, current[i])
		case op < 7:
			delete(current, i)
			_, err = s.RemoveGroup(ctx, grp(fmt.Sprint("g", i), "10.96.0.1", nil).Name)
		case op < 8:
			if g, ok := current[i]; ok {
				_, err = s.SyncGroup(ctx, hold(g))
			}
		case op < 9:
			_, err = s.SyncAll(ctx, all())
		default:
			_, err = s.Verify(ctx)
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		checkShared(t, s, fmt.Sprint("step ", step))
		s.mu.Lock()
		vips, members := s.sh.vips, s.sh.members
		dirty := s.sharedDirty
		s.mu.Unlock()
		if dirty {
			continue
		}
		if got, _ := n.vips.ListAddresses(ctx); !slices.Equal(got, vips) {
			t.Fatalf("step %d: kubelvs0 holds %v, want %v", step, got, vips)
		}
		if got := n.members(); !membersEqual(sortMembers(got), members) {
			t.Fatalf("step %d: ipsets hold %v, want %v", step, got, members)
		}
	}
}

// blockingVIPs blocks the first ListAddresses after arm until release is
// closed, telling entered when it got there.
type blockingVIPs struct {
	*netiftest.Fake
	armed            chan struct{}
	entered, release chan struct{}
}

func (b *blockingVIPs) ListAddresses(ctx context.Context) ([]netip.Addr, error) {
	select {
	case <-b.armed:
		b.armed = make(chan struct{}) // once
		close(b.entered)
		<-b.release
	default:
	}
	return b.Fake.ListAddresses(ctx)
}

// TestVerifyComparesSharedStateWithoutTheLock: while Verify compares the
// VIPs on kubelvs0 with what the syncer wrote, a VirtualService is created
// (a new VIP and ipset member) and completes; Verify then neither undoes it
// nor misses the drift it was there to repair.
func TestVerifyComparesSharedStateWithoutTheLock(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	bv := &blockingVIPs{Fake: n.vips, armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	s := New(Kernel{IPVS: n.ipvs, Owns: func(ipvs.Key) bool { return true }, VIPs: bv, Netfilter: n.nf}, n.clock, nil)
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	a := grp("a", "10.96.0.1", []ipvs.Key{key("10.96.0.1", ipvs.TCP, 80)}, "10.1.0.1:8080")
	c := grp("c", "10.96.0.3", []ipvs.Key{key("10.96.0.3", ipvs.TCP, 80)}, "10.1.0.3:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{a, c}); err != nil {
		t.Fatal(err)
	}
	// Drift: someone removes c's VIP by hand.
	if err := n.vips.SyncAddresses(ctx, []netip.Addr{netip.MustParseAddr("10.96.0.1")}); err != nil {
		t.Fatal(err)
	}
	b := grp("b", "10.96.0.2", []ipvs.Key{key("10.96.0.2", ipvs.TCP, 80)}, "10.1.0.2:8080")
	close(bv.armed)
	created := make(chan error, 1)
	go func() {
		<-bv.entered
		_, err := s.SyncGroup(ctx, b)
		created <- err
	}()
	verified := make(chan error, 1)
	go func() {
		_, err := s.Verify(ctx)
		verified <- err
	}()
	select {
	case err := <-created:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(bv.release)
		t.Fatal("the create waited for Verify's comparison")
	}
	close(bv.release)
	if err := <-verified; err != nil {
		t.Fatal(err)
	}
	got, _ := n.vips.ListAddresses(ctx)
	if want := []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2"), netip.MustParseAddr("10.96.0.3")}; !slices.Equal(got, want) {
		t.Fatalf("kubelvs0 holds %v after Verify, want %v (the create kept, the drift repaired)", got, want)
	}
	if m := n.members().Masquerade; len(m) != 3 || m[1].IP != netip.MustParseAddr("10.96.0.2") {
		t.Fatalf("masquerade members %v, want those of a, b and c", m)
	}
}
