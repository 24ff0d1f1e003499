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
	if kept := s.sh.vips.wanted(netip.Addr.Compare); !slices.Equal(vips, kept) {
		t.Fatalf("%s: kept VIPs %v, merged %v", step, kept, vips)
	}
	if kept := s.sh.wantedMembers(); !membersEqual(m, kept) {
		t.Fatalf("%s: kept members %v, merged %v", step, kept, m)
	}
	checkOff(t, &s.sh.vips, step+": VIPs")
	for l := range nLists {
		checkOff(t, &s.sh.members[l], fmt.Sprintf("%s: list %d", step, l))
	}
}

// checkOff checks that c records as differing from what is wanted exactly
// the entries whose presence differs from it.
func checkOff[T comparable](t *testing.T, c *counted[T], what string) {
	t.Helper()
	for e, n := range c.refs {
		if n <= 0 {
			t.Fatalf("%s: %v counted %d times", what, e, n)
		}
	}
	for e, held := range c.off {
		if held == c.wants(e) {
			t.Fatalf("%s: %v recorded as differing (written %v) where it does not", what, e, held)
		}
	}
}

// checkRecord checks that what the syncer records as written is what
// kubelvs0 and the ipsets hold, unless a failed write left it unknown.
func checkRecord(t *testing.T, n *node, s *Syncer, step string) {
	t.Helper()
	s.mu.Lock()
	vips, members := s.sh.vips.held(), sortMembers(s.sh.heldMembers())
	vipsUnknown, membersUnknown := s.vipsUnknown, s.membersUnknown
	s.mu.Unlock()
	slices.SortFunc(vips, netip.Addr.Compare)
	if got, _ := n.vips.ListAddresses(context.Background()); !vipsUnknown && !slices.Equal(got, vips) {
		t.Fatalf("%s: kubelvs0 holds %v, recorded as written %v", step, got, vips)
	}
	if got := sortMembers(n.members()); !membersUnknown && !membersEqual(got, members) {
		t.Fatalf("%s: the ipsets hold %v, recorded as written %v", step, got, members)
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
		checkRecord(t, n, s, fmt.Sprint("step ", step))
		s.mu.Lock()
		vips, members := s.sh.vips.wanted(netip.Addr.Compare), s.sh.wantedMembers()
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

// TestPreDiffIsTheWholeFormulasDifference: for shared states whose record
// of what was written differs from what is wanted in random places, and a
// random change, what tighten writes ahead of the change (preDiff, from the
// change and the recorded differences alone) is exactly the difference
// between what the ipsets hold and the "before" members computed from
// every member: masquerade, restricted and hairpin entries of both, next's
// allowed ranges and the held ranges of a VIP:port next no longer
// restricts.
func TestPreDiffIsTheWholeFormulasDifference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 15))
	var universe []ipset.Entry
	for ip := range 4 {
		for port := range 2 {
			e := ipset.Entry{IP: netip.AddrFrom4([4]byte{10, 96, 0, byte(ip + 1)}), Protocol: ipset.ProtoTCP, Port: uint16(80 + port)}
			universe = append(universe, e)
			for n := range 2 {
				ranged := e
				ranged.Net = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(n)}), 32)
				universe = append(universe, ranged)
			}
		}
	}
	for round := range 2000 {
		sh := newSharedState()
		var d memberDelta
		for l := range nLists {
			c := &sh.members[l]
			for _, e := range universe {
				if (l == listAllowed) != e.Net.IsValid() {
					continue
				}
				if n := r.IntN(3); n > 0 {
					c.refs[e] = n
				}
				if r.IntN(4) == 0 {
					c.set(e, !c.wants(e))
				}
				switch p := r.IntN(4); {
				case p == 0 && !c.wants(e):
					d.add[l] = append(d.add[l], e)
				case p == 0 && c.refs[e] == 1:
					d.del[l] = append(d.del[l], e)
				}
			}
			ipset.SortEntries(d.add[l])
			ipset.SortEntries(d.del[l])
		}
		held := sortMembers(sh.heldMembers())
		next := sh.wantedMembers()
		nl := lists(&next)
		for l := range nLists {
			*nl[l] = patch(*nl[l], d.add[l], d.del[l], ipset.Entry.Compare)
		}
		pre := netfilter.Members{
			Masquerade: union(held.Masquerade, next.Masquerade),
			Restricted: union(held.Restricted, next.Restricted),
			Allowed:    union(next.Allowed, lifted(held, next)),
			Hairpin:    union(held.Hairpin, next.Hairpin),
		}
		var wantAdd, wantDel netfilter.Members
		hl, pl, al, dl := lists(&held), lists(&pre), lists(&wantAdd), lists(&wantDel)
		for l := range nLists {
			*al[l], *dl[l] = diffSorted(*hl[l], *pl[l], ipset.Entry.Compare)
		}
		add, del := sh.preDiff(&d)
		if !membersEqual(add, wantAdd) || !membersEqual(del, wantDel) {
			t.Fatalf("round %d: preDiff adds %v and removes %v; the whole formula adds %v and removes %v", round, add, del, wantAdd, wantDel)
		}
	}
}
