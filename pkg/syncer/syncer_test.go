package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubelvs/kubelvs/internal/golden"
	"github.com/kubelvs/kubelvs/pkg/conntrack"
	"github.com/kubelvs/kubelvs/pkg/conntrack/conntracktest"
	"github.com/kubelvs/kubelvs/pkg/desired"
	"github.com/kubelvs/kubelvs/pkg/ipset"
	"github.com/kubelvs/kubelvs/pkg/ipset/ipsettest"
	"github.com/kubelvs/kubelvs/pkg/ipvs"
	"github.com/kubelvs/kubelvs/pkg/ipvs/ipvstest"
	"github.com/kubelvs/kubelvs/pkg/netfilter"
	"github.com/kubelvs/kubelvs/pkg/netfilter/netfiltertest"
	"github.com/kubelvs/kubelvs/pkg/netif/netiftest"
	"github.com/kubelvs/kubelvs/pkg/ownership"
)

// node is a fake kernel: IPVS behind the ownership guard, ipsets, kubelvs0,
// conntrack and the netfilter members.
type node struct {
	ipvs  *ipvstest.Fake
	sets  *ipsettest.Fake
	vips  *netiftest.Fake
	ct    *conntracktest.Fake
	nf    *netfiltertest.Fake
	clock *clocktesting.FakeClock
}

// members is what the node's ipsets hold.
func (n *node) members() netfilter.Members { return n.nf.Members() }

func newNode() *node {
	return &node{ipvs: ipvstest.NewFake(), sets: ipsettest.NewFake(), vips: netiftest.NewFake(), ct: conntracktest.NewFake(), nf: netfiltertest.NewFake(netfilter.Config{}),
		clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
}

// syncer starts an agent on the node: a new Syncer that adopts what it finds.
func (n *node) syncer(t *testing.T) *Syncer {
	t.Helper()
	return n.syncerOver(t, n.ipvs)
}

// syncerOver is syncer with the IPVS calls going through raw (a wrapper of
// the node's fake).
func (n *node) syncerOver(t *testing.T, raw ipvs.Interface) *Syncer {
	ctx := context.Background()
	t.Helper()
	own, err := ownership.NewSetRecords(ctx, n.sets)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Kernel{
		IPVS: ownership.NewGuard(raw, own), Owns: own.Owns, VIPs: n.vips, Conntrack: n.ct,
		Netfilter: n.nf,
	}, n.clock, nil)
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkCounts(t, s) })
	return s
}

// checkCounts compares the totals the syncer keeps as it goes with a count
// of everything it remembers.
func checkCounts(t *testing.T, s *Syncer) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	reals, draining, withDrain := 0, 0, 0
	for k, svc := range s.services {
		reals += len(svc.reals)
		draining += len(svc.draining)
		if len(svc.draining) > 0 {
			withDrain++
			if s.drainSet[k] != svc {
				t.Errorf("%s has draining real servers but is not in the drain set", k)
			}
		}
	}
	if reals != s.nReals || draining != s.nDraining || withDrain != len(s.drainSet) {
		t.Errorf("kept totals: %d real servers, %d draining, %d services draining; counted: %d, %d, %d",
			s.nReals, s.nDraining, len(s.drainSet), reals, draining, withDrain)
	}
}

// writes counts the IPVS writes the fake saw.
func (n *node) writes() int {
	w := 0
	for _, op := range []string{"AddVirtualServer", "UpdateVirtualServer", "DeleteVirtualServer", "AddRealServer", "UpdateRealServer", "DeleteRealServer"} {
		w += n.ipvs.Calls(op)
	}
	return w
}

func (n *node) dump() string {
	var b strings.Builder
	b.WriteString("# ipvs\n" + n.ipvs.Dump())
	b.WriteString("# kubelvs0\n" + n.vips.Dump())
	b.WriteString("# masquerade\n")
	for _, e := range n.members().Masquerade {
		fmt.Fprintf(&b, "%s\n", e)
	}
	b.WriteString("# conntrack\n" + n.ct.Dump())
	return b.String()
}

func key(vip string, proto ipvs.Protocol, port uint16) ipvs.Key {
	return ipvs.Key{Address: netip.MustParseAddr(vip), Protocol: proto, Port: port}
}

// grp builds a group: one virtual server per port on vip, the same real
// servers (address:port) on each.
func grp(name, vip string, ports []ipvs.Key, reals ...string) desired.Group {
	g := desired.Group{Name: types.NamespacedName{Namespace: "ns", Name: name}, Selected: true, DrainTimeout: 30 * time.Second}
	for _, p := range ports {
		svc := desired.Service{VirtualServer: ipvs.VirtualServer{Address: netip.MustParseAddr(vip), Protocol: p.Protocol, Port: p.Port, Scheduler: "rr"}}
		for _, r := range reals {
			ap := netip.MustParseAddrPort(r)
			svc.Reals = append(svc.Reals, desired.Real{RealServer: ipvs.RealServer{Address: ap.Addr(), Port: ap.Port(), Weight: 1}})
		}
		g.Services = append(g.Services, svc)
		g.Members.Masquerade = append(g.Members.Masquerade, ipset.Entry{IP: svc.Address, Protocol: uint8(p.Protocol), Port: p.Port})
	}
	g.VIPs = []netip.Addr{netip.MustParseAddr(vip)}
	return g
}

var web = []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}, {Protocol: ipvs.UDP, Port: 53}}

