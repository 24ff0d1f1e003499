package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
)

// vipUpdates and memberUpdates record what each update of the shared
// state was given, for tests to compare with the change alone.
type vipUpdates struct {
	*netiftest.Fake
	adds, dels [][]netip.Addr
}

func (v *vipUpdates) UpdateAddresses(ctx context.Context, add, del []netip.Addr) error {
	v.adds, v.dels = append(v.adds, add), append(v.dels, del)
	return v.Fake.UpdateAddresses(ctx, add, del)
}

type memberUpdates struct {
	*netfiltertest.Fake
	adds, dels []netfilter.Members
}

func (m *memberUpdates) UpdateMembers(ctx context.Context, add, del netfilter.Members) error {
	m.adds, m.dels = append(m.adds, add), append(m.dels, del)
	return m.Fake.UpdateMembers(ctx, add, del)
}

// updateNode is a node whose shared-state writers record their updates,
// with a syncer that has fully synced n groups, each with its own VIP.
func updateNode(t *testing.T, n int) (*node, *vipUpdates, *memberUpdates, *Syncer, []desired.Group) {
	t.Helper()
	ctx := context.Background()
	nd := newNode()
	vu, mu := &vipUpdates{Fake: nd.vips}, &memberUpdates{Fake: nd.nf}
	s := New(Kernel{IPVS: nd.ipvs, Owns: func(ipvs.Key) bool { return true }, VIPs: vu, Conntrack: nd.ct, Netfilter: mu}, nd.clock, nil)
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	var gs []desired.Group
	for i := range n {
		vip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		gs = append(gs, grp(fmt.Sprint("vs", i), vip, []ipvs.Key{key(vip, ipvs.TCP, 80)}, "10.1.0.1:8080"))
	}
	if _, err := s.SyncAll(ctx, gs); err != nil {
		t.Fatal(err)
	}
	return nd, vu, mu, s, gs
}

// expectKernel checks that kubelvs0 and the ipsets hold what the groups
// want.
func expectKernel(t *testing.T, n *node, gs ...desired.Group) {
	t.Helper()
	var vips []netip.Addr
	var m netfilter.Members
	for _, g := range gs {
		vips = append(vips, g.VIPs...)
		m = appendMembers(m, g.Members)
	}
	vips = distinct(vips, netip.Addr.Compare)
	if got, _ := n.vips.ListAddresses(context.Background()); !slices.Equal(got, vips) {
		t.Fatalf("kubelvs0 holds %d VIPs, want %d", len(got), len(vips))
	}
	if got := sortMembers(n.members()); !membersEqual(got, sortMembers(m)) {
		t.Fatalf("the ipsets hold %v, want %v", got, sortMembers(m))
	}
}