func TestSyncDrainFlushAndRestart(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	// A service someone else made (kube-proxy, keepalived...): never touched.
	foreign := ipvs.VirtualServer{Address: netip.MustParseAddr("10.96.0.1"), Protocol: ipvs.TCP, Port: 443, Scheduler: "wlc"}
	if err := n.ipvs.AddVirtualServer(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	s := n.syncer(t)

	g := grp("web", "10.96.0.10", web, "10.1.0.1:8080", "10.1.0.2:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{g}); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "1-programmed"+".golden", n.dump())

	// Nothing changed: no kernel writes at all.
	before := n.writes()
	if r, err := s.SyncGroup(ctx, g); err != nil || r.Ops != 0 || n.writes() != before {
		t.Fatalf("an unchanged group wrote: %+v %v (%d writes)", r, err, n.writes()-before)
	}

	// UDP flows of 10.1.0.2 exist; it leaves the EndpointSlice.
	vip := netip.MustParseAddrPort("10.96.0.10:53")
	n.ct.Add(
		conntrack.Flow{Protocol: conntrack.UDP, OrigSrc: netip.MustParseAddrPort("10.0.0.5:40000"), OrigDst: vip,
			ReplySrc: netip.MustParseAddrPort("10.1.0.2:8080"), ReplyDst: netip.MustParseAddrPort("10.0.0.5:40000")},
		conntrack.Flow{Protocol: conntrack.UDP, OrigSrc: netip.MustParseAddrPort("10.0.0.6:40000"), OrigDst: vip,
			ReplySrc: netip.MustParseAddrPort("10.1.0.1:8080"), ReplyDst: netip.MustParseAddrPort("10.0.0.6:40000")},
	)
	if err := n.ipvs.SetConns(key("10.96.0.10", ipvs.TCP, 80), ipvs.RealKey{Address: netip.MustParseAddr("10.1.0.2"), Port: 8080}, 1, 0); err != nil {
		t.Fatal(err)
	}
	g = grp("web", "10.96.0.10", web, "10.1.0.1:8080")
	before = n.writes()
	r, err := s.SyncGroup(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 2 || n.writes()-before != 2 || r.Draining != 1 {
		t.Fatalf("removing one endpoint: %+v, %d writes; want 2 (TCP to weight 0, UDP deleted) and 1 draining", r, n.writes()-before)
	}
	if deleted := s.FlushNow(ctx); deleted != 1 {
		t.Fatalf("flushed %d flows, want the 1 of the removed UDP backend", deleted)
	}
	golden.Assert(t, "2-draining"+".golden", n.dump())

	// An established TCP connection keeps it until the timeout.
	if gone, err := s.Drain(ctx); err != nil || len(gone) != 0 {
		t.Fatalf("drained with a live connection: %v %v", gone, err)
	}
	// A restart in the middle of the drain adopts everything without writing.
	s = n.syncer(t)
	before = n.writes()
	if r, err := s.SyncAll(ctx, []desired.Group{g}); err != nil || n.writes() != before {
		t.Fatalf("restart wrote %d times (%+v, %v)", n.writes()-before, r, err)
	}
	n.clock.Step(31 * time.Second)
	if gone, err := s.Drain(ctx); err != nil || len(gone) != 1 {
		t.Fatalf("drain timeout: %v %v", gone, err)
	}
	golden.Assert(t, "3-drained"+".golden", n.dump())

	// The VirtualService is deleted: its objects go, the foreign one stays.
	if _, err := s.RemoveGroup(ctx, g.Name); err != nil {
		t.Fatal(err)
	}
	if deleted := s.FlushNow(ctx); deleted != 1 {
		t.Fatalf("flushed %d flows of the deleted UDP service, want 1", deleted)
	}
	golden.Assert(t, "4-removed"+".golden", n.dump())
}

func TestDrainEndsWhenConnectionsEnd(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	if _, err := s.SyncAll(ctx, []desired.Group{grp("web", "10.96.0.10", tcp, "10.1.0.1:80", "10.1.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	k, rk := key("10.96.0.10", ipvs.TCP, 80), ipvs.RealKey{Address: netip.MustParseAddr("10.1.0.2"), Port: 80}
	if err := n.ipvs.SetConns(k, rk, 0, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncGroup(ctx, grp("web", "10.96.0.10", tcp, "10.1.0.1:80")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Drain(ctx); err != nil || !strings.Contains(n.ipvs.Dump(), "10.1.0.2:80 w=0") {
		t.Fatalf("inactive connections keep it draining: %v\n%s", err, n.ipvs.Dump())
	}
	if err := n.ipvs.SetConns(k, rk, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Drain(ctx); err != nil || strings.Contains(n.ipvs.Dump(), "10.1.0.2") {
		t.Fatalf("no connections left: deleted at once: %v\n%s", err, n.ipvs.Dump())
	}
	checkCounts(t, s)
	// It comes back while another one drains: back to weight 1, not re-added.
	if err := n.ipvs.SetConns(k, ipvs.RealKey{Address: netip.MustParseAddr("10.1.0.1"), Port: 80}, 3, 0); err != nil {
		t.Fatal(err)
	}
	_, _ = s.SyncGroup(ctx, grp("web", "10.96.0.10", tcp))
	adds := n.ipvs.Calls("AddRealServer")
	if _, err := s.SyncGroup(ctx, grp("web", "10.96.0.10", tcp, "10.1.0.1:80")); err != nil {
		t.Fatal(err)
	}
	if n.ipvs.Calls("AddRealServer") != adds || !strings.Contains(n.ipvs.Dump(), "10.1.0.1:80 w=1") || s.Draining(types.NamespacedName{Namespace: "ns", Name: "web"}) != 0 {
		t.Fatalf("undrain:\n%s", n.ipvs.Dump())
	}
}

func TestStaleOwnedDeletedOnlyByFullSync(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.1", tcp, "10.1.0.1:80"), grp("b", "10.96.0.2", tcp, "10.1.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	// Restart; "b" was deleted while the agent was down.
	s = n.syncer(t)
	if _, err := s.SyncGroup(ctx, grp("a", "10.96.0.1", tcp, "10.1.0.1:80")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.ipvs.Dump(), "10.96.0.2") {
		t.Fatal("a group sync deleted an adopted service before the caches were known complete")
	}
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.1", tcp, "10.1.0.1:80")}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.ipvs.Dump(), "10.96.0.2") || strings.Contains(n.vips.Dump(), "10.96.0.2") {
		t.Fatalf("the full sync keeps what nobody wants:\n%s%s", n.ipvs.Dump(), n.vips.Dump())
	}
}

func TestVerifyRepairsDrift(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	g := grp("web", "10.96.0.10", web, "10.1.0.1:8080", "10.1.0.2:8080")
	if _, err := s.SyncAll(ctx, []desired.Group{g}); err != nil {
		t.Fatal(err)
	}
	want := n.dump()
	// By hand: a real server deleted, another's weight changed, a virtual server deleted.
	k := key("10.96.0.10", ipvs.TCP, 80)
	_ = n.ipvs.DeleteRealServer(ctx, k, ipvs.RealKey{Address: netip.MustParseAddr("10.1.0.1"), Port: 8080})
	_ = n.ipvs.UpdateRealServer(ctx, k, ipvs.RealServer{Address: netip.MustParseAddr("10.1.0.2"), Port: 8080, Weight: 7})
	_ = n.ipvs.DeleteVirtualServer(ctx, key("10.96.0.10", ipvs.UDP, 53))
	repairs, err := s.Verify(ctx)
	// The virtual server and its two real servers, one real server, one weight.
	if err != nil || repairs != 5 {
		t.Fatalf("repairs %d (%v), want 5", repairs, err)
	}
	if got := n.dump(); got != want {
		t.Fatalf("after repair:\n%s\nwant:\n%s", got, want)
	}
	if repairs, err := s.Verify(ctx); err != nil || repairs != 0 {
		t.Fatalf("second verify repaired %d (%v)", repairs, err)
	}
}

// Verify lists the real servers of a share of the virtual servers at a
// time, and gets round to all of them; a virtual server's own attributes,
// and its presence, are checked every time.
func TestVerifyListsRealServersInShares(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	s.SetVerifyBatch(2)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	var groups []desired.Group
	var keys []ipvs.Key
	for i := range 5 {
		vip := fmt.Sprintf("10.96.0.%d", i+1)
		groups = append(groups, grp(fmt.Sprintf("vs%d", i), vip, tcp, fmt.Sprintf("10.1.0.%d:80", i+1)))
		keys = append(keys, key(vip, ipvs.TCP, 80))
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	want := n.dump()
	// By hand: every virtual server loses its real server.
	for i, k := range keys {
		_ = n.ipvs.DeleteRealServer(ctx, k, ipvs.RealKey{Address: netip.MustParseAddr(fmt.Sprintf("10.1.0.%d", i+1)), Port: 80})
	}
	lists := n.ipvs.Calls("ListRealServers")
	// Shares of two in key order, from where the last one stopped: the
	// third wraps round to the first, already repaired.
	for pass, wantRepairs := range []int{2, 2, 1} {
		repairs, err := s.Verify(ctx)
		if err != nil || repairs != wantRepairs {
			t.Fatalf("pass %d: repairs %d (%v), want %d", pass+1, repairs, err, wantRepairs)
		}
		if got := n.ipvs.Calls("ListRealServers") - lists; got != 2 {
			t.Fatalf("pass %d listed the real servers of %d virtual servers, want 2", pass+1, got)
		}
		lists = n.ipvs.Calls("ListRealServers")
		if got, want := strings.Count(n.dump(), "->"), min(2*(pass+1), 5); got != want {
			t.Fatalf("pass %d: %d real servers back, want %d:\n%s", pass+1, got, want, n.dump())
		}
	}
	if got := n.dump(); got != want {
		t.Fatalf("after three passes of two:\n%s\nwant:\n%s", got, want)
	}
	// Outside this pass's share: a scheduler changed by hand, and a
	// virtual server deleted by hand, come back at once, the latter with
	// its real servers.
	vs := groups[4].Services[0].VirtualServer
	vs.Scheduler = "sh"
	_ = n.ipvs.UpdateVirtualServer(ctx, vs)
	_ = n.ipvs.DeleteVirtualServer(ctx, keys[3])
	if repairs, err := s.Verify(ctx); err != nil || repairs != 3 {
		t.Fatalf("repairs %d (%v), want 3: a scheduler, a virtual server and its real server", repairs, err)
	}
	if got := n.dump(); got != want {
		t.Fatalf("after repair:\n%s\nwant:\n%s", got, want)
	}
}

func TestErrorsDoNotBlockOthersAndConverge(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	groups := []desired.Group{grp("a", "10.96.0.1", tcp, "10.1.0.1:80"), grp("b", "10.96.0.2", tcp, "10.1.0.2:80"), grp("c", "10.96.0.3", tcp, "10.1.0.3:80")}
	n.ipvs.FailNext("AddRealServer", errors.New("injected"))
	if _, err := s.SyncAll(ctx, groups); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("the error must surface: %v", err)
	}
	if c := strings.Count(n.ipvs.Dump(), "->"); c != 2 {
		t.Fatalf("the other groups must be programmed, have %d real servers:\n%s", c, n.ipvs.Dump())
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(n.ipvs.Dump(), "->"); c != 3 {
		t.Fatalf("the retry converges:\n%s", n.ipvs.Dump())
	}
	// Random faults on every operation: keep syncing until it converges.
	n.ipvs.FailRandomly(0.3, 7)
	groups = append(groups, grp("d", "10.96.0.4", web, "10.1.0.4:80", "10.1.0.5:80"))
	for i := 0; i < 50; i++ {
		_, _ = s.SyncAll(ctx, groups)
	}
	n.ipvs.Reset()
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	if repairs, err := s.Verify(ctx); err != nil || repairs != 0 {
		t.Fatalf("state after random faults differs from the kernel: %d repairs (%v)", repairs, err)
	}
}

func TestConflictWinnerTakesOverInPlace(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	if _, err := s.SyncGroup(ctx, grp("newer", "10.96.0.1", tcp, "10.1.0.1:80")); err != nil {
		t.Fatal(err)
	}
	before := n.ipvs.Calls("DeleteVirtualServer") + n.ipvs.Calls("AddVirtualServer")
	if _, err := s.SyncGroup(ctx, grp("older", "10.96.0.1", tcp, "10.1.0.9:80")); err != nil {
		t.Fatal(err)
	}
	// The loser's next sync no longer wants the key: it must not delete it.
	if _, err := s.SyncGroup(ctx, desired.Group{Name: types.NamespacedName{Namespace: "ns", Name: "newer"}}); err != nil {
		t.Fatal(err)
	}
	if after := n.ipvs.Calls("DeleteVirtualServer") + n.ipvs.Calls("AddVirtualServer"); after != before {
		t.Fatalf("the takeover deleted or re-added the virtual server")
	}
	if d := n.ipvs.Dump(); !strings.Contains(d, "10.1.0.9:80 w=1") || !strings.Contains(n.vips.Dump(), "10.96.0.1") {
		t.Fatalf("winner not programmed:\n%s", d)
	}
}

// TestOneEndpointChangeAmongThousand is the cost of a change: proportional
// to the change, not to the number of VirtualServices.
func TestOneEndpointChangeAmongThousand(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	var groups []desired.Group
	for i := 0; i < 1000; i++ {
		vip := netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)}).String()
		groups = append(groups, grp(fmt.Sprintf("vs-%d", i), vip, tcp, "10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"))
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	before := n.writes()
	reads := n.ipvs.Calls("ListVirtualServers") + n.ipvs.Calls("ListRealServers") + n.ipvs.Calls("GetVirtualServer")
	changed := groups[500]
	changed.Services[0].Reals = append(changed.Services[0].Reals, desired.Real{RealServer: ipvs.RealServer{Address: netip.MustParseAddr("10.1.0.4"), Port: 80, Weight: 1}})
	r, err := s.SyncGroup(ctx, changed)
	if err != nil {
		t.Fatal(err)
	}
	w := n.writes() - before
	rd := n.ipvs.Calls("ListVirtualServers") + n.ipvs.Calls("ListRealServers") + n.ipvs.Calls("GetVirtualServer") - reads
	t.Logf("one new endpoint among 1000 VirtualServices: %d kernel writes, %d kernel reads", w, rd)
	if w != 1 || r.Ops != 1 || rd != 0 {
		t.Fatalf("%d writes and %d reads for one new endpoint; want 1 and 0", w, rd)
	}
}

// A full sync when nothing changed neither writes nor reads the kernel, and
// a real-server change does not rewrite the shared VIPs and members.
func TestResyncNothingChangedTouchesNothing(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	var gs []desired.Group
	for i := 0; i < 50; i++ {
		vip := fmt.Sprintf("10.96.0.%d", i+1)
		gs = append(gs, grp(fmt.Sprintf("vs%d", i), vip, []ipvs.Key{key(vip, ipvs.TCP, 80)}, "10.1.0.1:8080", "10.1.0.2:8080"))
	}
	if _, err := s.SyncAll(ctx, gs); err != nil {
		t.Fatal(err)
	}
	memberWrites := func() int { return n.nf.Calls("SyncMembers") + n.nf.Calls("UpdateMembers") }
	membersBefore := memberWrites()
	w, lists := n.writes(), n.ipvs.Calls("ListVirtualServers")+n.ipvs.Calls("ListRealServers")+n.ipvs.Calls("GetVirtualServer")
	res, err := s.SyncAll(ctx, gs)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.writes() - w; got != 0 || res.Ops != 0 {
		t.Errorf("resync wrote %d times (%d ops), want 0", got, res.Ops)
	}
	if got := n.ipvs.Calls("ListVirtualServers") + n.ipvs.Calls("ListRealServers") + n.ipvs.Calls("GetVirtualServer") - lists; got != 0 {
		t.Errorf("resync read IPVS %d times, want 0", got)
	}
	g := grp("vs7", "10.96.0.8", []ipvs.Key{key("10.96.0.8", ipvs.TCP, 80)}, "10.1.0.1:8080", "10.1.0.3:8080")
	if _, err := s.SyncGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := memberWrites() - membersBefore; got != 0 {
		t.Errorf("members written %d times, want 0", got)
	}
	if _, err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if got := memberWrites() - membersBefore; got != 1 {
		t.Errorf("Verify wrote members %d times, want 1 (it compares with the kernel)", got)
	}
}

// exposure checks, after every write to the fake kernel, that a restricted
// VIP:port is never reachable (its virtual server present and its VIP on
// kubelvs0) unless the ipsets restrict it to sources within limit (no
// restriction is required while limit is nil), and that, while it is
// restricted, every range in admit is let through.
type exposure struct {
	t      *testing.T
	n      *node
	key    ipvs.Key
	limit  []netip.Prefix
	admit  []netip.Prefix
	seen   int // writes checked while the key was reachable
	checks int // writes checked
}

func (e *exposure) check(op string) {
	e.t.Helper()
	ctx := context.Background()
	e.checks++
	if _, err := e.n.ipvs.GetVirtualServer(ctx, e.key); err != nil {
		return
	}
	vips, _ := e.n.vips.ListAddresses(ctx)
	if !slices.Contains(vips, e.key.Address) {
		return
	}
	e.seen++
	k := ipset.Entry{IP: e.key.Address, Protocol: uint8(e.key.Protocol), Port: e.key.Port}
	isRestricted := slices.Contains(e.n.members().Restricted, k)
	if !isRestricted && e.limit != nil {
		e.t.Errorf("after %s, %s is reachable but not restricted (members %v)", op, e.key, e.n.members())
	}
	for _, a := range e.n.members().Allowed {
		if a.IP == k.IP && a.Protocol == k.Protocol && a.Port == k.Port && e.limit != nil && !slices.Contains(e.limit, a.Net) {
			e.t.Errorf("after %s, %s admits %s, outside %v", op, e.key, a.Net, e.limit)
		}
	}
	if !isRestricted {
		return
	}
	for _, r := range e.admit {
		a := k
		a.Net = r
		if !slices.Contains(e.n.members().Allowed, a) {
			e.t.Errorf("after %s, %s drops %s, which both the old and the new ranges admit (members %v)", op, e.key, r, e.n.members())
		}
	}
}

type watchedIPVS struct {
	*ipvstest.Fake
	after func(string)
}

func (w watchedIPVS) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	defer w.after("AddVirtualServer")
	return w.Fake.AddVirtualServer(ctx, vs)
}

func (w watchedIPVS) UpdateVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	defer w.after("UpdateVirtualServer")
	return w.Fake.UpdateVirtualServer(ctx, vs)
}

func (w watchedIPVS) DeleteVirtualServer(ctx context.Context, k ipvs.Key) error {
	defer w.after("DeleteVirtualServer")
	return w.Fake.DeleteVirtualServer(ctx, k)
}

func (w watchedIPVS) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	defer w.after("AddRealServer")
	return w.Fake.AddRealServer(ctx, k, rs)
}

type watchedNetfilter struct {
	*netfiltertest.Fake
	after func(string)
}

func (w watchedNetfilter) SyncMembers(ctx context.Context, m netfilter.Members) error {
	defer w.after("Members")
	return w.Fake.SyncMembers(ctx, m)
}

func (w watchedNetfilter) UpdateMembers(ctx context.Context, add, del netfilter.Members) error {
	defer w.after("Members")
	return w.Fake.UpdateMembers(ctx, add, del)
}

type watchedVIPs struct {
	*netiftest.Fake
	after func(string)
}

func (w watchedVIPs) SyncAddresses(ctx context.Context, vips []netip.Addr) error {
	defer w.after("SyncAddresses")
	return w.Fake.SyncAddresses(ctx, vips)
}

func (w watchedVIPs) UpdateAddresses(ctx context.Context, add, del []netip.Addr) error {
	defer w.after("UpdateAddresses")
	return w.Fake.UpdateAddresses(ctx, add, del)
}

// restricted is grp with sourceRanges on its one port.
func restricted(name, vip string, port ipvs.Key, ranges ...netip.Prefix) desired.Group {
	g := grp(name, vip, []ipvs.Key{port}, "10.1.0.1:8080")
	e := ipset.Entry{IP: netip.MustParseAddr(vip), Protocol: uint8(port.Protocol), Port: port.Port}
	g.Members.Restricted = []ipset.Entry{e}
	for _, r := range ranges {
		a := e
		a.Net = r
		g.Members.Allowed = append(g.Members.Allowed, a)
	}
	return g
}

// TestSourceRangesBeforeTraffic: a virtual server with sourceRanges is never
// reachable from outside them, not for the moment between its VIP coming up
// and its ipset members being written (on create, on a change of ranges, on
// delete and on a cold full sync), and an ipset failure writes none of it.
func TestSourceRangesBeforeTraffic(t *testing.T) {
	ctx := context.Background()
	a, b := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")
	k := key("10.96.0.9", ipvs.TCP, 80)
	start := func(t *testing.T) (*node, *exposure, *Syncer) {
		n := newNode()
		e := &exposure{t: t, n: n, key: k}
		own, err := ownership.NewSetRecords(ctx, n.sets)
		if err != nil {
			t.Fatal(err)
		}
		s := New(Kernel{
			IPVS: ownership.NewGuard(watchedIPVS{n.ipvs, e.check}, own), Owns: own.Owns,
			VIPs: watchedVIPs{n.vips, e.check}, Conntrack: n.ct,
			Netfilter: watchedNetfilter{n.nf, e.check},
		}, n.clock, nil)
		if err := s.Adopt(ctx); err != nil {
			t.Fatal(err)
		}
		return n, e, s
	}
	other := grp("open", "10.96.0.1", []ipvs.Key{key("10.96.0.1", ipvs.TCP, 80)}, "10.1.0.2:8080")

	t.Run("create-change-delete", func(t *testing.T) {
		_, e, s := start(t)
		if _, err := s.SyncAll(ctx, []desired.Group{other}); err != nil {
			t.Fatal(err)
		}
		e.limit = []netip.Prefix{a}
		if _, err := s.SyncGroup(ctx, restricted("r", "10.96.0.9", k, a)); err != nil {
			t.Fatal(err)
		}
		if e.seen == 0 {
			t.Fatal("the restricted virtual server never became reachable")
		}
		// While the ranges move from a to b, a source is admitted only if
		// one of them admits it.
		e.limit = []netip.Prefix{a, b}
		if _, err := s.SyncGroup(ctx, restricted("r", "10.96.0.9", k, b)); err != nil {
			t.Fatal(err)
		}
		e.limit = []netip.Prefix{b}
		e.check("the change")
		// Every write of the delete is checked: had the restriction been
		// lifted before the virtual server went, the check after that
		// write would have found it reachable by everyone.
		checks := e.checks
		if _, err := s.RemoveGroup(ctx, types.NamespacedName{Namespace: "ns", Name: "r"}); err != nil {
			t.Fatal(err)
		}
		if e.checks-checks < 3 {
			t.Fatalf("%d writes checked during the delete, want the virtual server, the VIPs and the members", e.checks-checks)
		}
		if len(e.n.members().Restricted) != 0 || len(e.n.members().Allowed) != 0 {
			t.Errorf("members left after delete: %v", e.n.members())
		}
	})

	t.Run("ranges-added-widened-lifted-never-drop-admitted-sources", func(t *testing.T) {
		n, e, s := start(t)
		open := grp("r", "10.96.0.9", []ipvs.Key{k}, "10.1.0.1:8080")
		if _, err := s.SyncAll(ctx, []desired.Group{other, open}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name         string
			g            desired.Group
			limit, admit []netip.Prefix
		}{
			// A serving virtual server gets ranges: what they admit is
			// never dropped on the way, nothing else is let through.
			{"added", restricted("r", "10.96.0.9", k, a), []netip.Prefix{a}, []netip.Prefix{a}},
			{"widened", restricted("r", "10.96.0.9", k, a, b), []netip.Prefix{a, b}, []netip.Prefix{a}},
			{"narrowed", restricted("r", "10.96.0.9", k, b), []netip.Prefix{a, b}, []netip.Prefix{b}},
			// The ranges go: b stays admitted until the restriction
			// is lifted.
			{"lifted", open, nil, []netip.Prefix{b}},
		}
		for _, st := range steps {
			e.limit, e.admit = st.limit, st.admit
			seen := e.seen
			if _, err := s.SyncGroup(ctx, st.g); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if e.seen == seen {
				t.Fatalf("%s: no write was checked", st.name)
			}
		}
		if m := n.members(); len(m.Restricted) != 0 || len(m.Allowed) != 0 {
			t.Errorf("members left after the ranges were lifted: %v", m)
		}
	})

	t.Run("cold-full-sync", func(t *testing.T) {
		_, e, s := start(t)
		e.limit = []netip.Prefix{a}
		if _, err := s.SyncAll(ctx, []desired.Group{other, restricted("r", "10.96.0.9", k, a)}); err != nil {
			t.Fatal(err)
		}
		if e.seen == 0 {
			t.Fatal("the restricted virtual server never became reachable")
		}
	})

	t.Run("ipset-failure-writes-nothing", func(t *testing.T) {
		n, _, s := start(t)
		if _, err := s.SyncAll(ctx, []desired.Group{other}); err != nil {
			t.Fatal(err)
		}
		n.nf.FailAlways("SyncMembers", errors.New("ipset: no buffer space"))
		n.nf.FailAlways("UpdateMembers", errors.New("ipset: no buffer space"))
		if _, err := s.SyncGroup(ctx, restricted("r", "10.96.0.9", k, a)); err == nil || !strings.Contains(err.Error(), "no buffer space") {
			t.Fatalf("SyncGroup with a failing ipset: err %v", err)
		}
		if _, err := n.ipvs.GetVirtualServer(ctx, k); err == nil {
			t.Error("the virtual server was added although its restriction could not be")
		}
		n.nf.Reset()
		if _, err := s.SyncGroup(ctx, restricted("r", "10.96.0.9", k, a)); err != nil {
			t.Fatal(err)
		}
		if _, err := n.ipvs.GetVirtualServer(ctx, k); err != nil {
			t.Errorf("after the ipsets recover: %v", err)
		}
	})
}

// listHook runs once, right after the first listing of key's real servers
// is taken: a change that lands between Verify's listing and its lock.
type listHook struct {
	*ipvstest.Fake
	key  ipvs.Key
	once func()
}

func (l *listHook) ListRealServers(ctx context.Context, k ipvs.Key) ([]ipvs.RealServer, error) {
	rs, err := l.Fake.ListRealServers(ctx, k)
	if f := l.once; k == l.key && f != nil {
		l.once = nil
		f()
	}
	return rs, err
}

// TestVerifyDuringAChange: Verify lists real servers without the syncer's
// lock, so a change can land in between; it must not take the stale
// listing for drift (re-adding what the change added, or deleting it).
func TestVerifyDuringAChange(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	k := key("10.96.0.9", ipvs.TCP, 80)
	hook := &listHook{Fake: n.ipvs, key: k}
	s := n.syncerOver(t, hook)
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.9", []ipvs.Key{k}, "10.1.0.1:8080")}); err != nil {
		t.Fatal(err)
	}
	var changeErr error
	hook.once = func() {
		_, changeErr = s.SyncGroup(ctx, grp("a", "10.96.0.9", []ipvs.Key{k}, "10.1.0.1:8080", "10.1.0.2:8080"))
	}
	repairs, err := s.Verify(ctx)
	if hook.once != nil {
		t.Fatal("the change never ran during Verify")
	}
	if err != nil || changeErr != nil || repairs != 0 {
		t.Fatalf("Verify with a change in between: %d repairs, err %v (change: %v); want 0 repairs, no error", repairs, err, changeErr)
	}
	if rs, _ := n.ipvs.ListRealServers(ctx, k); len(rs) != 2 {
		t.Fatalf("kernel holds %v, want the two real servers of the change", rs)
	}
}

// A change to another VirtualService while Verify lists a virtual server's
// real servers does not make Verify list them again under the lock: during
// a burst of changes, every listing was taken twice, the second time
// holding the lock every change waits for.
func TestVerifyListsOnceDespiteOtherChanges(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	k, other := key("10.96.0.9", ipvs.TCP, 80), key("10.96.0.8", ipvs.TCP, 80)
	hook := &listHook{Fake: n.ipvs, key: k}
	s := n.syncerOver(t, hook)
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.9", []ipvs.Key{k}, "10.1.0.1:8080"), grp("b", "10.96.0.8", []ipvs.Key{other}, "10.1.0.1:8080")}); err != nil {
		t.Fatal(err)
	}
	var changeErr error
	hook.once = func() {
		_, changeErr = s.SyncGroup(ctx, grp("b", "10.96.0.8", []ipvs.Key{other}, "10.1.0.1:8080", "10.1.0.2:8080"))
	}
	lists := n.ipvs.Calls("ListRealServers")
	repairs, err := s.Verify(ctx)
	if hook.once != nil || err != nil || changeErr != nil || repairs != 0 {
		t.Fatalf("Verify with another change in between: ran %t, %d repairs, err %v (change: %v)", hook.once == nil, repairs, err, changeErr)
	}
	if got := n.ipvs.Calls("ListRealServers") - lists; got != 2 {
		t.Fatalf("Verify listed real servers %d times for two virtual servers, want 2", got)
	}
}

// The periodic resync leaves a VirtualService new to the kernel to its own
// sync, so that it never programs a burst of creates under the lock, and
// still syncs the rest: a changed group, and a new group that takes over a
// virtual server the kernel has (in place, as SyncAll would). Before the
// first full sync it defers nothing.
func TestResyncDefersOnlyWhatIsNewToTheKernel(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	a := grp("a", "10.96.0.1", tcp, "10.1.0.1:80")
	b := grp("b", "10.96.0.2", tcp, "10.1.0.2:80")
	first, err := s.Resync(ctx, []desired.Group{a, b}, s.ReadToken())
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Deferred) != 0 {
		t.Fatalf("first full sync deferred %v", first.Deferred)
	}
	// c is new; d is new and wins b's virtual server; a changed.
	c := grp("c", "10.96.0.3", tcp, "10.1.0.3:80")
	d := grp("d", "10.96.0.2", tcp, "10.1.0.4:80")
	a2 := grp("a", "10.96.0.1", tcp, "10.1.0.1:80", "10.1.0.5:80")
	churn := n.ipvs.Calls("DeleteVirtualServer") + n.ipvs.Calls("AddVirtualServer")
	res, err := s.Resync(ctx, []desired.Group{a2, {Name: b.Name}, c, d}, s.ReadToken())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Deferred, []types.NamespacedName{c.Name}) {
		t.Fatalf("deferred %v, want only %v", res.Deferred, c.Name)
	}
	if got := n.ipvs.Calls("DeleteVirtualServer") + n.ipvs.Calls("AddVirtualServer") - churn; got != 0 {
		t.Fatalf("%d virtual servers deleted or added; d takes b's over in place, c waits", got)
	}
	// b's real server drains in d's virtual server, as after a takeover
	// by SyncGroup.
	ref := want(t, a, b)
	rs := ref.syncer(t)
	for _, g := range []desired.Group{a2, d, {Name: b.Name}} {
		if _, err := rs.SyncGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(ref.ipvs.Dump(), "10.1.0.2:80 w=0") {
		t.Fatalf("reference: b's real server not draining:\n%s", ref.ipvs.Dump())
	}
	sameKernel(t, "after the resync", n, ref)
	if _, err := s.SyncGroup(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.SyncGroup(ctx, c); err != nil {
		t.Fatal(err)
	}
	sameKernel(t, "after c's own sync", n, ref)
	// The next resync has nothing left to defer.
	if res, err := s.Resync(ctx, []desired.Group{a2, c, d}, s.ReadToken()); err != nil || len(res.Deferred) != 0 || res.Ops != 0 {
		t.Fatalf("resync after: %+v, %v", res, err)
	}
}

// A resync reads every VirtualService before it takes the lock; their own
// syncs go on meanwhile. What one of them applied after the resync read
// (a changed endpoint, a create, a delete) is not undone by the resync's
// older view: a removed endpoint must not take traffic again. A resync
// that read later applies as usual.
func TestResyncDoesNotUndoNewerSyncs(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	a := grp("a", "10.96.0.1", tcp, "10.1.0.1:80")
	b := grp("b", "10.96.0.2", tcp, "10.1.0.2:80")
	if _, err := s.SyncAll(ctx, []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	// The resync reads: a and b as they were, no c.
	read := s.ReadToken()
	// Then their own syncs: a's endpoint replaced, b deleted, c created.
	a2 := grp("a", "10.96.0.1", tcp, "10.1.0.9:80")
	a2.Read = s.ReadToken()
	c := grp("c", "10.96.0.3", tcp, "10.1.0.3:80")
	c.Read = s.ReadToken()
	for _, g := range []desired.Group{a2, {Name: b.Name, Read: s.ReadToken()}, c} {
		if _, err := s.SyncGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	after := n.dump()
	if _, err := s.Resync(ctx, []desired.Group{a, b}, read); err != nil {
		t.Fatal(err)
	}
	if got := n.dump(); got != after {
		t.Fatalf("the resync undid newer syncs:\n%s\nwant\n%s", got, after)
	}
	// A sync read before one already applied changes nothing either.
	if _, err := s.SyncGroup(ctx, desired.Group{Name: c.Name, Read: read}); err != nil {
		t.Fatal(err)
	}
	if got := n.dump(); got != after {
		t.Fatalf("an older sync removed c:\n%s\nwant\n%s", got, after)
	}
	// A resync that read after them all applies what it read.
	a3 := grp("a", "10.96.0.1", tcp, "10.1.0.8:80")
	if _, err := s.Resync(ctx, []desired.Group{a3, c}, s.ReadToken()); err != nil {
		t.Fatal(err)
	}
	if d := n.ipvs.Dump(); !strings.Contains(d, "10.1.0.8:80 w=1") || !strings.Contains(d, "10.1.0.9:80 w=0") || !strings.Contains(d, "10.96.0.3:80") {
		t.Fatalf("the later resync did not apply:\n%s", d)
	}
	// A group's own sync read before a resync that applied the group
	// (it waited for the lock meanwhile) changes nothing either, nor does
	// one that would re-create a group the resync removed (c: not in it).
	older := grp("a", "10.96.0.1", tcp, "10.1.0.7:80")
	older.Read = s.ReadToken()
	olderC := c
	olderC.Read = older.Read
	if _, err := s.Resync(ctx, []desired.Group{a3}, s.ReadToken()); err != nil {
		t.Fatal(err)
	}
	after = n.dump()
	for _, g := range []desired.Group{older, olderC} {
		if _, err := s.SyncGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		if got := n.dump(); got != after {
			t.Fatalf("a sync read before the resync applied %s over it:\n%s\nwant\n%s", g.Name, got, after)
		}
	}
}

// orderedIPVS logs the keys of the virtual servers written to, in order,
// and calls onAdd after each real server add.
type orderedIPVS struct {
	*ipvstest.Fake
	mu    sync.Mutex
	log   []string
	onAdd func(ipvs.Key)
}

func (o *orderedIPVS) record(op string, k ipvs.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.log = append(o.log, op+" "+k.String())
}

func (o *orderedIPVS) AddVirtualServer(ctx context.Context, vs ipvs.VirtualServer) error {
	o.record("add", vs.Key())
	return o.Fake.AddVirtualServer(ctx, vs)
}

func (o *orderedIPVS) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	o.record("add-real", k)
	err := o.Fake.AddRealServer(ctx, k, rs)
	if f := o.onAdd; f != nil {
		f(k)
	}
	return err
}

// A resync lets a sync that waits for the lock go between two groups,
// rather than after all of them; and what that sync applied stays: the
// resync, which read before it, does not put back what it replaced.
// (A create that comes during a resync is TestCreateAddsWithoutTheLock.)
func TestResyncLetsWaitingSyncsGoFirst(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	o := &orderedIPVS{Fake: n.ipvs}
	s := n.syncerOver(t, o)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	c := grp("c", "10.96.0.3", tcp, "10.1.0.3:80")
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.1", tcp, "10.1.0.1:80"), grp("b", "10.96.0.2", tcp, "10.1.0.2:80"), c}); err != nil {
		t.Fatal(err)
	}
	o.log = nil
	read := s.ReadToken()
	a2 := grp("a", "10.96.0.1", tcp, "10.1.0.1:80", "10.1.0.9:80")
	b2 := grp("b", "10.96.0.2", tcp, "10.1.0.2:80", "10.1.0.8:80")
	ka := key("10.96.0.1", ipvs.TCP, 80)
	done := make(chan error, 1)
	o.onAdd = func(k ipvs.Key) {
		if k != ka {
			return
		}
		o.onAdd = nil
		// While the resync holds the lock for a: a change to c comes.
		go func() {
			c2 := grp("c", "10.96.0.3", tcp, "10.1.0.3:80", "10.1.0.7:80")
			c2.Read = s.ReadToken()
			res, err := s.SyncGroup(ctx, c2)
			if err == nil && res.Behind != "a resync" {
				err = fmt.Errorf("the change says it waited behind %q, want the resync", res.Behind)
			}
			done <- err
		}()
		for s.waiting.Load() == 0 {
			runtime.Gosched()
		}
	}
	if _, err := s.Resync(ctx, []desired.Group{a2, b2, c}, read); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{"add-real TCP/10.96.0.1:80", "add-real TCP/10.96.0.3:80", "add-real TCP/10.96.0.2:80"}
	if !slices.Equal(o.log, want) {
		t.Fatalf("writes in order %q, want %q (the waiting change between a and b)", o.log, want)
	}
	if d := n.ipvs.Dump(); !strings.Contains(d, "10.1.0.7:80") || !strings.Contains(d, "10.1.0.8:80") {
		t.Fatalf("the change made during the resync, or b's change, is missing:\n%s", d)
	}
}

// Background work (the resync's build, Verify) gives way to a sync in the
// syncer: GiveWay returns only once no SyncGroup holds or waits for the
// lock (here with no time limit), and at once when none does.
func TestGiveWayWaitsForSyncs(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s, b, release := n.gatedSyncer(t, key("10.96.0.1", ipvs.TCP, 80))
	s.giveWayMax = time.Hour
	s.GiveWay(ctx) // nothing in the syncer: returns
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	synced := make(chan error, 1)
	go func() {
		_, err := s.SyncGroup(ctx, grp("a", "10.96.0.1", tcp, "10.1.0.1:80"))
		synced <- err
	}()
	<-b.entered // the sync is in a kernel call
	gaveWay := make(chan struct{})
	go func() {
		s.GiveWay(ctx)
		close(gaveWay)
	}()
	runtime.Gosched()
	select {
	case <-gaveWay:
		t.Fatal("GiveWay returned while a sync was in the syncer")
	default:
	}
	release()
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	<-gaveWay
}

// gatedAdds holds the real server adds to one virtual server until
// release is closed.
type gatedAdds struct {
	*ipvstest.Fake
	key     ipvs.Key
	entered chan struct{}
	release chan struct{}
}

func (b *gatedAdds) AddRealServer(ctx context.Context, k ipvs.Key, rs ipvs.RealServer) error {
	if k == b.key {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Fake.AddRealServer(ctx, k, rs)
}

// gatedSyncer starts a syncer on the node whose real server adds to k wait
// at the gate until release (also called at cleanup, before the
// syncer's count, which takes the lock).
func (n *node) gatedSyncer(t *testing.T, k ipvs.Key) (*Syncer, *gatedAdds, func()) {
	t.Helper()
	gate := &gatedAdds{Fake: n.ipvs, key: k, entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := n.syncerOver(t, gate)
	release := sync.OnceFunc(func() { close(gate.release) })
	t.Cleanup(release)
	return s, gate, release
}

// busyCreating keeps s busy for background work: GiveWay stops waiting
// (busy is busy), and a create of g, whose add gate holds, is in its
// kernel calls when it returns; done gives the create's error once the
// gate is released.
func busyCreating(s *Syncer, gate *gatedAdds, g desired.Group) (done <-chan error) {
	s.giveWayMax = 0
	errc := make(chan error, 1)
	go func() {
		_, err := s.SyncGroup(context.Background(), g)
		errc <- err
	}()
	<-gate.entered
	return errc
}

// A create adds its virtual and real servers without the syncer's lock:
// while its kernel calls wait, a change to another VirtualService and a
// resync go through, and neither lifts the create's restrictions or
// touches what it adds; its VIP comes up only once its virtual server is
// there; then the syncer holds exactly the three groups, as a merge of
// them would.
func TestCreateAddsWithoutTheLock(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	kn := key("10.96.0.9", ipvs.TCP, 80)
	s, gate, release := n.gatedSyncer(t, kn)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	a, b := grp("a", "10.96.0.1", tcp, "10.1.0.1:80"), grp("b", "10.96.0.2", tcp, "10.1.0.2:80")
	if _, err := s.SyncAll(ctx, []desired.Group{a, b}); err != nil {
		t.Fatal(err)
	}
	resyncRead := s.ReadToken() // a resync that read before the create
	created := restricted("new", "10.96.0.9", kn, netip.MustParsePrefix("192.0.2.0/24"))
	created.Read = s.ReadToken()
	done := make(chan error, 1)
	go func() {
		_, err := s.SyncGroup(ctx, created)
		done <- err
	}()
	<-gate.entered // the create is in its kernel calls
	if !s.mu.TryLock() {
		t.Fatal("a create holds the syncer's lock across its kernel calls")
	}
	s.mu.Unlock()
	restrict := ipset.Entry{IP: kn.Address, Protocol: uint8(kn.Protocol), Port: kn.Port}
	vips, _ := n.vips.ListAddresses(ctx)
	if !slices.Contains(n.members().Restricted, restrict) || slices.Contains(vips, kn.Address) {
		t.Fatalf("during the create: restricted %v, VIPs %v; want %s restricted and its VIP not yet up", n.members().Restricted, vips, kn)
	}
	// A change that writes the members, and a resync that knows nothing
	// of the create.
	a2 := withAllowList(grp("a", "10.96.0.1", tcp, "10.1.0.1:80", "10.1.0.5:80"), "198.51.100.0/24")
	a2.Read = s.ReadToken()
	if _, err := s.SyncGroup(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resync(ctx, []desired.Group{a, b}, resyncRead); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(n.members().Restricted, restrict) {
		t.Fatalf("a sync during the create lifted its restriction: %v", n.members().Restricted)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkShared(t, s, "after the create")
	sameKernel(t, "after the create", n, want(t, a2, b, created))
}

// A delete that fails after the kernel deleted the virtual server (here
// the release of its ownership record) leaves the syncer knowing it is
// gone: a later sync that wants it again adds it back.
func TestDeleteFailedAfterTheKernelDeleted(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	s := n.syncer(t)
	a := grp("a", "10.96.0.1", web, "10.1.0.1:80")
	if _, err := s.SyncAll(ctx, []desired.Group{a}); err != nil {
		t.Fatal(err)
	}
	n.sets.FailNext("DelEntry", errors.New("ipset busy"))
	_, _ = s.RemoveGroup(ctx, a.Name)
	if _, err := s.SyncGroup(ctx, a); err != nil {
		t.Fatal(err)
	}
	sameKernel(t, "synced again", n, want(t, a))
}

// While syncs follow one another (GiveWay runs out), Verify leaves its
// share of real server listings to the next pass, which starts where this
// one stopped; once the syncer is quiet, it lists them.
func TestVerifyLeavesListingsWhileTheSyncerIsBusy(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	kn := key("10.96.0.9", ipvs.TCP, 80)
	s, gate, release := n.gatedSyncer(t, kn)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	if _, err := s.SyncAll(ctx, []desired.Group{grp("a", "10.96.0.1", tcp, "10.1.0.1:80"), grp("b", "10.96.0.2", tcp, "10.1.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	done := busyCreating(s, gate, grp("new", "10.96.0.9", tcp, "10.1.0.9:80"))
	lists := n.ipvs.Calls("ListRealServers")
	if _, err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.ipvs.Calls("ListRealServers") - lists; got != 0 {
		t.Fatalf("Verify listed real servers %d times while the syncer was busy, want none", got)
	}
	if want := key("10.96.0.1", ipvs.TCP, 80); s.verifyNext != want {
		t.Fatalf("the next Verify starts at %s, want %s, where this one left its share", s.verifyNext, want)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lists = n.ipvs.Calls("ListRealServers")
	if _, err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.ipvs.Calls("ListRealServers") - lists; got != 3 {
		t.Fatalf("a quiet Verify listed real servers %d times, want 3 (every virtual server)", got)
	}
}

// While it defers its listings, Verify still compares every virtual
// server's attributes with the dump and repairs them, but a chunk at a
// time under one hold of the lock, giving way once per chunk: at 10,000
// virtual servers during a burst, giving way before each took minutes.
func TestVerifyGivesWayPerChunkWhileBusy(t *testing.T) {
	ctx := context.Background()
	n := newNode()
	kn := key("10.97.255.255", ipvs.TCP, 80)
	s, gate, release := n.gatedSyncer(t, kn)
	tcp := []ipvs.Key{{Protocol: ipvs.TCP, Port: 80}}
	const count = 2*verifyChunk + 88
	groups := make([]desired.Group, 0, count)
	for i := range count {
		groups = append(groups, grp(fmt.Sprintf("g%d", i), fmt.Sprintf("10.97.%d.%d", i/250, i%250+1), tcp, "10.1.0.1:80"))
	}
	if _, err := s.SyncAll(ctx, groups); err != nil {
		t.Fatal(err)
	}
	// Drift in the last chunk: a scheduler changed by hand.
	last := groups[count-1].Services[0].VirtualServer
	changed := last
	changed.Scheduler = "wlc"
	if err := n.ipvs.UpdateVirtualServer(ctx, changed); err != nil {
		t.Fatal(err)
	}
	done := busyCreating(s, gate, grp("new", "10.97.255.255", tcp, "10.1.0.9:80"))
	gave, lists := testutil.ToFloat64(s.metrics.gaveWay), n.ipvs.Calls("ListRealServers")
	repairs, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := testutil.ToFloat64(s.metrics.gaveWay)-gave, float64((count+verifyChunk-1)/verifyChunk); got != want {
		t.Fatalf("Verify gave way %v times over %d virtual servers while busy, want %v (once per chunk of %d)", got, count, want, verifyChunk)
	}
	if got := n.ipvs.Calls("ListRealServers") - lists; got != 0 {
		t.Fatalf("Verify listed real servers %d times while the syncer was busy, want none", got)
	}
	if cur, err := n.ipvs.GetVirtualServer(ctx, last.Key()); err != nil || cur.Scheduler != "rr" || repairs != 1 {
		t.Fatalf("after Verify the drifted virtual server is %+v (%v) with %d repairs, want scheduler rr restored by 1 repair", cur, err, repairs)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