// TestChangeWritesItsOwnSharedEntries: once a full sync has compared the
// shared state with the kernel, a VirtualService created among many, its
// ranges changed and then deleted are each written as their own VIP and
// ipset members (UpdateAddresses, UpdateMembers), never as every VIP and
// member of the node.
func TestChangeWritesItsOwnSharedEntries(t *testing.T) {
	ctx := context.Background()
	n, vu, mu, s, gs := updateNode(t, 300)
	if n.vips.Calls("SyncAddresses") != 1 || n.nf.Calls("SyncMembers") == 0 {
		t.Fatalf("the first full sync wrote the VIPs %d times and the members %d times, want whole writes",
			n.vips.Calls("SyncAddresses"), n.nf.Calls("SyncMembers"))
	}
	syncs := func() int { return n.vips.Calls("SyncAddresses") + n.nf.Calls("SyncMembers") }
	before := syncs()
	a, b := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")
	vip := netip.MustParseAddr("10.97.0.1")
	k := key(vip.String(), ipvs.TCP, 80)
	e := ipset.Entry{IP: vip, Protocol: ipset.ProtoTCP, Port: 80}
	ranged := func(p netip.Prefix) ipset.Entry { x := e; x.Net = p; return x }
	r := restricted("r", vip.String(), k, a)
	r.Members.Masquerade = []ipset.Entry{e}

	// Create: the VIP and the members of r, nothing else. Its members go
	// in one update, before its virtual server (tighten); syncShared then
	// finds them written.
	if _, err := s.SyncGroup(ctx, r); err != nil {
		t.Fatal(err)
	}
	if len(vu.adds) != 1 || !slices.Equal(vu.adds[0], []netip.Addr{vip}) || len(vu.dels[0]) != 0 {
		t.Fatalf("VIP updates on create: add %v, del %v; want one adding %s", vu.adds, vu.dels, vip)
	}
	want := netfilter.Members{Masquerade: []ipset.Entry{e}, Restricted: []ipset.Entry{e}, Allowed: []ipset.Entry{ranged(a)}}
	if len(mu.adds) != 1 || !membersEqual(mu.adds[0], want) || !membersEqual(mu.dels[0], netfilter.Members{}) {
		t.Fatalf("member updates on create: add %v, del %v; want one adding %v", mu.adds, mu.dels, want)
	}
	expectKernel(t, n, append(slices.Clone(gs), r)...)

	// Its ranges move from a to b: b is added and a removed in the one
	// update before the IPVS writes; the VIPs do not change.
	r2 := restricted("r", vip.String(), k, b)
	r2.Members.Masquerade = []ipset.Entry{e}
	if _, err := s.SyncGroup(ctx, r2); err != nil {
		t.Fatal(err)
	}
	if len(vu.adds) != 1 {
		t.Fatalf("VIPs updated on a change of ranges: add %v, del %v", vu.adds[1:], vu.dels[1:])
	}
	if len(mu.adds) != 2 || !membersEqual(mu.adds[1], netfilter.Members{Allowed: []ipset.Entry{ranged(b)}}) ||
		!membersEqual(mu.dels[1], netfilter.Members{Allowed: []ipset.Entry{ranged(a)}}) {
		t.Fatalf("member updates on a change of ranges: add %v, del %v; want one adding b and removing a", mu.adds[1:], mu.dels[1:])
	}
	expectKernel(t, n, append(slices.Clone(gs), r2)...)

	// Delete: the VIP, then the members, after the virtual server.
	if _, err := s.RemoveGroup(ctx, types.NamespacedName{Namespace: "ns", Name: "r"}); err != nil {
		t.Fatal(err)
	}
	if len(vu.adds) != 2 || len(vu.adds[1]) != 0 || !slices.Equal(vu.dels[1], []netip.Addr{vip}) {
		t.Fatalf("VIP updates on delete: add %v, del %v; want one removing %s", vu.adds[1:], vu.dels[1:], vip)
	}
	want = netfilter.Members{Masquerade: []ipset.Entry{e}, Restricted: []ipset.Entry{e}, Allowed: []ipset.Entry{ranged(b)}}
	if len(mu.adds) != 3 || !membersEqual(mu.adds[2], netfilter.Members{}) || !membersEqual(mu.dels[2], want) {
		t.Fatalf("member updates on delete: add %v, del %v; want one removing %v", mu.adds[2:], mu.dels[2:], want)
	}
	expectKernel(t, n, gs...)
	if got := syncs() - before; got != 0 {
		t.Errorf("%d whole writes of the VIPs or members for a create, a change and a delete, want none", got)
	}
}

// TestFailedUpdateIsFollowedByAWholeWrite: after an update of the VIPs or
// members fails, the kernel may hold part of it, so the next write is
// whole (its writer compares with the kernel), and then updates resume.
func TestFailedUpdateIsFollowedByAWholeWrite(t *testing.T) {
	ctx := context.Background()
	n, _, _, s, gs := updateNode(t, 20)
	extra := func(i int) desired.Group {
		vip := fmt.Sprintf("10.97.0.%d", i)
		return grp(fmt.Sprint("extra", i), vip, []ipvs.Key{key(vip, ipvs.TCP, 80)}, "10.1.0.1:8080")
	}
	for _, c := range []struct {
		fail   *netiftest.Fake
		failNF *netfiltertest.Fake
		op     string
		whole  func() int
	}{
		{fail: n.vips, op: "UpdateAddresses", whole: func() int { return n.vips.Calls("SyncAddresses") }},
		{failNF: n.nf, op: "UpdateMembers", whole: func() int { return n.nf.Calls("SyncMembers") }},
	} {
		t.Run(c.op, func(t *testing.T) {
			failed := extra(len(gs))
			if c.fail != nil {
				c.fail.FailNext(c.op, errors.New("no buffer space"))
			} else {
				c.failNF.FailNext(c.op, errors.New("no buffer space"))
			}
			if _, err := s.SyncGroup(ctx, failed); err == nil {
				t.Fatalf("SyncGroup with a failing %s succeeded", c.op)
			}
			whole, updates := c.whole(), n.vips.Calls("UpdateAddresses")+n.nf.Calls("UpdateMembers")
			next := extra(len(gs) + 1)
			if _, err := s.SyncGroup(ctx, failed); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SyncGroup(ctx, next); err != nil {
				t.Fatal(err)
			}
			if got := c.whole() - whole; got != 1 {
				t.Errorf("%d whole writes after the failed %s, want 1", got, c.op)
			}
			if n.vips.Calls("UpdateAddresses")+n.nf.Calls("UpdateMembers") == updates {
				t.Errorf("no update after the whole write")
			}
			gs = append(gs, failed, next)
			expectKernel(t, n, gs...)
		})
	}
}
